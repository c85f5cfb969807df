"""Output files of the commands: marked as gansuite's, and never written over a file someone else made.

``gansuite-sample --grid/--interpolate`` and ``gansuite-compare --out/--json`` replace a file only when
gansuite wrote it (a PNG whose ``Software`` text chunk names gansuite, a JSON whose ``written_by`` does) or
when ``--overwrite`` is given: a mistyped path must not destroy a checkpoint or someone's figure.
"""

from __future__ import annotations

import json
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


def check_output(path: Path, option: str, overwrite: bool) -> None:
    """Refuse, in one sentence, to write ``path`` over a folder or over a file gansuite did not write."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; pass a file name such as {path / 'out.png'}.")
    if path.exists() and not overwrite and not written_by_gansuite(path):
        raise ConfigError(f"{option} {path} already exists and was not written by gansuite; pass a new path, "
                          "or --overwrite to replace it.")
