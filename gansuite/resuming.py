"""``resume=<run dir or .ckpt>``: the run is rebuilt from the config stored in its checkpoint.

A checkpoint holds the composed config it was trained with, so resuming needs no override retyped.
Overrides given with ``resume=`` apply on top where a value may change without changing what is
trained (how long, how often to log, evaluate and save, on which devices, where the data lies) or is
the remedy for a diverged run (gradient clipping);
any other override that differs from the stored run is refused, every such key named at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gansuite.errors import ConfigError

# Keys that may differ from the stored run: what is trained stays the same.
CHANGEABLE = (
    "trainer.max_steps", "trainer.log_every_n_steps", "trainer.checkpoint_every", "trainer.accelerator",
    "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.compile", "trainer.channels_last",
    "eval.every_n_steps", "eval.batch_size", "eval.cache_dir", "eval.download", "eval.inception_weights",
    "data.root", "data.download", "data.num_workers",
    # What the NaN guard advises for a run that diverged: resume from its last good checkpoint with clipping.
    "model.module.grad_clip", "model.module.loss_limit",
    "logger", "callbacks", "paths", "hydra", "resume", "name", "group", "tags", "model.init_generator",
)
# Never taken from the checkpoint: they describe this process (its folders), not the run.
OWN = ("paths", "hydra", "resume", "logger")


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _touched(overrides: list[str]) -> list[str]:
    """The config paths the command line set: a key, or a group's whole node (``experiment=`` sets all)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gansuite.keys import CONF_DIR

    paths = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if override.is_delete():
            paths.append(key)
        elif "/" in key or (CONF_DIR / key).is_dir():  # a config group
            paths.append("" if key.split("/")[0] == "experiment" else key.replace("/", "."))
        else:
            paths.append(key)
    return paths


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def resumed_config(cfg: DictConfig, overrides: list[str], stored: dict[str, Any], source: Path) -> DictConfig:
    """The config to resume with: ``stored`` (the checkpoint's), with the changeable overrides of ``cfg``."""
    composed = OmegaConf.to_container(cfg, resolve=True)
    now, then = _flat(composed), _flat(stored)
    touched = _touched(overrides)
    differing = sorted(
        key for key in now.keys() | then.keys()
        if not _under(key, CHANGEABLE) and any(p == "" or _under(key, (p,)) for p in touched)
        and key in now and now.get(key) != then.get(key)
    )
    if differing:
        shown = ", ".join(f"{k}={_show(now[k])} (run: {_show(then[k]) if k in then else 'not set'})"
                          for k in differing[:6])
        more = f" and {len(differing) - 6} more" if len(differing) > 6 else ""
        raise ConfigError(
            f"resume: {source} was trained with other values of {len(differing)} key(s): {shown}{more}; "
            "resume with only trainer.max_steps, logging, evaluation cadence, devices or data location "
            "overrides, or start a new run without resume=."
        )
    # Whole top-level nodes from the run (a node merged over this version's defaults would keep keys of another
    # model); a top-level key the checkpoint lacks (added to gansuite since) keeps this version's default.
    result = OmegaConf.create({k: v for k, v in composed.items() if k not in stored or k in OWN})
    for key, value in stored.items():
        if key not in OWN:
            result[key] = value
    fresh = OmegaConf.create(composed)
    for path in touched:
        for key in CHANGEABLE:
            if path == "" or _under(key, (path,)):
                target = key  # the command line set a group holding this key, or everything (experiment=)
            elif _under(path, (key,)):
                target = path  # the command line set this key, or a node, under a changeable one
            else:
                continue
            value = OmegaConf.select(fresh, target, default=_MISSING)
            if value is not _MISSING:
                OmegaConf.update(result, target, value, merge=False, force_add=True)
    OmegaConf.set_struct(result, True)
    return result


_MISSING = object()


def stored_config(path: Path) -> dict[str, Any]:
    """The composed config a gansuite checkpoint holds, read without loading its weights."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - read_checkpoint reports an unreadable file in one sentence
        from gansuite.checkpointing import read_checkpoint

        checkpoint = read_checkpoint(path)
    config = checkpoint.get("gansuite_config") if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"resume: {path} holds no gansuite config; pass a .ckpt written by gansuite-train.")
    return config


def resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``cfg`` for a run started with ``resume=``: the stored run's config with the allowed overrides applied.

    The stored config may come from someone else's checkpoint: every callable it names is checked against
    gansuite's allow-list before anything is built from it.
    """
    from gansuite.checkpointing import resolve_resume
    from gansuite.security import check_targets

    path = resolve_resume(cfg.resume)
    stored = stored_config(path)
    check_targets(stored, path, resumed=True)
    return resumed_config(cfg, overrides, stored, path)
