"""What ``gansuite-sample`` writes: grids, folders, interpolations, code sweeps, translations.

The library functions behind the command (:mod:`gansuite.cli.sample`), each given a built module:
:func:`save_grid`, :func:`save_folder`, :func:`save_interpolation` (:func:`slerp` for Gaussian z),
:func:`save_code_grids` (InfoGAN), :func:`save_translations` (image-to-image models) and
:func:`save_text_grid` (a text-to-image model, one caption), and the inputs they draw (:func:`grid_inputs`,
:func:`folder_inputs`, :func:`interpolation_inputs`, :func:`text_inputs`). Samples
come from the EMA generator when the module keeps one (``ema=False`` for the trained one). The same
``seed`` gives the same files. Every PNG is written to a hidden temporary file and renamed into
place, so an interrupted run leaves only complete images.

Two equalities make the output comparable with what training wrote:

- :func:`save_grid` draws its inputs like the training run's sample grid (``make_inputs(n)`` from one
  seeded generator, one class per column for a conditional model), so ``seed=1234, n=64`` (the
  defaults of ``callbacks.sample_grid``) redraws the run's ``samples/step_*.png`` of that checkpoint.
- :func:`save_folder` draws its inputs batch by batch like the evaluation (``eval.seed``,
  ``eval.batch_size``), so with ``seed`` and ``batch_size`` equal to those (0 and 250 by default) the
  folder holds exactly the samples ``gansuite-eval CHECKPOINT`` measures, and
  ``gansuite-eval FOLDER data=...`` repeats its numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gansuite.errors import ConfigError

DEFAULT_BATCH_SIZE = 250  # conf/eval/default.yaml's eval.batch_size, for checkpoints written without eval


# ------------------------------------------------------------------------------------ interpolation
def slerp(a: Tensor, b: Tensor, t: float | Tensor) -> Tensor:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1) along the last dimension.

    ``a`` and ``b`` are (..., D); ``t`` is a number or a tensor whose shape broadcasts against
    ``a.shape[:-1]`` (e.g. ``a`` (R, 1, D) and ``t`` (S,) give an (R, S, D) path). The path follows
    the great circle between the two directions: ``sin((1-t)w)/sin(w) a + sin(tw)/sin(w) b`` with w
    the angle between them, so two orthogonal unit vectors stay on the unit sphere. Where that is
    undefined or ill-conditioned (parallel or opposite vectors, a zero vector) it is linear
    interpolation. The endpoints are returned exactly.
    """
    dtype = torch.promote_types(a.dtype, b.dtype)
    # float64 inside: arccos near +-1 loses half the digits of its argument.
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    t64 = torch.as_tensor(t, dtype=torch.float64, device=a.device)[..., None]
    norms = a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(-1, keepdim=True) / norms.clamp_min(1e-300)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin_omega = torch.sin(omega)
    linear = (sin_omega < 1e-6) | (norms == 0)
    safe = torch.where(linear, torch.ones_like(sin_omega), sin_omega)
    # sin(1 * w) / sin(w) is exactly 1 and sin(0 * w) exactly 0: the endpoints come out bit for bit.
    spherical = torch.sin((1 - t64) * omega) / safe * a64 + torch.sin(t64 * omega) / safe * b64
    out = torch.where(linear, torch.lerp(a64, b64, t64.expand_as(spherical)), spherical)
    return out.to(dtype)


def gaussian_latent(module: Any) -> bool:
    """Whether the module's generator input is z ~ N(0, I) alone (then slerp is the right path).

    In D dimensions Gaussian z lies near the shell |z| = sqrt(D); the midpoint of a straight line
    between two draws has norm about sqrt(D/2), a region G never saw in training, so linear walks
    fade towards the mean image halfway. Slerp between two draws stays near the shell (White 2016,
    "Sampling Generative Networks").

    That holds for the z -> x and (z, y) -> x families (UnconditionalGAN, ConditionalGAN). InfoGAN's
    input also holds one-hot and uniform codes and its noise is uniform by default, and LAPGAN's noise
    planes are uniform: none lives on a Gaussian shell, so those are interpolated linearly.
    """
    from gansuite.models.gan import ConditionalGAN, UnconditionalGAN

    if not isinstance(module, (UnconditionalGAN, ConditionalGAN)) or hasattr(module, "code_names"):
        return False
    return getattr(module, "noise", "normal") == "normal"


# ------------------------------------------------------------------------------------ inputs
def _labels(inputs: Any) -> Tensor | None:
    """The integer class labels of a conditional family's ``(z, y)`` inputs, or None."""
    if isinstance(inputs, (tuple, list)) and len(inputs) >= 2 and isinstance(inputs[1], Tensor):
        if not inputs[1].is_floating_point() and inputs[1].ndim == 1:
            return inputs[1]
    return None


def _with_labels(inputs: Any, labels: Tensor) -> Any:
    y = _labels(inputs)
    return (inputs[0], labels.to(y.device, y.dtype), *inputs[2:])


def _cycle(classes: Sequence[int], start: int, n: int) -> Tensor:
    """Labels for samples start..start+n-1 that take ``classes`` in turn (one per column of a len(classes)-wide grid)."""
    return torch.tensor(classes, dtype=torch.long)[(torch.arange(n) + start) % len(classes)]


def parse_classes(text: str | None, module: Any) -> list[int] | None:
    """``--classes`` ("3" or "0,1,2") checked against the module: a list of class indices, or None."""
    if text is None:
        return None
    if callable(getattr(module, "encode_caption", None)):  # classes only structure its training, not its input
        raise ConfigError("--classes: this checkpoint's model draws images for captions, not classes; pass "
                          "--text \"a thick slanted seven\" instead.")
    num_classes = getattr(module, "num_classes", None)
    if not num_classes:
        also = " (InfoGAN's categorical codes are swept by --codes)" if hasattr(module, "code_names") else ""
        raise ConfigError(f"--classes: this checkpoint's model is unconditional{also}; drop --classes, "
                          "or sample a class-conditional model (model=cgan, cgan_mlp or acgan).")
    classes = []
    for part in text.split(","):
        try:
            k = int(part.strip())
        except ValueError:
            raise ConfigError(f"--classes: {part.strip()!r} is not a class index; write --classes 3 or "
                              "--classes 0,1,2.") from None
        if not 0 <= k < num_classes:
            raise ConfigError(f"--classes: class {k} is out of range; this model has classes 0 to {num_classes - 1}.")
        classes.append(k)
    return classes


def grid_inputs(module: Any, n: int, seed: int, classes: Sequence[int] | None = None) -> Any:
    """Inputs for an n-sample grid, drawn as the training run's sample grid draws them (one call, one seed)."""
    inputs = module.make_inputs(n, torch.Generator().manual_seed(seed))
    return _with_labels(inputs, _cycle(classes, 0, n)) if classes else inputs


def batch_inputs(module: Any, n: int, generator: torch.Generator, start: int) -> Any:
    """``module.make_inputs`` for the batch that begins at sample ``start`` of a longer draw: a module whose inputs
    run through a fixed list (a text-to-image model's held-out captions) continues the list where the previous
    batch stopped, so evaluations and folders cover all of it; other modules draw from ``generator`` alone."""
    import inspect

    if "start" in inspect.signature(module.make_inputs).parameters:
        return module.make_inputs(n, generator, start=start)
    return module.make_inputs(n, generator)


def folder_inputs(module: Any, n: int, seed: int, batch_size: int,
                  classes: Sequence[int] | None = None) -> Iterator[Any]:
    """Inputs for n samples, batch by batch, drawn as the evaluation draws them (one seeded generator)."""
    rng = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch_size):
        inputs = batch_inputs(module, min(batch_size, n - start), rng, start)
        yield _with_labels(inputs, _cycle(classes, start, len(_labels(inputs)))) if classes else inputs


def interpolation_inputs(module: Any, rows: int, steps: int, seed: int, classes: Sequence[int] | None = None,
                         spherical: bool | None = None) -> Any:
    """Inputs for a rows x steps grid (row-major): row r walks from one drawn input to another in ``steps`` steps.

    Every floating-point part of the inputs (z; each level's noise for LAPGAN) is interpolated; a
    conditional model keeps row r's label along the row (the label of the row's start, or ``classes``
    in turn). ``spherical`` picks :func:`slerp` or linear interpolation; None picks slerp for Gaussian z.
    """
    ends = module.make_inputs(2 * rows, torch.Generator().manual_seed(seed))
    if spherical is None:
        spherical = gaussian_latent(module)
    parts = ends if isinstance(ends, (tuple, list)) else (ends,)
    walked = []
    for x in parts:
        if x.is_floating_point():
            flat = x.reshape(2 * rows, 1, -1)
            t = torch.linspace(0, 1, steps, dtype=torch.float64, device=x.device)
            if spherical:
                path = slerp(flat[:rows], flat[rows:], t)
            else:
                path = torch.lerp(flat[:rows].double(), flat[rows:].double(), t[:, None]).to(x.dtype)
            walked.append(path.reshape(rows * steps, *x.shape[1:]))
        else:  # class labels: one per row
            row_labels = _cycle(classes, 0, rows) if classes else x[:rows]
            walked.append(row_labels.to(x.device, x.dtype).repeat_interleave(steps, 0))
    return tuple(walked) if isinstance(ends, (tuple, list)) else walked[0]


# ------------------------------------------------------------------------------------ writing
def _check_images(samples: Tensor) -> None:
    if samples.ndim != 4:
        raise ConfigError(f"gansuite-sample writes images, but this checkpoint's model makes samples of shape "
                          f"{tuple(samples.shape[1:])}; 2D runs draw their scatter plots into the run's samples/.")


def _sample(module: Any, inputs: Any, ema: bool, batch_size: int) -> Tensor:
    """Samples for ``inputs`` in chunks of ``batch_size`` (the generators are in eval mode: chunks don't interact)."""
    n = len(inputs[0]) if isinstance(inputs, (tuple, list)) else len(inputs)
    chunks = []
    for start in range(0, n, batch_size):
        part = (tuple(x[start:start + batch_size] for x in inputs) if isinstance(inputs, (tuple, list))
                else inputs[start:start + batch_size])
        chunks.append(module.sample(part, ema=ema).detach().float().cpu())
    samples = torch.cat(chunks)
    _check_images(samples)
    return samples


def _write_grid(samples: Tensor, path: Path, nrow: int, captions: Sequence[str] | None = None) -> Path:
    """Write ``samples`` as a grid PNG; with ``captions`` (one per sample), each written under its image."""
    from gansuite.data.base import denormalize
    from gansuite.outputs import atomic_path, save_captioned_png, save_png

    with atomic_path(path) as tmp:
        if captions is None:
            save_png(denormalize(samples), tmp, nrow=nrow)
        else:
            save_captioned_png(denormalize(samples), captions, tmp, nrow=nrow)
    return path


def default_nrow(module: Any, n: int, classes: Sequence[int] | None) -> int:
    """8 per row for a text-to-image model (one class's 8 held-out digits a row, as the training grid lays them out);
    one class per column for a conditional model (all classes, or the requested ones); else a square."""
    from gansuite.outputs import CAPTIONS_PER_ROW

    if getattr(module, "caption_texts", None) is not None:
        return CAPTIONS_PER_ROW
    if classes and len(classes) > 1:
        return len(classes)
    if not classes and getattr(module, "num_classes", None):
        return module.num_classes  # make_inputs asks for classes 0..K-1 in turn, as the training grid does
    return math.ceil(math.sqrt(n))


def save_grid(module: Any, path: str | Path, n: int = 64, nrow: int | None = None, seed: int = 0,
              classes: Sequence[int] | None = None, ema: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> Path:
    """Write an n-sample grid PNG to ``path``; ``nrow`` images per row (default: see :func:`default_nrow`). A
    text-to-image model's (one with ``caption_texts(inputs)``) has each image's caption written under it."""
    inputs = grid_inputs(module, n, seed, classes)
    samples = _sample(module, inputs, ema, batch_size)
    caption_texts = getattr(module, "caption_texts", None)
    captions = caption_texts(inputs) if caption_texts is not None else None
    return _write_grid(samples, Path(path), nrow or default_nrow(module, n, classes), captions)


def text_inputs(module: Any, text: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A text-to-image model's inputs for n images of one caption: z drawn as :meth:`make_inputs` draws it (one
    seeded generator), the caption from the module's ``encode_caption`` (word ids or an embedding) in every row."""
    caption = module.encode_caption(text)
    z = torch.randn(n, module.latent_dim, generator=torch.Generator().manual_seed(seed)).to(module.device, module.dtype)
    return z, caption.to(module.device).repeat(n, *([1] * (caption.ndim - 1)))


def save_text_grid(module: Any, path: str | Path, text: str, n: int = 64, nrow: int | None = None, seed: int = 0,
                   ema: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> Path:
    """Write a grid of n images a text-to-image model draws for the caption ``text`` (each from its own z) to
    ``path``; ``nrow`` per row (default: a square)."""
    samples = _sample(module, text_inputs(module, text, n, seed), ema, batch_size)
    return _write_grid(samples, Path(path), nrow or math.ceil(math.sqrt(n)))


def save_folder(module: Any, folder: str | Path, n: int, seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                classes: Sequence[int] | None = None, ema: bool = True) -> list[Path]:
    """Write n numbered PNGs, one sample each, into ``folder``; returns their paths in order.

    Names are zero-padded (``00000.png``; a conditional model's carry the class: ``00000_class3.png``) so
    sorting by name, as ``gansuite-eval FOLDER`` does, keeps the order they were drawn in. Each file is
    written under a hidden ``.tmp`` name and renamed, so a killed run leaves only complete images.
    """
    from gansuite.data.base import denormalize
    from gansuite.outputs import atomic_path, save_png

    folder = Path(folder)
    width = max(5, len(str(n - 1)))
    paths: list[Path] = []
    for inputs in folder_inputs(module, n, seed, batch_size, classes):
        samples = _sample(module, inputs, ema, batch_size)
        labels = _labels(inputs)
        for j, image in enumerate(denormalize(samples)):
            i = len(paths)
            suffix = f"_class{int(labels[j])}" if labels is not None else ""
            path = folder / f"{i:0{width}d}{suffix}.png"
            with atomic_path(path) as tmp:
                save_png(image, tmp)
            paths.append(path)
    return paths


def save_interpolation(module: Any, path: str | Path, rows: int = 8, steps: int = 10, seed: int = 0,
                       classes: Sequence[int] | None = None, ema: bool = True, spherical: bool | None = None,
                       batch_size: int = DEFAULT_BATCH_SIZE) -> Path:
    """Write a rows x steps interpolation grid (see :func:`interpolation_inputs`) to ``path``."""
    inputs = interpolation_inputs(module, rows, steps, seed, classes, spherical)
    return _write_grid(_sample(module, inputs, ema, batch_size), Path(path), steps)


def save_code_grids(module: Any, out_dir: str | Path, rows: int = 8, steps: int = 10, seed: int = 0,
                    ema: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> list[Path]:
    """Write ``<out_dir>/<code name>.png`` per InfoGAN code: each row varies only that code.

    Uses the module's ``code_names`` and ``code_sweep_inputs(code, steps, rows, generator)``. Every grid
    starts from the same seed, so row r shows the same noise and other codes in every file.
    """
    names = getattr(module, "code_names", None)
    if names is None or not callable(getattr(module, "code_sweep_inputs", None)):
        raise ConfigError("--codes needs an InfoGAN checkpoint (one trained with model=infogan); "
                          "use --grid or --interpolate for this model.")
    paths = []
    for code, name in enumerate(names):
        inputs = module.code_sweep_inputs(code, steps, rows, torch.Generator().manual_seed(seed))
        samples = _sample(module, inputs, ema, batch_size)
        paths.append(_write_grid(samples, Path(out_dir) / f"{Path(name).name}.png", len(samples) // rows))
    return paths


# ------------------------------------------------------------------------------------ image-to-image
def _read_image(path: Path, channels: int) -> Tensor:
    """An image file as (1, C, H, W) in [-1, 1]."""
    from gansuite.data.base import to_signed
    from gansuite.data.folders import read_u8

    return to_signed(read_u8(path, channels, key="--translate")[None])


def save_translations(module: Any, in_dir: str | Path, out_dir: str | Path, *, direction: str = "a2b",
                      targets: str | Path | None = None, from_hr: bool = False, ema: bool = True,
                      seed: int = 0) -> list[Path]:
    """Translate every image in ``in_dir`` with an image-to-image model; write ``out_dir/<name>.png`` (the
    output) and ``out_dir/<name>_compare.png`` (input | output, and | target when known).

    Super-resolution models upscale each image at its own size (their nets are fully convolutional);
    other models see it resized to the size they were trained on. ``from_hr``: the images are
    high-resolution targets, downsampled by the model's scale first (bicubic, as in training), so the
    comparison shows input | output | target and their PSNR can be read off. ``targets``: a folder of
    target images with the same file names. CycleGAN translates ``a2b`` or ``b2a``.
    """
    import torch.nn.functional as F

    from gansuite.data.base import denormalize
    from gansuite.data.folders import IMAGE_SUFFIXES
    from gansuite.metrics.paired import bicubic_downsample
    from gansuite.outputs import atomic_path, save_png
    from gansuite.training.translation import to_canvas

    cycle = hasattr(module, "translate")
    if not cycle and not hasattr(module, "examples_a"):
        raise ConfigError("--translate needs an image-to-image model (srresnet, srgan, pix2pix, cyclegan); this "
                          "checkpoint makes images from noise: use --grid or --folder.")
    if direction not in ("a2b", "b2a"):
        raise ConfigError(f"--direction {direction!r} is unknown; use a2b or b2a.")
    if direction == "b2a" and not cycle:
        raise ConfigError("--direction b2a applies to CycleGAN only; a paired model translates one way.")
    if cycle:
        src, dst = module.examples_a, module.examples_b
        src_shape = tuple((src if direction == "a2b" else dst).shape[1:])
        scale = 1
    else:
        src_shape = tuple(module.examples_a.shape[1:])
        scale = module.examples_b.shape[-1] // module.examples_a.shape[-1]
    if from_hr and scale == 1:
        raise ConfigError("--from-hr applies to super-resolution models only.")
    files = sorted(p for p in Path(in_dir).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"--translate {in_dir} holds no images; pass a folder of images.")
    out_dir = Path(out_dir)
    paths: list[Path] = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)  # pix2pix's dropout at test time draws from it
        for path in files:
            x = _read_image(path, src_shape[0]).to(module.device)
            target = None
            if from_hr:
                h, w = (s - s % scale for s in x.shape[-2:])
                target, x = x[..., :h, :w], bicubic_downsample(x[..., :h, :w], scale)
            elif targets is not None:
                candidate = Path(targets) / path.name
                if not candidate.is_file():
                    raise ConfigError(f"--targets: {candidate} does not exist; name every target as its input.")
                target = _read_image(candidate, src_shape[0] if cycle else module.examples_b.shape[1])
            if scale == 1 and tuple(x.shape[-2:]) != src_shape[1:]:
                x = F.interpolate(x, size=src_shape[1:], mode="bicubic", antialias=True,
                                  align_corners=False).clamp(-1, 1)
            out = (module.translate(x, direction, ema=ema) if cycle else module.sample((x, None), ema=ema)).float()
            columns = [to_canvas(x, out), out] + ([to_canvas(target.to(out.device), out)] if target is not None else [])
            for name, image, nrow in ((f"{path.stem}.png", out, 1),
                                      (f"{path.stem}_compare.png", torch.cat(columns), len(columns))):
                with atomic_path(out_dir / name) as tmp:
                    save_png(denormalize(image.cpu()), tmp, nrow=nrow, padding=2, pad_value=1.0)
                paths.append(out_dir / name)
    return paths
