"""Schemas of the config groups that no class signature checks: the trainer, the evaluation, the run itself.

A group built with ``hydra.utils.instantiate`` (data, model, loss) is checked by the signature of the
class it names. ``trainer``, ``eval`` and the top-level keys are read by gansuite directly, so their keys
and value types are written down here as dataclasses, and the composed config is checked against them
at the edge (:func:`check`), before anything is built: ``trainer.max_steps=abc`` or ``seed=1.5`` is one
sentence naming the key and the type it takes. Ranges (positive counts, Adam's betas below 1) are
checked by :mod:`gansuite.config.validate`, which a type cannot say.

The schemas are not Hydra's structured-config base of the group files: a group file of the user's own
(through ``hydra.searchpath``) keeps working as a plain YAML file.
"""

# No `from __future__ import annotations`: OmegaConf reads the field types at run time.

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from gansuite.errors import ConfigError


@dataclass
class TrainerSchema:
    """``conf/trainer/*.yaml``: devices, precision and the length of a run."""

    max_steps: int = 3000  # gansuite steps (generator updates)
    accelerator: str = "cpu"
    devices: Any = 1  # a count, "auto", or a list of device indices
    precision: Any = "32-true"  # Lightning's precision names, or 16 / 32
    deterministic: bool = False
    log_every_n_steps: int = 10
    checkpoint_every: int = 500
    num_nodes: int = 1
    strategy: Any = "auto"  # or a node naming gansuite.training.distributed.GANDDPStrategy
    channels_last: bool = False
    compile: Any = False  # true, or a dict of torch.compile options
    threads: int | None = None


@dataclass
class EvalSchema:
    """``conf/eval/default.yaml``: what the evaluation measures, how often, and with what protocol."""

    extractor: str = "auto"
    metrics: list[str] = field(default_factory=lambda: ["fid", "is", "kid", "prc"])
    every_n_steps: int = 1000
    num_samples: int = 10000
    num_real: int | None = None
    reference_split: str = "train"
    batch_size: int = 250
    seed: int = 0
    precision: str = "exact"
    keep_best: str | None = "auto"
    inception_weights: str | None = None
    download: bool = True
    cache_dir: str | None = None
    cas_per_class: int | None = None
    aug_real_per_class: list[int] = field(default_factory=lambda: [10, 50, 100])


@dataclass
class RunSchema:
    """The top-level keys of ``conf/train.yaml`` that are not groups."""

    name: str = "run"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    seed: int = 0
    resume: str | None = None


# Where each schema applies: "" is the top level, which is checked on the schema's own keys only.
SCHEMAS: dict[str, type] = {"trainer": TrainerSchema, "eval": EvalSchema, "": RunSchema}

_WORDS = {int: "an integer", bool: "true or false", str: "a string", float: "a number"}


def _expected(schema: type, name: str) -> str:
    """What a field takes, in words: ``an integer``, ``a list of strings``, ``an integer or null``."""
    kind = {f.name: f.type for f in dataclasses.fields(schema)}[name]
    optional = type(None) in typing.get_args(kind)
    if optional:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is list:
        words = f"a list of {_WORDS[typing.get_args(kind)[0]].split(' ', 1)[1]}s"
    else:
        words = _WORDS.get(kind, "a value")
    return f"{words} or null" if optional else words


def check(cfg: DictConfig) -> None:
    """Raise one sentence when a value of ``cfg`` has the wrong type for its schema, or a schema's group
    holds a key that nothing reads."""
    for group, schema in SCHEMAS.items():
        node = OmegaConf.select(cfg, group) if group else cfg
        if not isinstance(node, DictConfig):
            continue  # eval=none
        names = {f.name for f in dataclasses.fields(schema)}
        values = {k: node._get_node(k) for k in node if not group and k in names} if not group else node
        prefix = f"{group}." if group else ""
        try:
            OmegaConf.merge(OmegaConf.structured(schema), values)
        except ConfigKeyError as err:
            key = f"{prefix}{err.key}"
            raise ConfigError(f"{key} is not a key gansuite reads; remove it (its keys: "
                              f"{', '.join(sorted(names))}).") from None
        except ValidationError as err:
            # An element of a list field (eval.aug_real_per_class=[a]) is reported by its index: name the field.
            name = str(err.full_key).split("[", 1)[0].split(".", 1)[0] if err.full_key else str(err.key)
            key = f"{prefix}{name}"
            value = OmegaConf.select(node, name) if group else node._get_node(name)._value()
            raise ConfigError(f"{key} must be {_expected(schema, name)} (got {value!r}); fix the value of {key} "
                              "(see `gansuite-train --cfg job`).") from None
