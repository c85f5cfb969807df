"""What a config read from a checkpoint may name: gansuite's own classes and functions, and a few torch ones.

A checkpoint carries the config it was trained with, and ``gansuite-sample`` / ``gansuite-eval`` rebuild the
model from it with ``hydra.utils.instantiate``, which calls whatever ``_target_`` names (Hydra has no blocklist).
A checkpoint may come from someone else, so before anything is built:

- no string in the config may hold an interpolation (``${...}``): gansuite stores configs resolved, and an
  interpolation or resolver could pull a ``_target_`` into a built group from anywhere;
- every ``_target_`` under the groups that get built (``data``, ``model``, ``loss``, ``text_encoder``) must be a
  class of a module that defines data, networks or losses, a gansuite loss or regularizer function, or a listed
  torch callable.

Anything else is refused in one sentence naming the key. Classes of other gansuite modules are not allowed:
``gansuite.metrics.inception.InceptionExtractor``, for one, hands its weights file to a pickle loader.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterator
from typing import Any

from gansuite.errors import ConfigError

# The callables outside gansuite that its configs name (conf/**/*.yaml), and close relatives a preset may use.
ALLOWED = frozenset({
    "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop",
    "torch.optim.lr_scheduler.LinearLR", "torch.optim.lr_scheduler.MultiStepLR", "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.ExponentialLR", "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.nn.L1Loss", "torch.nn.MSELoss",
    "lightning.pytorch.loggers.WandbLogger", "lightning.pytorch.loggers.CSVLogger",  # a resumed run's logger
})
# Functions are allowed only where configs name them: loss functions, regularizers and these factories. A
# class defined in a gansuite module may be named anywhere (its constructor builds a network, data or a loss).
FUNCTION_MODULES = ("gansuite.losses", "gansuite.regularizers")
FUNCTIONS = frozenset({"gansuite.models.cyclegan.linear_decay_over", "gansuite.models.lapgan.make_optimizer",
                       "gansuite.nets.srresnet.content_loss"})
BUILT_GROUPS = ("data", "model", "loss", "text_encoder", "augment")
CLASS_MODULES = ("gansuite.data.", "gansuite.nets.", "gansuite.models.", "gansuite.losses", "gansuite.regularizers",
                 "gansuite.augment.")
RESUMED_GROUPS = ("callbacks", "trainer", "logger")
RESUMED_CLASS_MODULES = ("gansuite.training.callbacks", "gansuite.training.progress", "gansuite.training.translation",
                         "gansuite.training.anomaly", "gansuite.training.captions",
                         "gansuite.training.distributed")
COMPILE_OPTIONS = frozenset({"mode", "dynamic", "fullgraph"})


def _leaves(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value in a nested config, dict keys included as values of their parent."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield key, name
            yield from _leaves(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{key}[{i}]")
    else:
        yield key, node


def trusted_modules() -> tuple[str, ...]:
    """Packages of the user's own families and data whose classes a checkpoint may name:
    ``GANSUITE_TRUSTED_MODULES=mygan,lab.gans`` (their functions stay refused)."""
    names = os.environ.get("GANSUITE_TRUSTED_MODULES", "")
    return tuple(m.strip() for m in names.split(",") if m.strip())


def is_allowed(target: Any, class_modules: tuple[str, ...] = CLASS_MODULES) -> bool:
    """A listed torch callable or gansuite function, or a class defined in the gansuite module that names it."""
    if not isinstance(target, str):
        return False
    if target in ALLOWED:
        return True
    module_name, _, attribute = target.rpartition(".")
    trusted = trusted_modules()
    if any(module_name == m or module_name.startswith(f"{m}.") for m in trusted):
        class_modules = trusted + tuple(f"{m}." for m in trusted)  # a user's own package: its classes only
    elif not module_name.startswith("gansuite.") and module_name != "gansuite":
        return False
    try:
        module = importlib.import_module(module_name)  # only gansuite's own modules get imported here
    except ImportError:
        return False
    obj = getattr(module, attribute, None)
    if getattr(obj, "__module__", "") != module_name:
        return False  # imported into that module from elsewhere (gansuite.config.build.instantiate, an os function)
    if inspect.isfunction(obj):
        return module_name in FUNCTION_MODULES or target in FUNCTIONS
    return inspect.isclass(obj) and any(module_name == m or (m.endswith(".") and module_name.startswith(m))
                                        for m in class_modules)


def check_targets(config: dict[str, Any], source: Any, resumed: bool = False) -> None:
    """Refuse a checkpoint's config that names a callable outside the allow-list, before anything is built.

    A resumed run also builds its callbacks and its trainer's strategy from the stored config: ``resumed``
    checks those groups too, with gansuite's callback and strategy classes allowed there.
    """
    if resumed:
        # torch.compile options reach inductor's settings, one of which names the C++ compiler it runs.
        options = (config.get("trainer") or {}).get("compile") if isinstance(config.get("trainer"), dict) else None
        if isinstance(options, dict) and not set(options) <= COMPILE_OPTIONS:
            raise ConfigError(f"{source}: its config sets trainer.compile options {sorted(set(options) - COMPILE_OPTIONS)}, "
                              f"which a resumed run takes only from the command line; resume with "
                              f"trainer.compile=true, or options among {sorted(COMPILE_OPTIONS)}.")
    groups = BUILT_GROUPS + (RESUMED_GROUPS if resumed else ())
    class_modules = CLASS_MODULES + (RESUMED_CLASS_MODULES if resumed else ())
    leaves = list(_leaves(config))
    for key, value in leaves:
        if isinstance(value, str) and "${" in value:
            raise ConfigError(f"{source}: its config holds an interpolation at {key or 'a key'} ({value[:60]!r}), "
                              "which a config written by gansuite-train never does; use a checkpoint written by "
                              "gansuite-train.")
    for key, target in leaves:
        if key.endswith("._target_") and key.split(".", 1)[0].split("[", 1)[0] in groups:
            if not is_allowed(target, class_modules):
                raise ConfigError(f"{source}: its config names {key}={target!r}, which gansuite does not allow a "
                                  "checkpoint to call; use a checkpoint written by gansuite-train from gansuite's "
                                  "own configs (classes of your own package: README, GANSUITE_TRUSTED_MODULES).")
