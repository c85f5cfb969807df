"""Captioned digits: the attributes measured on hand-drawn images, tertile levels, captions and their tokens,
the held-out phrasings kept out of training."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from gansuite.data.captions import (
    HELDOUT_TEMPLATES,
    TEMPLATES,
    UNK,
    CaptionedDigits,
    Tertiles,
    caption,
    check_caption,
    encode,
    measure,
    mentions,
    mismatch,
    vocabulary,
    words,
)
from gansuite.errors import ConfigError


def _canvas() -> torch.Tensor:
    return torch.zeros(1, 28, 28, dtype=torch.uint8)


def test_a_one_pixel_vertical_line_is_one_pixel_thick_upright_and_as_big_as_its_box():
    x = _canvas()
    x[0, 5:15, 10] = 255  # 10 rows, 1 column
    thickness, slant, size = measure(x)[0].tolist()
    assert_close(thickness, 1.0)  # area 10 over a skeleton of the same 10 pixels
    assert_close(slant, 0.0)
    assert_close(size, 10.0)  # 10 x 1 box


def test_a_diagonal_leaning_right_has_slant_one():
    x = _canvas()
    for r in range(8):
        x[0, 10 + r, 20 - r] = 255  # one column left per row down: the top leans right
    _, slant, size = measure(x)[0].tolist()
    assert_close(slant, 1.0, rtol=0, atol=1e-6)  # -mu_rc / mu_rr = var(r) / var(r)
    assert_close(size, 64.0)  # 8 x 8 box


def test_a_three_pixel_bar_is_about_three_thick():
    x = _canvas()
    x[0, 5:15, 10:13] = 200
    thickness = measure(x)[0, 0].item()
    # area 30 over a skeleton of 8 to 10 pixels (the medial line, perhaps without its end pixels)
    assert 3.0 <= thickness <= 3.75
    assert_close(measure(_canvas())[0], torch.zeros(3))  # a blank image measures zeros


def test_tertile_levels_are_cut_per_class():
    values = torch.tensor([[1.0], [2.0], [3.0], [10.0], [20.0], [30.0]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    tertiles = Tertiles.fit(values, y, num_classes=2)
    assert tertiles.levels(values, y).flatten().tolist() == [0, 1, 2, 0, 1, 2]
    # 3.0 is large for class 0 and small for class 1
    assert tertiles.levels(torch.tensor([[3.0], [3.0]]), torch.tensor([0, 1])).flatten().tolist() == [2, 0]


def test_captions_name_the_digit_and_the_levels_their_template_asks_for():
    assert caption(TEMPLATES[0], 7, (2, 2, 0)) == "a thick slanted seven"
    assert caption(TEMPLATES[1], 3, (0, 1, 0)) == "three , written small with a thin pen"
    assert caption(TEMPLATES[4], 8, (0, 1, 0)) == "an upright eight"
    assert caption(TEMPLATES[4], 1, (0, 2, 0)) == "a slanted one"
    assert caption(TEMPLATES[3], 8, (0, 0, 0)) == "a small eight drawn with thin strokes"
    assert mentions(TEMPLATES[0]) == (True, True, False)
    assert words("Seven, written SMALL: thin") == ["seven", ",", "written", "small", ":", "thin"]


def test_tokens_pad_with_zero_and_unknown_words_are_unk():
    vocab = vocabulary()
    ids = encode(["a thick seven", "a fluffy seven"], vocab, max_words=4)
    assert ids[0].tolist() == [vocab["a"], vocab["thick"], vocab["seven"], 0]
    assert ids[1].tolist() == [vocab["a"], UNK, vocab["seven"], 0]
    assert "an" in vocab
    with pytest.raises(ConfigError, match="--text"):
        check_caption("purple elephants", vocab)


def test_the_held_out_phrasings_share_no_filler_word_sequence_with_training():
    training = {" ".join(words(t.format(digit="D", thickness="T", slant="S", size="Z"))) for t in TEMPLATES}
    for t in HELDOUT_TEMPLATES:
        assert " ".join(words(t.format(digit="D", thickness="T", slant="S", size="Z"))) not in training
    vocab = vocabulary()
    assert "handwritten" not in vocab and "someone" not in vocab  # words only held-out phrasings use


def test_the_data_module_serves_every_digit_with_every_training_phrasing():
    data = CaptionedDigits(batch_size=4)
    data.setup()
    assert len(data._train) == 4000 * len(TEMPLATES)
    x, y, tokens, wrong = data._train.__getitems__([0, 1, len(TEMPLATES)])
    assert x.shape == (3, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert y[0] == y[1]  # items 0 and 1: one digit, two phrasings
    assert not torch.equal(tokens[0], tokens[1])
    assert all(not torch.equal(a, b) for a, b in zip(tokens, wrong, strict=True))  # a mismatched caption, never the same
    assert data.train_split(7)[0].shape == (7, 1, 28, 28)  # digits, not captions
    test = data.test_captions(heldout_phrasings=True)
    assert len(test["tokens"]) == 1000 * len(HELDOUT_TEMPLATES)
    assert test["texts"][0].startswith("handwritten ")
    assert torch.equal(test["digit"][::2], data.heldout()[1])
    # The levels are a third each within every class, up to ties in the measurements.
    counts = torch.bincount(data.levels[:, 0], minlength=3)
    assert counts.min() > 1500 and counts.max() < 1800


def test_a_mismatch_changes_the_digit_or_one_named_attribute():
    g = torch.Generator().manual_seed(0)
    level = torch.tensor([0, 1, 2])
    seen = set()
    for _ in range(200):
        digit, levels = mismatch(3, level, TEMPLATES[4], g)  # "a {slant} {digit}": only slant is named
        changed = [i for i in range(3) if levels[i] != level[i]]
        assert (digit != 3 and not changed) or (digit == 3 and changed == [1])
        seen.add("digit" if digit != 3 else "slant")
    assert seen == {"digit", "slant"}
    # the extremes of mismatch_other_digit: always another digit, never (unless the phrasing names no attribute)
    assert all(mismatch(3, level, TEMPLATES[4], g, other_digit=1.0)[0] != 3 for _ in range(50))
    assert all(mismatch(3, level, TEMPLATES[4], g, other_digit=0.0)[0] == 3 for _ in range(50))
    assert mismatch(3, level, "the digit {digit}", g, other_digit=0.0)[0] != 3
    with pytest.raises(ConfigError, match="data.mismatch_other_digit"):
        CaptionedDigits(mismatch_other_digit=1.5)


def test_eval_captions_give_each_held_out_digit_once_in_class_blocks_of_eight():
    data = CaptionedDigits()
    captions, all_captions = data.eval_captions(), data.test_captions(heldout_phrasings=False)
    digit = captions["digit"]
    assert len(digit) == 1000 and digit.bincount().tolist() == [100] * 10
    assert digit[:80].tolist() == [k for k in range(10) for _ in range(8)]  # an 8-wide grid: a class a row
    assert digit[80:160].tolist() == digit[:80].tolist()
    # one caption per held-out digit: the (digit, levels) of the rows are those of the held-out digits
    held = data.test_captions(heldout_phrasings=True)  # every held-out digit, each in 2 phrasings
    key = lambda d, lv: (int(d), *lv.tolist())  # noqa: E731
    expected = sorted(key(d, lv) for d, lv in zip(held["digit"][::2], held["levels"][::2], strict=True))
    assert sorted(key(d, lv) for d, lv in zip(digit, captions["levels"], strict=True)) == expected
    # in the training phrasings, each used in turn (125 digits each)
    phrasing = [next(t for t, template in enumerate(TEMPLATES) if caption(template, int(d), lv) == text)
                for d, lv, text in zip(digit, captions["levels"], captions["texts"], strict=True)]
    assert torch.tensor(phrasing).bincount().tolist() == [125] * len(TEMPLATES)
    assert set(captions["texts"]) <= set(all_captions["texts"])
    rows = [all_captions["texts"].index(text) for text in captions["texts"][:5]]
    assert_close(captions["tokens"][:5], all_captions["tokens"][rows], rtol=0, atol=0)


def test_captioned_digits_are_measured_by_the_offline_mnist_classifier_that_ships():
    from gansuite.metrics.classifier import classifier_for

    _, info = classifier_for(CaptionedDigits(), cache_dir=None, log=lambda _: None)
    assert info.dataset == "mnist_offline-28px" and info.path.parent.name == "classifiers"


def test_the_real_held_out_digits_follow_their_own_captions_to_the_ceiling_of_three_levels():
    """The README's reference for the rank correlations: each held-out digit's measured attributes against the
    levels its own captions state (percentiles among the training digits of its class, as for drawn images)."""
    from gansuite.metrics.captions import percentile, rank_correlation

    data = CaptionedDigits()
    reference, reference_digits = data.train_values()
    captions = data.test_captions(heldout_phrasings=False)
    values = data.values[data._heldout_index].repeat_interleave(len(TEMPLATES), 0)
    measured = percentile(values, captions["digit"], reference, reference_digits)
    named = captions["mentions"]
    rho = [rank_correlation(captions["levels"][named[:, a], a].float(), measured[named[:, a], a]) for a in range(3)]
    # Three equal-count levels of a continuous value correlate with it at most sqrt(1 - 1/3^2) (Spearman's rho of a
    # k-bin discretisation of a uniform variable); size, a whole number of pixels, ties at the cut points.
    ceiling = (8 / 9) ** 0.5
    assert_close(torch.tensor(rho[:2]), torch.tensor([ceiling, ceiling]), rtol=0, atol=2e-3)
    assert ceiling - 0.01 < rho[2] < ceiling
