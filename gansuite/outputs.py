"""Output files of the commands: marked as gansuite's, and never written over a file someone else made.

``gansuite-sample --grid/--interpolate`` and ``gansuite-compare --out/--json`` replace a file only when
gansuite wrote it (a PNG whose ``Software`` text chunk names gansuite, a JSON whose ``written_by`` does) or
when ``--overwrite`` is given: a mistyped path must not destroy a checkpoint or someone's figure.
Every command checks that it can write its outputs before it starts its work (:func:`check_writable`),
so a read-only folder is one sentence at once, not a traceback after the work is done.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from gansuite.errors import ConfigError

SOFTWARE = "gansuite"


def png_info():
    """PNG text chunks that mark a file as gansuite's (pass as ``pnginfo=`` to PIL's ``Image.save``)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    return info


def save_png(tensor, fp, **grid_options) -> None:
    """torchvision's ``save_image`` (the same pixels: ``make_grid``, then round to 8 bits), as a PNG marked as
    gansuite's. ``grid_options`` go to ``make_grid`` (``nrow``, ``padding``, ``pad_value``)."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(tensor, **grid_options)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    Image.fromarray(pixels).save(fp, format="png", pnginfo=png_info())


# gan_int_cls's held-out captions come in blocks of 8 digits of one class: 8 per row puts one class in a row.
CAPTIONS_PER_ROW = 8
ELLIPSIS = "..."  # not "\u2026": Pillow's bitmap fallback font (no FreeType) encodes Latin-1 only


def caption_font(size: int = 10):
    """Pillow's built-in font: the FreeType one at ``size`` px where Pillow has it (10.1 and later), else the
    bitmap one (about 11 px, ASCII and Latin-1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: load_default takes no size
        return ImageFont.load_default()


def wrap_caption(text: str, font, width: float, lines: int) -> list[str]:
    """``text`` in at most ``lines`` lines of at most ``width`` px in ``font``: broken between words (inside a
    word only where it is wider than a line); what does not fit is cut, the last line ending in an ellipsis."""
    words: list[str] = []
    for word in text.split():
        if words and not any(c.isalnum() for c in word):
            words[-1] += " " + word  # the captions' " , " tokens stay with the word before, not open a line
        else:
            words.append(word)
    out: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            out.append(current)
        while font.getlength(word) > width:
            cut = max((i for i in range(1, len(word)) if font.getlength(word[:i]) <= width), default=1)
            out.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        out.append(current)
    if len(out) <= lines:
        return out
    last = out[lines - 1]
    while last and font.getlength(last.rstrip() + ELLIPSIS) > width:
        last = last[:-1]
    return out[: lines - 1] + [last.rstrip() + ELLIPSIS]


def captioned_grid(images, captions, nrow: int = CAPTIONS_PER_ROW, *, min_width: int = 96, lines: int = 3,
                   gap: int = 2, font_size: int = 10):
    """A grid of ``images`` (N, C, H, W) in [0, 1], C = 1 or 3, each with its caption underneath, as a PIL image.

    Each cell is its image scaled up by the smallest integer factor that makes it at least ``min_width`` px
    wide (nearest neighbour: 28 px digits stay crisp), over a white band of ``lines`` lines of black text
    wrapped to that width (:func:`wrap_caption`). ``nrow`` cells per row, ``gap`` white px between and around
    cells. Raises ValueError when there is not exactly one caption per image.
    """
    import math

    import torch
    from PIL import Image, ImageDraw

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"captioned_grid takes images of shape (N, 1 or 3, H, W), not {tuple(images.shape)}")
    captions = list(captions)
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images; pass one caption per image")
    if len(images) == 0:
        raise ValueError("captioned_grid needs at least one image")
    n, _, h, w = images.shape
    scale = math.ceil(min_width / w) if w < min_width else 1
    pixels = images.mul(255).add(0.5).clamp(0, 255).to("cpu", torch.uint8)  # rounded as save_png rounds
    pixels = pixels.expand(-1, 3, -1, -1).repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    pixels = pixels.permute(0, 2, 3, 1).contiguous().numpy()

    font = caption_font(font_size)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (font.getbbox("Ahgy")[3], 0)
    line_height = ascent + descent
    cell_w, image_h = w * scale, h * scale
    cell_h = image_h + 1 + lines * line_height + 1  # 1 px above and below the text
    columns, rows = min(nrow, n), math.ceil(n / nrow)
    grid = Image.new("RGB", (columns * (cell_w + gap) + gap, rows * (cell_h + gap) + gap), "white")
    draw = ImageDraw.Draw(grid)
    margin = 2  # keeps text off the neighbouring cells
    for i, caption in enumerate(captions):
        x = gap + (i % nrow) * (cell_w + gap)
        y = gap + (i // nrow) * (cell_h + gap)
        grid.paste(Image.fromarray(pixels[i]), (x, y))
        for k, line in enumerate(wrap_caption(caption, font, cell_w - 2 * margin, lines)):
            left = x + (cell_w - font.getlength(line)) / 2  # centred under the image
            draw.text((left, y + image_h + 1 + k * line_height), line, fill="black", font=font)
    return grid


def save_captioned_png(images, captions, fp, nrow: int = CAPTIONS_PER_ROW, **options) -> None:
    """:func:`captioned_grid` as a PNG marked as gansuite's. Like :func:`save_png` it writes to ``fp`` as given:
    wrap it in :func:`atomic_path` for a file; the grid is drawn in memory first, so bad arguments raise before
    anything is written."""
    captioned_grid(images, captions, nrow, **options).save(fp, format="png", pnginfo=png_info())


def written_by_gansuite(path: Path) -> bool:
    """Whether ``path`` is a PNG or JSON file that gansuite wrote (read by content, whatever its suffix)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get("Software", "") == SOFTWARE
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get("written_by", "")).startswith(SOFTWARE)


def check_writable(path: Path, option: str, folder: bool = False) -> None:
    """Refuse, in one sentence, an output this process could not write: the folder it goes in (``path`` itself
    when ``folder``), or the nearest existing folder above it (where it would be created), is read-only.

    Files are written to a temporary name and renamed, so writing into that folder is all it takes.
    """
    path = Path(path)
    where = path if folder else path.parent
    while not os.path.exists(where) and where != where.parent:  # os.path: False, not an error, for any OSError
        where = where.parent
    if not os.path.isdir(where):
        raise ConfigError(f"{option} {path}: {where} is a file, not a folder; pass a path in a folder.")
    if not os.access(where, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in {where} (permission denied or a read-only file system); "
                          f"pass {option} a path in a folder you can write to.")


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_output(path: Path, option: str, overwrite: bool) -> None:
    """Refuse, in one sentence, to write ``path`` over a folder or over a file gansuite did not write, or where
    it cannot be written (:func:`check_writable`)."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; pass a file name such as {path / 'out.png'}.")
    if path.exists() and not overwrite and not written_by_gansuite(path):
        raise ConfigError(f"{option} {path} already exists and was not written by gansuite; pass a new path, "
                          "or --overwrite to replace it.")
    check_writable(path, option)


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    The temporary name ends in ``.tmp`` so a crash mid-write never leaves a file that looks
    like a finished PNG, and ``os.replace`` within one folder is atomic on POSIX and Windows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
