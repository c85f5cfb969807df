"""Value checks on the composed config that Hydra cannot make, each failing with one sentence naming its key.

Types of the keys gansuite reads directly come from their schemas (:mod:`gansuite.config.schema`); here:
positive rates, sizes and counts, ``ema_decay`` in [0, 1), optimizer betas in [0, 1), and a CUDA
accelerator only where torch sees a GPU: checked before anything is built, so a bad value fails at
start-up, not at the first step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from gansuite.config.schema import check as check_schemas
from gansuite.errors import ConfigError


def _positive(cfg: DictConfig, key: str, integer: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{key} must be {kind} (got {value!r}); set {key}=<{kind.split()[-1]}> on the command line.")


def validate(cfg: DictConfig) -> None:
    """Value checks that Hydra's composition cannot make, each failing with one sentence: the types of the
    trainer, evaluation and run keys (their schemas), then the ranges no type can say."""
    check_schemas(cfg)
    for key in ("model.g_optimizer.lr", "model.d_optimizer.lr", "model.module.grad_clip"):
        _positive(cfg, key)
    for key in ("trainer.max_steps", "trainer.checkpoint_every", "trainer.log_every_n_steps", "data.batch_size",
                "trainer.threads", "eval.cas_per_class",
                "loss.n_critic", "loss.regularizer.every", "model.latent_dim"):
        _positive(cfg, key, integer=True)
    decay = OmegaConf.select(cfg, "model.module.ema_decay")
    if decay is not None and not (isinstance(decay, (int, float)) and 0.0 <= decay < 1.0):
        raise ConfigError(f"model.module.ema_decay must be in [0, 1) (got {decay!r}); use 0.999, or null for no EMA.")
    for net in ("g", "d"):
        key = f"model.{net}_optimizer.betas"
        betas = OmegaConf.select(cfg, key)
        if betas is not None and not (
            isinstance(betas, ListConfig) and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ConfigError(f"{key} must be two numbers in [0, 1) (got {_plain(betas)}); set {key}=[0.5,0.999].")
    for node in ("model.generator", "model.discriminator"):
        for name, value in (OmegaConf.select(cfg, node) or {}).items():
            if name.endswith(_SIZE_OPTIONS) and value is not None and not _is_positive_int(value):
                raise ConfigError(f"{node}.{name} must be a positive integer (got {value!r}); "
                                  f"set {node}.{name} to a positive integer.")
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but torch sees no CUDA GPU on this machine; "
                          "run with trainer=cpu here, or on a machine with a GPU and a CUDA build of torch.")


# Network options that count something (channels, blocks, latent sizes): zero would build empty layers.
_SIZE_OPTIONS = ("width", "latent_dim", "blocks", "pieces", "depth", "channels", "levels")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
