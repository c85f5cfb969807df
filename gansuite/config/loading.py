"""Trained modules rebuilt from their checkpoints, for ``gansuite-sample`` and ``gansuite-eval``.

The stored config is checked against the allow-list (:mod:`gansuite.config.security`) before anything
it names is built. Also the ``--device`` check both commands share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gansuite.config.renamed import current_targets
from gansuite.errors import ConfigError


def stored_config(checkpoint: dict[str, Any], path: Path) -> Any:
    """The config a checkpoint was trained with, once every callable it names is on the allow-list."""
    from omegaconf import OmegaConf

    from gansuite.config.security import check_targets

    stored = checkpoint.get("gansuite_config")
    if not stored:
        raise ConfigError(f"{path} holds no gansuite config; pass a checkpoint written by gansuite-train.")
    current_targets(stored)  # where the classes an older version named live now
    check_targets(stored, path)  # before anything the config names is called
    return OmegaConf.create(stored)


def built_module(cfg: Any, checkpoint: dict[str, Any], path: Path, tool: str, key: str = "") -> tuple[Any, Any]:
    """The data module and the trained module ``cfg`` builds, with the checkpoint's weights (``tool``: what the
    message says to do with the gansuite version that trained it, e.g. "sample"; ``key``: the option it names)."""
    from gansuite.config.build import build

    datamodule, module = build(cfg, training=False)
    check = getattr(module, "check_checkpoint", None)  # a family's own check (a text model's vocabulary) first
    if check is not None:
        check(checkpoint, path)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError:
        raise ConfigError(f"{key}{path} does not fit the model its own config builds (written by another gansuite "
                          f"version?); {tool} it with the gansuite version that trained it.") from None
    return datamodule, module


def load_module(source: str | Path, device: str = "cpu") -> tuple[Any, Any, Path, int | None]:
    """The trained module of a checkpoint or run directory, on ``device``.

    Returns (module, its config, the .ckpt path, its gansuite step).
    """
    from gansuite.training.checkpointing import read_checkpoint, resolve_resume

    # Errors name the checkpoint as what it is here: nothing is being resumed.
    path = resolve_resume(source, key="checkpoint")
    checkpoint = read_checkpoint(path, key="checkpoint")
    cfg = stored_config(checkpoint, path)
    _, module = built_module(cfg, checkpoint, path, "sample")
    return module.to(device).eval(), cfg, path, checkpoint.get("gansuite_step")


def check_device(name: str, option: str = "--device") -> str:
    """``name`` if it is a device this machine has, else one sentence naming ``option`` and the fix."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{option}: {name!r} is not a device; use {option} cpu or {option} cuda.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} {name}: no CUDA device is visible here; use {option} cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s); use "
                          f"{option} cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    return name
