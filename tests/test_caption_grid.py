"""Captioned sample grids (text-to-image models): the renderer, SampleGrid and gansuite-sample's save_grid."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gansuite import outputs
from gansuite.outputs import atomic_path, caption_font, captioned_grid, save_captioned_png, wrap_caption
from gansuite.sampling import save_grid
from gansuite.training.callbacks import SampleGrid

FONT = caption_font()
ASCENT, DESCENT = FONT.getmetrics() if hasattr(FONT, "getmetrics") else (FONT.getbbox("Ahgy")[3], 0)
LINE = ASCENT + DESCENT


def _images(n: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    # Multiples of 1/255: the 8-bit pixels are exact, so the upscaled cell can be compared bit for bit.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g).float() / 255


def _pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy())  # (H, W, 3) uint8


# ------------------------------------------------------------------ the renderer
@pytest.mark.parametrize(("n", "nrow", "size", "scale", "columns", "rows"), [
    (16, 8, 28, 4, 8, 2),   # 28 px digits: 4x, 112 px cells
    (5, 2, 32, 3, 2, 3),    # 32 px: 3x, 96 px; the last row holds one cell
    (3, 8, 96, 1, 3, 1),    # already 96 px wide: not scaled; fewer images than nrow: one short row
])
def test_grid_size_follows_count_nrow_and_scale(n, nrow, size, scale, columns, rows):
    grid = captioned_grid(_images(n, size=size), ["a seven"] * n, nrow, lines=3, gap=2)
    cell_w, cell_h = size * scale, size * scale + 3 * LINE + 2
    assert grid.size == (columns * (cell_w + 2) + 2, rows * (cell_h + 2) + 2)
    assert grid.mode == "RGB"


@pytest.mark.parametrize("channels", [1, 3])
def test_a_cells_image_is_the_input_upscaled_exactly(channels):
    images = _images(10, channels)
    pixels = _pixels(captioned_grid(images, [""] * 10, nrow=4))
    cell_h = 112 + 3 * LINE + 2
    i = 6  # second row, third column
    x, y = 2 + 2 * (112 + 2), 2 + 1 * (cell_h + 2)
    expected = (images[i] * 255).round().to(torch.uint8).expand(3, -1, -1)
    expected = expected.repeat_interleave(4, 1).repeat_interleave(4, 2).permute(1, 2, 0)
    assert torch.equal(pixels[y:y + 112, x:x + 112], expected)
    # The gaps are white.
    assert (pixels[y:y + 112, x - 2:x] == 255).all() and (pixels[y - 2:y, x:x + 112] == 255).all()


def test_caption_band_holds_dark_text_and_is_white_for_an_empty_caption():
    pixels = _pixels(captioned_grid(_images(2), ["a thick slanted seven", ""], nrow=2))
    band = slice(2 + 112, 2 + 112 + 3 * LINE + 2)  # the first row's caption band
    text, empty = pixels[band, 2:2 + 112], pixels[band, 2 + 114:2 + 114 + 112]
    assert (text.int().sum(-1) < 3 * 100).sum() > 30  # black strokes of letters
    assert (empty == 255).all()


def test_a_longer_caption_wraps_onto_more_lines_and_a_too_long_one_ends_in_an_ellipsis():
    width = 108
    short = wrap_caption("a seven", FONT, width, 3)
    assert short == ["a seven"]
    two = wrap_caption("someone wrote a large three , left-leaning", FONT, width, 3)
    assert len(two) >= 2 and " ".join(two) == "someone wrote a large three , left-leaning"
    assert all(FONT.getlength(line) <= width for line in two)
    assert not any(line.startswith(",") for line in two)  # the "," token stays with its word
    cut = wrap_caption(" ".join(["seven"] * 40), FONT, width, 3)
    assert len(cut) == 3 and cut[-1].endswith("...") and FONT.getlength(cut[-1]) <= width
    # A word wider than a line is broken inside it rather than drawn over the neighbours.
    long_word = wrap_caption("x" * 60, FONT, width, 5)
    assert "".join(long_word).rstrip(".").startswith("x" * 30) and all(FONT.getlength(s) <= width for s in long_word)


def test_mismatched_caption_count_raises_and_leaves_the_existing_file(tmp_path):
    path = tmp_path / "grid.png"
    save_captioned_png(_images(2), ["one", "two"], path, nrow=2)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="3 captions for 2 images"):
        save_captioned_png(_images(2), ["one", "two", "three"], path, nrow=2)
    with pytest.raises(ValueError, match="1 captions for 2 images"), atomic_path(path) as tmp:
        save_captioned_png(_images(2), ["one"], tmp, nrow=2)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failure_while_writing_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    save_captioned_png(_images(2), ["one", "two"], path, nrow=2)
    before = path.read_bytes()

    def half_write(self, fp, *args, **kwargs):
        Path(fp).write_bytes(before[:20])  # a PNG signature and part of a header, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_write)
    with pytest.raises(OSError, match="No space"), atomic_path(path) as tmp:
        save_captioned_png(_images(2, seed=1), ["three", "four"], tmp, nrow=2)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_png_is_marked_as_gansuites(tmp_path):
    path = tmp_path / "grid.png"
    save_captioned_png(_images(1), ["a one"], path, nrow=1)
    assert outputs.written_by_gansuite(path)


def test_bad_image_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        captioned_grid(torch.zeros(2, 2, 8, 8), ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        captioned_grid(torch.zeros(1, 8, 8), ["a"])


# ------------------------------------------------------------------ SampleGrid and save_grid
class TinyGAN(torch.nn.Module):
    """A fixed linear generator with gansuite's sampling interface: z -> 1x8x8 images in [-1, 1]."""

    def __init__(self, step: int = 3):
        super().__init__()
        self.gen = torch.nn.Linear(4, 64)
        self.step = step

    def make_inputs(self, n: int, generator: torch.Generator):
        return torch.randn(n, 4, generator=generator), torch.arange(n) % 3  # (z, caption ids)

    @torch.no_grad()
    def sample(self, inputs, ema: bool = True) -> torch.Tensor:
        return torch.tanh(self.gen(inputs[0])).view(-1, 1, 8, 8)


class TinyTextGAN(TinyGAN):
    WORDS = ("a thin zero", "a thick one", "a slanted two")

    def caption_texts(self, inputs) -> list[str]:
        return [self.WORDS[int(k)] for k in inputs[1]]


def _snapshot(tmp_path: Path, module, num_samples: int) -> Image.Image:
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], default_root_dir=tmp_path, datamodule=None,
                              lightning_module=module)
    SampleGrid(num_samples=num_samples).on_train_end(trainer, module)
    png = tmp_path / "samples" / f"step_{module.step:06d}.png"
    assert not list(tmp_path.rglob("*.tmp"))
    with Image.open(png) as image:
        image.load()
        return image


def test_sample_grid_writes_captions_for_a_module_with_caption_texts(tmp_path):
    plain = _snapshot(tmp_path / "plain", TinyGAN(), 10)
    # As before: ceil(sqrt(10)) = 4 per row, 3 rows of 8 px images, 2 px padding.
    assert plain.size == (4 * 10 + 2, 3 * 10 + 2)

    captioned = _snapshot(tmp_path / "text", TinyTextGAN(), 10)
    # 8 per row, 2 rows; 8 px images scaled 12x to 96 px.
    assert captioned.size == (8 * 98 + 2, 2 * (96 + 3 * LINE + 2 + 2) + 2)
    assert captioned.text.get("Software") == "gansuite"


def test_sample_grid_captions_are_those_of_the_fixed_inputs(tmp_path):
    module = TinyTextGAN()
    seen = []
    module.caption_texts = lambda inputs: seen.append(inputs) or TinyTextGAN.caption_texts(module, inputs)
    grid = SampleGrid(num_samples=4, seed=5)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], default_root_dir=tmp_path, datamodule=None,
                              lightning_module=module)
    grid.on_train_end(trainer, module)
    assert len(seen) == 1 and seen[0] is grid.fixed_inputs(module)


def test_save_grid_writes_captions_for_a_module_with_caption_texts(tmp_path):
    plain = save_grid(TinyGAN(), tmp_path / "plain.png", n=6)
    with Image.open(plain) as image:
        assert image.size == (3 * 10 + 2, 2 * 10 + 2)  # ceil(sqrt(6)) = 3 per row, as before

    text = save_grid(TinyTextGAN(), tmp_path / "text.png", n=6)
    with Image.open(text) as image:
        assert image.size == (6 * 98 + 2, 96 + 3 * LINE + 2 + 2 + 2)  # 6 < 8 per row: one row
    narrow = save_grid(TinyTextGAN(), tmp_path / "narrow.png", n=6, nrow=2)
    with Image.open(narrow) as image:
        assert image.size == (2 * 98 + 2, 3 * (96 + 3 * LINE + 2 + 2) + 2)
    assert not list(tmp_path.glob(".*.tmp"))
