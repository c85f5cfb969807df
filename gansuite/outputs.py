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
