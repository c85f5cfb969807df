"""The ``gansuite-sample`` command line: images from a checkpoint, every option checked before anything runs.

    gansuite-sample outputs/2026-11-23/12-00-00 --grid grid.png -n 64    # its checkpoints/last.ckpt
    gansuite-sample run/checkpoints/best.ckpt --folder out/ -n 10000     # then: gansuite-eval out/ data=...
    gansuite-sample RUN --grid sevens.png --classes 7                    # a conditional model, one class
    gansuite-sample RUN --grid sevens.png --text "a thick slanted seven" -n 16   # a text-to-image model
    gansuite-sample RUN --interpolate walk.png --rows 8 --steps 10
    gansuite-sample RUN --codes codes/                                   # InfoGAN: one grid per code
    gansuite-sample RUN --translate photos/ --out upscaled/ [--from-hr]  # image-to-image models

A checkpoint is rebuilt with the config it was trained with, as ``gansuite-eval`` does. Samples come
from the EMA generator when the run kept one (``--raw`` for the trained one), on ``--device`` (cpu).
The same ``--seed`` gives the same files. The options are all checked before a checkpoint is loaded
or anything is written; a bad input is one sentence and exit status 2.

What each mode writes is in :mod:`gansuite.sampling`, with how ``--grid --seed 1234 -n 64`` redraws a
run's sample grid and how ``--folder`` with the run's ``eval.seed`` and ``eval.batch_size`` (``--seed``,
``--batch-size``) holds exactly the samples ``gansuite-eval`` measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gansuite.config.loading import check_device, load_module
from gansuite.errors import ConfigError
from gansuite.outputs import check_output, check_writable
from gansuite.sampling import (
    DEFAULT_BATCH_SIZE,
    gaussian_latent,
    parse_classes,
    save_code_grids,
    save_folder,
    save_grid,
    save_interpolation,
    save_text_grid,
    save_translations,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other gansuite error; argparse prints the usage too
        print(f"{self.prog}: error: {message}; see {self.prog} --help.", file=sys.stderr)
        sys.exit(2)


def _positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{option} is {value}; pass a positive whole number.")


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(
        prog="gansuite-sample",
        description="Images from a gansuite checkpoint: a grid, a folder of numbered PNGs (for gansuite-eval), "
                    "latent interpolations, or InfoGAN code sweeps. Same --seed, same files.",
    )
    parser.add_argument("source", help="a .ckpt, or a run directory (its checkpoints/last.ckpt)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--grid", metavar="PNG", help="write one grid of -n samples")
    mode.add_argument("--folder", metavar="DIR", help="write -n numbered PNGs into DIR (new or empty)")
    mode.add_argument("--interpolate", metavar="PNG", help="write --rows walks of --steps samples between two inputs")
    mode.add_argument("--codes", metavar="DIR", help="InfoGAN: write DIR/<code>.png per code, --rows rows each")
    mode.add_argument("--translate", metavar="DIR", help="image-to-image models: translate (SR: upscale) every "
                                                         "image in DIR into --out, with side-by-side comparisons")
    parser.add_argument("--out", metavar="DIR", help="--translate: where the outputs go (new or empty)")
    parser.add_argument("--targets", metavar="DIR", help="--translate: target images of the same names, shown "
                                                         "beside the outputs")
    parser.add_argument("--from-hr", action="store_true", help="--translate, super-resolution: the images are "
                                                               "high-resolution; downsample them first")
    parser.add_argument("--direction", default=None, help="--translate, CycleGAN: a2b (default) or b2a")
    parser.add_argument("-n", type=int, help="samples (default: 64 for --grid, 10000 for --folder)")
    parser.add_argument("--nrow", type=int, help="--grid: images per row (default: one class per column for a "
                                                 "conditional model, else a square)")
    parser.add_argument("--rows", type=int, help="--interpolate / --codes: rows (default 8)")
    parser.add_argument("--steps", type=int, help="--interpolate / --codes: columns of a row (default 10; a "
                                                  "categorical code always shows its K values)")
    parser.add_argument("--lerp", action="store_true", help="--interpolate: linear instead of spherical for Gaussian z")
    parser.add_argument("--classes", help="a conditional model's classes, e.g. 3 or 0,1,2 (taken in turn)")
    parser.add_argument("--text", help="--grid, a text-to-image model (model=gan_int_cls): -n images of this caption, "
                                       "each from its own z (default: the run's held-out captions)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the generator inputs (default 0)")
    parser.add_argument("--batch-size", type=int, help="samples per generator call (default: the run's "
                                                       "eval.batch_size, 250)")
    parser.add_argument("--raw", action="store_true", help="sample the trained generator, not its EMA")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--overwrite", action="store_true", help="--grid / --interpolate: replace an existing file "
                                                                  "that gansuite did not write")
    args = parser.parse_args(argv)
    try:
        # Every check that needs no checkpoint comes first, and nothing is written until all have passed.
        for option, value in (("-n", args.n), ("--nrow", args.nrow), ("--rows", args.rows),
                              ("--batch-size", args.batch_size)):
            _positive(value, option)
        applies = {"-n": ("grid", "folder"), "--nrow": ("grid",), "--rows": ("interpolate", "codes"),
                   "--steps": ("interpolate", "codes"), "--lerp": ("interpolate",),
                   "--classes": ("grid", "folder", "interpolate"), "--text": ("grid",), "--out": ("translate",),
                   "--targets": ("translate",), "--from-hr": ("translate",), "--direction": ("translate",)}
        chosen = next(m for m in ("grid", "folder", "interpolate", "codes", "translate")
                      if getattr(args, m) is not None)
        for option, modes in applies.items():
            if getattr(args, option.lstrip("-").replace("-", "_")) not in (None, False) and chosen not in modes:
                raise ConfigError(f"{option} does not apply to --{chosen}; it goes with "
                                  f"{' or '.join('--' + m for m in modes)}.")
        if args.text is not None and not args.text.strip():
            raise ConfigError("--text is empty; pass a caption, e.g. --text \"a thick slanted seven\".")
        if args.text is not None and args.classes is not None:
            raise ConfigError("--text and --classes both say what to draw; pass one of them.")
        if args.steps is not None and args.steps < 2:
            raise ConfigError(f"--steps is {args.steps}; a row needs at least 2 steps (its two ends).")
        for option in ("grid", "interpolate"):
            if getattr(args, option) is not None:
                check_output(Path(getattr(args, option)), f"--{option}", args.overwrite)
        if args.folder is not None:
            _check_folder(Path(args.folder))
        if args.translate is not None:
            if args.out is None:
                raise ConfigError("--translate needs --out DIR: where the translated images go.")
            if args.targets is not None and args.from_hr:
                raise ConfigError("--targets and --from-hr both give targets; pass one of them.")
            _check_folder(Path(args.out), "--out")
        if args.codes is not None:
            check_writable(Path(args.codes), "--codes", folder=True)
        device = check_device(args.device)

        module, cfg, path, step = load_module(args.source, device)
        if args.text is not None and not callable(getattr(module, "encode_caption", None)):
            raise ConfigError(f"--text: this checkpoint's model (model={cfg.model.get('name')}) does not draw for "
                              "captions; drop --text, or sample a text-to-image model (model=gan_int_cls).")
        classes = parse_classes(args.classes, module)
        batch_size = args.batch_size or (cfg.get("eval") or {}).get("batch_size") or DEFAULT_BATCH_SIZE
        ema = not args.raw
        which = "EMA" if ema and getattr(module, "generator_ema", None) is not None else "trained"
        rows, steps = args.rows or 8, args.steps or 10
        if args.grid is not None and args.text is not None:
            n = args.n or 64
            out = save_text_grid(module, args.grid, args.text, n, args.nrow, args.seed, ema, batch_size)
            print(f"{out}: {n} samples of {args.text!r}")
        elif args.grid is not None:
            n = args.n or 64
            out = save_grid(module, args.grid, n, args.nrow, args.seed, classes, ema, batch_size)
            print(f"{out}: {n} samples")
        elif args.folder is not None:
            n = args.n or 10000
            paths = save_folder(module, args.folder, n, args.seed, batch_size, classes, ema)
            print(f"{args.folder}: {len(paths)} PNGs, {paths[0].name} to {paths[-1].name}")
        elif args.interpolate is not None:
            spherical = False if args.lerp else None
            out = save_interpolation(module, args.interpolate, rows, steps, args.seed, classes, ema, spherical,
                                     batch_size)
            kind = "spherical" if not args.lerp and gaussian_latent(module) else "linear"
            print(f"{out}: {rows} rows of {steps} steps, {kind} interpolation")
        elif args.codes is not None:
            paths = save_code_grids(module, args.codes, rows, steps, args.seed, ema, batch_size)
            print(f"{args.codes}: {', '.join(p.name for p in paths)}")
        else:
            paths = save_translations(module, args.translate, args.out, direction=args.direction or "a2b",
                                      targets=args.targets, from_hr=args.from_hr, ema=ema, seed=args.seed)
            print(f"{args.out}: {len(paths) // 2} images and their comparisons (<name>_compare.png)")
        print(f"from {path} (step {step}), the {which} generator, seed {args.seed}")
    except ConfigError as err:
        print(f"gansuite-sample: error: {err}", file=sys.stderr)
        sys.exit(2)


def _check_folder(folder: Path, option: str = "--folder") -> None:
    from gansuite.data.folders import IMAGE_SUFFIXES

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is a file; pass a new or empty folder.")
    if folder.is_dir():
        images = sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            # gansuite-eval reads every image under the folder: old ones would be measured with the new.
            raise ConfigError(f"{option} {folder} already holds {images} images; pass a new or empty folder "
                              "(old images would be mixed with the new).")
    check_writable(folder, option, folder=True)


if __name__ == "__main__":
    main()
