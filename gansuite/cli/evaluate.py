"""``gansuite-eval``: the training run's evaluation, on a checkpoint or a folder of images.

    gansuite-eval outputs/2026-11-23/12-00-00                      # its checkpoints/last.ckpt
    gansuite-eval run/checkpoints/best.ckpt eval.num_samples=50000 --json fid50k.json
    gansuite-eval my_samples/ data=cifar10 eval.extractor=inception # a folder of PNGs vs CIFAR-10
    gansuite-eval --precompute data=cifar10 eval.extractor=inception
    gansuite-eval --compare a.json b.json

A checkpoint is evaluated with the config it was trained with (``key=value`` overrides on
top), so the numbers equal those its training run logged. A folder is evaluated against the
data of the composed config (``conf/train.yaml`` plus overrides such as ``data=cifar10``).

``gansuite-fetch-weights`` downloads every weight file the metrics need into the cache, so
a cluster's offline compute nodes can be prepared from a login node.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gansuite.errors import ConfigError
from gansuite.outputs import check_writable

log = logging.getLogger("gansuite")


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from gansuite.config.keys import CONF_DIR

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    except HydraException as err:
        raise ConfigError(f"{str(err).splitlines()[0].rstrip('.')}; check the overrides (see `gansuite-train --help`).") from None
    with open_dict(cfg):
        cfg.paths.output_dir = "."
    return cfg


def _checkpoint_config(checkpoint: dict[str, Any], overrides: list[str], path: Path) -> DictConfig:
    from gansuite.config.loading import stored_config

    cfg = stored_config(checkpoint, path)
    if "extractor" not in (cfg.get("eval") or {}):  # written without evaluation: take today's defaults
        with open_dict(cfg):
            cfg.eval = _compose([]).eval
    bad = [o for o in overrides if "=" not in o or "." not in o.split("=", 1)[0]]
    if bad:
        raise ConfigError(f"{bad[0]!r}: a checkpoint keeps its model and data; only key.path=value overrides "
                          "such as eval.num_samples=50000 apply.")
    with open_dict(cfg):
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))


def _device(name: str | None, cfg: DictConfig) -> str:
    from gansuite.training.run import eval_device

    return name or eval_device(cfg)


def evaluate_checkpoint(path: str | Path, overrides: list[str] = (), device: str | None = None, ema: bool = True):
    """Rebuild the run's module from ``path`` and evaluate it exactly as its training callback does."""
    from gansuite.config.loading import built_module
    from gansuite.training.checkpointing import read_checkpoint, resolve_resume
    from gansuite.training.run import make_evaluator

    # Errors name the checkpoint as what it is here: nothing is being resumed.
    path = resolve_resume(path, key="checkpoint")
    checkpoint = read_checkpoint(path, key="checkpoint")
    cfg = _checkpoint_config(checkpoint, list(overrides), path)
    datamodule, module = built_module(cfg, checkpoint, path, "evaluate", key="checkpoint: ")
    device = _device(device, cfg)  # the run's device, unless asked: the same numbers as its training
    module.to(device)
    evaluator = make_evaluator(cfg, datamodule, device=device)
    if evaluator is None and getattr(datamodule, "kind", None):
        raise ConfigError(f"eval: {cfg.data._target_} holds image pairs, measured during training by "
                          "callbacks.translation_metrics (eval/translation_step_*.json); for FID of the translations "
                          "pass eval.extractor=inception.")
    if evaluator is None:
        raise ConfigError(f"eval: nothing to measure for {cfg.data._target_} with eval.extractor={cfg.eval.extractor}; "
                          "2D runs get their mode metrics from callbacks.scatter_2d.")
    evaluator.prepare(module)
    result = evaluator.evaluate(module, step=checkpoint.get("gansuite_step"), ema=ema)
    generator = "raw" if module.sampling_generator(ema) is module.generator else "ema"  # --raw, or no EMA kept
    result.extra = {**result.extra, "checkpoint": str(path), "generator": generator}
    return result


def load_images(folder: str | Path, shape: tuple[int, ...], limit: int) -> torch.Tensor:
    """The first ``limit`` images of ``folder`` (sorted by name) as uint8 tensors of ``shape``."""
    from PIL import Image

    from gansuite.data.folders import IMAGE_SUFFIXES, UNREADABLE

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < limit:
        raise ConfigError(f"{folder} holds {len(files)} images but eval.num_samples is {limit}; "
                          f"write more samples or pass eval.num_samples={len(files)}.")
    channels, height, width = shape
    mode = {1: "L", 3: "RGB"}[channels]
    out = torch.empty(limit, channels, height, width, dtype=torch.uint8)
    for i, file in enumerate(files[:limit]):
        try:
            with Image.open(file) as image:
                size = image.size
                if size == (width, height):
                    array = torch.frombuffer(bytearray(image.convert(mode).tobytes()), dtype=torch.uint8)
        except UNREADABLE as err:
            # Not skipped: the measured set would silently differ from the samples that were written.
            raise ConfigError(f"{file} is not a readable image ({type(err).__name__}); write the samples again "
                              "or remove the file.") from None
        if size != (width, height):
            raise ConfigError(f"{file} is {size[0]}x{size[1]} but the data is {width}x{height}; "
                              "save samples at the data's resolution (gansuite does not resize them silently).")
        out[i] = array.view(height, width, channels).permute(2, 0, 1)
    return out


def evaluate_folder(folder: str | Path, overrides: list[str] = (), device: str | None = None):
    from gansuite.config.build import build_node
    from gansuite.training.run import make_evaluator

    cfg = _compose(list(overrides))
    datamodule = build_node("data", cfg.data)
    datamodule.check()
    evaluator = make_evaluator(cfg, datamodule, device=_device(device, cfg))
    if evaluator is None and getattr(datamodule, "kind", None):
        raise ConfigError(f"eval: {cfg.data._target_} holds image pairs, measured during training by "
                          "callbacks.translation_metrics (eval/translation_step_*.json); for FID of the translations "
                          "pass eval.extractor=inception.")
    if evaluator is None:
        raise ConfigError("eval: nothing to measure for 2D data; pick image data with data=...")
    images = load_images(folder, tuple(datamodule.shape), evaluator.num_samples)
    batches = (x.float().div(127.5).sub(1) for x in images.split(evaluator.batch_size))
    result = evaluator.evaluate_images(batches)
    result.extra = {"folder": str(Path(folder).resolve())}
    return result


def precompute(overrides: list[str] = (), device: str | None = None) -> None:
    from gansuite.config.build import build_node
    from gansuite.training.run import make_evaluator

    cfg = _compose(list(overrides))
    datamodule = build_node("data", cfg.data)
    datamodule.check()
    evaluator = make_evaluator(cfg, datamodule, device=_device(device, cfg))
    if evaluator is None or evaluator.reference is None:
        print(f"gansuite-eval: no reference features to compute for {datamodule.name}")
        return
    from gansuite.metrics.fidelity import reference_cache_file

    ref = evaluator.reference
    print(f"reference: {ref.key['dataset']} {ref.key['split']}, {ref.num_samples} images, {ref.key['extractor']}")
    print(f"cached in {reference_cache_file(Path(cfg.eval.cache_dir).expanduser(), ref.key)}")


def compare(path_a: str, path_b: str) -> int:
    """Print two results side by side, or why they cannot be compared (exit status 1)."""
    from gansuite.metrics.fidelity import protocol_differences
    from gansuite.metrics.results import EvalResult

    a, b = EvalResult.read_json(path_a), EvalResult.read_json(path_b)
    diffs = protocol_differences(a.protocol, b.protocol)
    if diffs:
        print(f"not comparable: the protocols differ in {len(diffs)} place(s):")
        for d in diffs:
            print(f"  {d}")
        return 1
    keys = [k for k in a.values if k in b.values]
    if not keys:
        print("not comparable: the two results share no metric")
        return 1
    width = max(len(k) for k in keys)
    print(f"{'metric':<{width}}  {'A':>12}  {'B':>12}  {'B - A':>12}")
    for k in keys:
        print(f"{k:<{width}}  {a.values[k]:>12.6g}  {b.values[k]:>12.6g}  {b.values[k] - a.values[k]:>+12.6g}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gansuite-eval",
        description="FID / IS / KID / precision-recall (and domain-classifier metrics) of a checkpoint or a "
                    "folder of images, with the protocol recorded.",
    )
    parser.add_argument("source", nargs="?", help="a .ckpt, a run directory, or a folder of images")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. eval.num_samples=50000")
    parser.add_argument("--json", help="write the result here (default for a checkpoint: <checkpoint>.eval.json, "
                                       "with --raw <checkpoint>.raw.eval.json)")
    parser.add_argument("--device", help="cpu or cuda (default: the run's trainer.accelerator; cpu for trainer=cpu)")
    parser.add_argument("--raw", action="store_true", help="evaluate the raw generator, not its EMA")
    parser.add_argument("--precompute", action="store_true", help="only compute and cache the reference features")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two result JSONs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.device is not None:
            from gansuite.config.loading import check_device

            check_device(args.device)
        if args.compare:
            sys.exit(compare(*args.compare))
        if args.precompute:
            precompute([args.source, *args.overrides] if args.source else args.overrides, args.device)
            return
        if not args.source:
            parser.error("pass a checkpoint, a run directory or an image folder (or --precompute / --compare)")
        source = Path(args.source)
        if not source.exists():
            raise ConfigError(f"source: {source} does not exist; pass a .ckpt file, a gansuite run directory or a "
                              "folder of images.")
        is_folder = source.is_dir() and not (source / "checkpoints").is_dir()
        if not is_folder:
            from gansuite.training.checkpointing import resolve_resume

            source = resolve_resume(source, key="checkpoint")
        # --raw has a file of its own by default: it must not overwrite the EMA's result beside it.
        out = args.json if is_folder else args.json or source.with_suffix(".raw.eval.json" if args.raw else ".eval.json")
        if out:  # before the evaluation, which may take minutes: its result must have somewhere to go
            check_writable(Path(out), "--json")
        if is_folder:
            result = evaluate_folder(source, args.overrides, args.device)
        else:
            result = evaluate_checkpoint(source, args.overrides, args.device, ema=not args.raw)
        print(result.table())
        if out:
            print(f"written to {result.write_json(out)}")
    except ConfigError as err:
        print(f"gansuite-eval: error: {err}", file=sys.stderr)
        sys.exit(2)


def fetch_main(argv: list[str] | None = None) -> None:
    """``gansuite-fetch-weights``: download the extractor weights the metrics need, into the cache."""
    from gansuite.metrics.inception import INCEPTION_FILE, fetch_inception_weights, inception_cache_path

    # One parser per command, alike in shape (prog, description, options) and in nothing else.
    parser = argparse.ArgumentParser(
        prog="gansuite-fetch-weights",
        description="Download the Inception-v3 weights that FID / IS / KID / precision-recall use into torch hub's "
                    "cache ($TORCH_HOME/hub/checkpoints), or into --dest. Run it where there is network; "
                    "share the cache (or pass eval.inception_weights=PATH) on nodes without.",
    )
    parser.add_argument("--dest", help=f"a folder to put {INCEPTION_FILE} in instead of the cache")
    args = parser.parse_args(argv)
    target = Path(args.dest) / INCEPTION_FILE if args.dest else inception_cache_path()
    try:
        path = fetch_inception_weights(target)
    except ConfigError as err:
        print(f"gansuite-fetch-weights: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{path} ready")


if __name__ == "__main__":
    main()
