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

from gansuite.config.renamed import current_targets
from gansuite.errors import ConfigError

# Keys that may differ from the stored run: what is trained stays the same.
CHANGEABLE = (
    "trainer.max_steps", "trainer.log_every_n_steps", "trainer.checkpoint_every", "trainer.accelerator",
    "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.compile", "trainer.channels_last",
    "trainer.threads", "eval", "data.root", "data.download", "data.num_workers",
    # What the NaN guard advises for a run that diverged: resume from its last good checkpoint with clipping.
    "model.module.grad_clip", "model.module.loss_limit",
    "logger", "callbacks", "paths", "hydra", "resume", "name", "group", "tags", "model.init_generator",
)
# Never taken from the checkpoint: they describe this process (its folders), not the run.
OWN = ("paths", "hydra", "resume")
_CHANGEABLE_TEXT = ("trainer.max_steps, logging, evaluation, checkpoint cadence, devices, threads, data location or "
                    "model.module.grad_clip")


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _touched(overrides: list[str]) -> list[tuple[str, bool]]:
    """The config path each command-line override sets, and whether it picks a group (whose whole node it sets;
    ``experiment=`` sets everything: path "")."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gansuite.config.keys import is_group

    touched = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        group = not override.is_delete() and is_group(key)
        path = key.split("@", 1)[0].replace("/", ".")
        touched.append(("" if group and path.split(".")[0] == "experiment" else path, group))
    return touched


def _key(override: str) -> str:
    """The dotted key or group path an override sets (``trainer.devices``, ``loss.regularizer``)."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0].replace("/", ".")


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def _differing(now: dict[str, Any], then: dict[str, Any], touched: list[str]) -> list[str]:
    """Keys the command line set (or deleted) to something other than the run's value, that may not change."""
    keys = (now.keys() | then.keys())
    return sorted(key for key in keys
                  if not _under(key, CHANGEABLE) and any(p == "" or _under(key, (p,)) for p in touched)
                  and (key in now or key in then) and now.get(key, _MISSING) != then.get(key, _MISSING))


def resumed_config(cfg: DictConfig, overrides: list[str], stored: dict[str, Any], source: Path,
                   composed_from: dict[str, Any] | None = None, compose: Any = None) -> DictConfig:
    """The config to resume with (unresolved): the stored run, with the changeable overrides of ``cfg`` applied.

    With ``composed_from`` (the primary config and overrides the run was composed from, in checkpoints
    written since gansuite stores them) and ``compose`` (Hydra's compose in this app), the run is composed
    again from them plus this command line: values that follow others (a learning-rate schedule's length
    from ``trainer.max_steps``, the logger's name) follow them still, and keys gansuite added since get their
    defaults. Wherever this version composes the run differently than the checkpoint says, the
    checkpoint's value wins. Otherwise the stored config is taken as it is.
    """
    composed = OmegaConf.to_container(cfg, resolve=True)
    now, then = _flat(composed), _flat(stored)
    picked = _touched(overrides)
    touched = [path for path, _ in picked]
    differing = _differing(now, then, touched)
    if differing:
        shown = ", ".join(f"{k}={_show(now[k]) if k in now else 'deleted'} "
                          f"(run: {_show(then[k]) if k in then else 'not set'})" for k in differing[:6])
        more = f" and {len(differing) - 6} more" if len(differing) > 6 else ""
        raise ConfigError(
            f"resume: {source} was trained with other values of {len(differing)} key(s): {shown}{more}; "
            f"resume with only {_CHANGEABLE_TEXT} overrides, or start a new run without resume=."
        )
    result = _recomposed(composed_from, overrides, then, picked, compose) if composed_from and compose else None
    if result is None:
        return _overlaid(composed, stored, touched)
    OmegaConf.update(result, "resume", composed.get("resume"), merge=False, force_add=True)
    return result


def _recomposed(composed_from: dict[str, Any], overrides: list[str], then: dict[str, Any],
                picked: list[tuple[str, bool]], compose: Any) -> DictConfig | None:
    """The run composed again from its own overrides plus this command line's; None if that cannot be done."""
    run_overrides = composed_from.get("overrides")
    name = composed_from.get("config_name")
    if not isinstance(run_overrides, list) or not all(isinstance(o, str) for o in run_overrides) or not name:
        return None
    # A group the command line picks again (trainer=cpu for a trainer=ddp run) takes its own values: the run's
    # overrides inside that group (trainer.devices=2) are dropped with the run's choice of it.
    groups = [path for path, group in picked if group and path]
    touched = [path for path, _ in picked]
    run_overrides = [o for o in run_overrides if not any(_key(o) == g or _key(o).startswith(f"{g}.") for g in groups)]
    try:
        base = OmegaConf.to_container(compose(name, run_overrides), resolve=True)
        # A key of the run's own group that the default group lacks came as +key=... (data.root of an image
        # folder run, when the default data has no root): in the run's composition it is a plain override.
        mine = [o[1:] if o.startswith("+") and not o.startswith("++") else o for o in overrides
                if not o.startswith("resume=")]
        result = compose(name, run_overrides + mine)
    except Exception:  # noqa: BLE001 - another primary config, a search path not given again: take the stored one
        return None
    composed_now = _flat(base)
    old_dir = then.get("paths.output_dir")
    for key, value in then.items():
        if _under(key, OWN) or (_under(key, CHANGEABLE) and any(p == "" or _under(key, (p,)) for p in touched)):
            continue
        if isinstance(old_dir, str) and isinstance(value, str) and value.startswith(old_dir):
            continue  # inside the stored run's folder (a logger's save_dir): this run writes into its own
        if key in composed_now:
            if composed_now[key] == value:
                continue  # as the run had it (a value following a changed one follows it still)
        elif not any(k.startswith(f"{key}.") for k in composed_now):
            continue  # a key this version no longer has
        OmegaConf.update(result, key, value, merge=False, force_add=True)  # this version composes it otherwise
    return result


def _overlaid(composed: dict[str, Any], stored: dict[str, Any], touched: list[str]) -> DictConfig:
    """The stored (resolved) config, with this command line's changeable overrides and this process's folders."""
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
            elif path == target:
                OmegaConf.update(result, target, None, merge=False, force_add=True)  # ~key: deleted
    return result


_MISSING = object()


def stored_checkpoint(path: Path) -> dict[str, Any]:
    """A gansuite checkpoint memory-mapped (its weights are not read), checked to hold its composed config."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - read_checkpoint reports an unreadable file in one sentence
        from gansuite.training.checkpointing import read_checkpoint

        checkpoint = read_checkpoint(path)
    config = checkpoint.get("gansuite_config") if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"resume: {path} holds no gansuite config; pass a .ckpt written by gansuite-train.")
    current_targets(config)
    return checkpoint


def resume_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, dict[str, Any] | None]:
    """``cfg`` for a run started with ``resume=``, and what to record it was composed from.

    The stored config may come from someone else's checkpoint: the config the resumed run is built from,
    resolved, must name only callables on gansuite's allow-list (``gansuite.config.security``).
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from gansuite.config.security import check_targets
    from gansuite.training.checkpointing import resolve_resume

    path = resolve_resume(cfg.resume)
    checkpoint = stored_checkpoint(path)
    stored = checkpoint["gansuite_config"]
    check_targets(stored, path, resumed=True)
    composed_from = checkpoint.get("gansuite_composed_from")
    config_name = HydraConfig.get().job.config_name
    if not isinstance(composed_from, dict) or composed_from.get("config_name") != config_name:
        composed_from = None
    result = resumed_config(cfg, overrides, stored, path, composed_from,
                            lambda name, o: compose(config_name=name, overrides=o))
    try:
        resolved = OmegaConf.to_container(result, resolve=True)
    except Exception as err:  # noqa: BLE001 - an interpolation that cannot be resolved any more
        raise ConfigError(f"resume: the config of {path} cannot be resolved ({str(err).splitlines()[0]}); "
                          "start a new run without resume=.") from None
    check_targets({k: v for k, v in resolved.items() if k not in OWN}, path, resumed=True)
    final = OmegaConf.create(resolved)
    OmegaConf.set_struct(final, True)
    run = list(composed_from["overrides"]) if composed_from else None
    again = {"config_name": config_name,
             "overrides": run + [o for o in overrides if not o.startswith("resume=")]} if run is not None else None
    return final, again
