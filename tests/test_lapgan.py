"""LAPGAN: the pyramid is exact, every level has the right shapes, levels train together or alone."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from torch.testing import assert_close

from gansuite.config.build import build
from gansuite.config.keys import CONF_DIR
from gansuite.errors import ConfigError
from gansuite.models.lapgan import save_levels
from gansuite.nets.laplacian import (
    LaplacianDiscriminator,
    LaplacianGenerator,
    downsample,
    laplacian_pyramid,
    reconstruct,
    upsample,
)
from gansuite.training.run import train

from .conftest import make_cfg, trains

TINY_LAPGAN = ["model=lapgan", "model.generator.coarse_width=16", "model.generator.width=4",
               "model.discriminator.coarse_width=16", "model.discriminator.width=4", "data.batch_size=8",
               "callbacks=none"]


def _tiny_nets(shape=(3, 32, 32), levels=3):
    torch.manual_seed(0)
    g = LaplacianGenerator(shape=shape, levels=levels, latent_dim=8, coarse_width=16, width=4)
    d = LaplacianDiscriminator(shape=shape, levels=levels, coarse_width=16, width=4)
    return g, d


def _noise(shape, levels, n=2, latent_dim=8):
    size = shape[1]
    return tuple([torch.rand(n, 1, size // 2**k, size // 2**k) * 2 - 1 for k in range(levels - 1)]
                 + [torch.rand(n, latent_dim) * 2 - 1])


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 64, 64)])
def test_pyramid_reconstructs_the_image_from_its_bands(shape):
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    levels = 4 if shape[1] == 64 else 3
    pyramid = laplacian_pyramid(x, levels)
    assert [p.shape[-1] for p in pyramid] == [shape[1] // 2**k for k in range(levels)]
    assert_close(reconstruct(pyramid), x, rtol=0, atol=1e-6)
    # The bands of random images are far from zero: the check above is not passing trivially.
    assert pyramid[0].abs().max() > 0.1


def test_bands_of_a_constant_image_are_zero_and_its_coarsest_level_is_the_constant():
    x = torch.full((2, 3, 32, 32), 0.3)
    *bands, coarsest = laplacian_pyramid(x, 3)
    for band in bands:
        assert_close(band, torch.zeros_like(band), rtol=0, atol=1e-6)
    assert_close(coarsest, torch.full((2, 3, 8, 8), 0.3), rtol=0, atol=1e-6)


def test_downsample_averages_2x2_blocks_and_upsample_doubles():
    x = torch.zeros(2, 3, 32, 32)
    x[..., ::2, ::2], x[..., 1::2, 1::2] = 1.0, 1.0  # a checkerboard: each 2x2 block averages to 0.5
    down = downsample(x)
    assert down.shape == (2, 3, 16, 16)
    assert_close(down, torch.full_like(down, 0.5), rtol=0, atol=1e-7)
    assert upsample(down).shape == (2, 3, 32, 32)
    assert downsample(torch.zeros(1, 1, 28, 28)).shape == (1, 1, 14, 14)


@pytest.mark.parametrize(("shape", "sizes"), [((3, 32, 32), [32, 16, 8]), ((1, 28, 28), [28, 14, 7])])
def test_each_level_generates_its_own_size_and_each_discriminator_scores_it(shape, sizes):
    g, d = _tiny_nets(shape)
    z = _noise(shape, 3)
    coarse = g.level(2, z[2])
    assert coarse.shape == (2, shape[0], sizes[2], sizes[2])
    assert coarse.abs().max() <= 1  # tanh: the coarsest image lives in the data's range
    for k in (1, 0):
        low = torch.zeros(2, shape[0], sizes[k], sizes[k])
        band = g.level(k, z[k], low)
        assert band.shape == low.shape
        assert d(band, low, level=k).shape == (2,)
    assert d(coarse, level=2).shape == (2,)


def test_sampling_runs_coarse_to_fine_on_the_generated_coarser_image():
    g, _ = _tiny_nets()
    g.eval()
    z = _noise((3, 32, 32), 3)
    images = g.forward_levels(z)
    assert [tuple(x.shape) for x in images] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    assert_close(g(z), images[0])
    for k in (1, 0):
        low = upsample(images[k + 1])
        assert_close(images[k] - low, g.level(k, z[k], low), rtol=0, atol=1e-5)
    # The noise reaches every level: other noise at one level changes that level and the finer ones.
    z2 = (z[0], torch.rand_like(z[1]), z[2])
    other = g.forward_levels(z2)
    assert_close(other[2], images[2])
    assert not torch.allclose(other[1], images[1]) and not torch.allclose(other[0], images[0])


def test_one_training_step_logs_a_finite_loss_per_level_that_sum_to_the_total(tmp_path):
    result = train(make_cfg(tmp_path, *TINY_LAPGAN, "trainer.max_steps=1"))
    metrics = result["trainer"].callback_metrics
    assert result["step"] == 1
    for net in ("d", "g"):
        per_level = [metrics[f"train/{net}_loss_l{k}"] for k in range(3)]
        assert all(torch.isfinite(v) for v in per_level)
        assert_close(sum(per_level), metrics[f"train/{net}_loss"], rtol=1e-5, atol=1e-6)


def _states(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, after) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("level", [0, 2])
def test_training_one_level_changes_only_that_levels_weights(tmp_path, level):
    cfg = make_cfg(tmp_path, *TINY_LAPGAN, f"model.module.train_levels=[{level}]", "trainer.max_steps=2")
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # train() builds the same initial weights
    before = _states(build(cfg)[1])
    after = _states(train(cfg)["module"])
    changed = _changed(before, after)
    owners = {f"{net}.nets.{level}." for net in ("generator", "discriminator", "generator_ema")}
    assert changed and all(any(k.startswith(o) for o in owners) for k in changed), sorted(changed)
    for net in ("generator", "discriminator"):
        assert any(k.startswith(f"{net}.nets.{level}.") for k in changed), net


def test_one_level_at_a_time_by_resuming_with_the_next_level(tmp_path):
    first = train(make_cfg(tmp_path / "a", *TINY_LAPGAN, "model.module.train_levels=2", "trainer.max_steps=2"))
    trained = _states(first["module"])
    second = train(make_cfg(tmp_path / "b", *TINY_LAPGAN, "model.module.train_levels=1", "trainer.max_steps=4",
                            f"resume={tmp_path / 'a'}"))
    assert second["step"] == 4
    after = _states(second["module"])
    for k in trained:
        if k.startswith(("generator.nets.2.", "discriminator.nets.2.")):
            assert torch.equal(after[k], trained[k]), k  # level 2 kept what the first run learnt
    assert any(not torch.equal(after[k], trained[k]) for k in trained if k.startswith("generator.nets.1."))


def test_save_levels_writes_one_png_with_a_column_per_level(tmp_path):
    cfg = make_cfg(tmp_path, *TINY_LAPGAN)
    _, module = build(cfg)
    inputs = module.make_inputs(3, torch.Generator().manual_seed(0))
    path = tmp_path / "levels.png"
    save_levels(module, inputs, path)
    with Image.open(path) as image:  # save_image pads every 28 px tile by 2 px
        assert image.size == (3 * 30 + 2, 3 * 30 + 2)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".png" and p.is_file()] == []


@pytest.mark.parametrize(("override", "key"), [
    ("model.levels=4", "model.levels"),              # 28 px does not halve three times
    ("model.module.train_levels=3", "model.module.train_levels"),
    ("model.module.train_levels=[]", "model.module.train_levels"),
    ("model.discriminator.d_input=concat", "model.discriminator.d_input"),
])
def test_bad_options_are_one_sentence_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(make_cfg(tmp_path, *TINY_LAPGAN, override))


def test_stacked_discriminator_input_trains(tmp_path):
    trains(tmp_path, *TINY_LAPGAN, "model.discriminator.d_input=stack", "callbacks=default", steps=1)


@pytest.mark.parametrize("preset", ["lapgan_mnist", "lapgan_cifar10"])
def test_presets_compose_and_build_their_networks(preset):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={preset}"])
    shape = (1, 28, 28) if preset == "lapgan_mnist" else (3, 32, 32)
    g = instantiate(cfg.model.generator, shape=shape)
    d = instantiate(cfg.model.discriminator, shape=shape)
    assert len(g.nets) == len(d.nets) == 3
    assert cfg.callbacks.lapgan_levels._target_ == "gansuite.models.lapgan.LevelGrid"


def test_the_level_grid_is_saved_at_each_period_and_at_the_end(tmp_path):
    train(make_cfg(tmp_path, "experiment=lapgan_mnist", "model=lapgan", "trainer.max_steps=3",
                   "callbacks.lapgan_levels.every_n_steps=2", "callbacks.lapgan_levels.num_samples=4"))
    assert sorted(p.name for p in (tmp_path / "samples").glob("levels_*.png")) == [
        "levels_step_000002.png", "levels_step_000003.png"]
    with Image.open(tmp_path / "samples" / "levels_step_000003.png") as picture:
        # 4 rows (samples) by 3 columns (levels), 28 px cells padded by 2 px.
        assert picture.size == (3 * 30 + 2, 4 * 30 + 2)
