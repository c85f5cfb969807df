"""The 2D mode-collapse metrics on hand-made samples with known answers."""

import math

import pytest
import torch
from torch.testing import assert_close

from gansuite.data.points import grid_means, ring_means
from gansuite.metrics.modes import mode_metrics


def test_points_exactly_at_five_of_eight_ring_modes():
    means = ring_means()
    samples = means[[0, 1, 2, 3, 4]].repeat(500, 1)  # 2,500 samples, 500 on each of 5 modes
    stats = mode_metrics(samples, means, std=0.01)
    assert stats.modes == 5 and stats.high_quality == 1.0
    assert_close(torch.tensor(stats.reverse_kl), torch.tensor(math.log(8 / 5)), rtol=0, atol=1e-12)
    assert stats.as_log() == {"val/modes_2500": 5.0, "val/high_quality_2500": 1.0,
                              "val/reverse_kl_2500": stats.reverse_kl}


def test_uniform_over_all_modes_has_zero_reverse_kl():
    means = grid_means()
    stats = mode_metrics(means.repeat(100, 1), means, std=0.05)
    assert stats.modes == 25 and stats.num_modes == 25
    assert_close(torch.tensor(stats.reverse_kl), torch.tensor(0.0), rtol=0, atol=1e-12)


def test_three_sigma_boundary_and_far_samples():
    means, std = ring_means(), 0.01
    inside = means[0] + torch.tensor([2.9 * std, 0.0])
    outside = means[0] + torch.tensor([0.0, 3.1 * std])
    between = (means[0] + means[1]) / 2  # far from every mode: low quality, captures nothing
    stats = mode_metrics(torch.stack([inside, outside, between, means[2]]), means, std)
    assert stats.high_quality == 0.5
    assert stats.modes == 2
    # q = (1/2, 1/2) over 2 of 8 modes: KL = log(8 / 2)
    assert_close(torch.tensor(stats.reverse_kl), torch.tensor(math.log(4.0)), rtol=0, atol=1e-12)


def test_collapse_to_one_mode_and_no_good_samples():
    means = ring_means()
    assert mode_metrics(means[[3]].repeat(10, 1), means, 0.01).reverse_kl == pytest.approx(math.log(8))
    stats = mode_metrics(torch.zeros(10, 2), means, 0.01)
    assert stats.modes == 0 and stats.high_quality == 0.0 and math.isinf(stats.reverse_kl)
