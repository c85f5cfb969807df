"""Config keys at the command line: Hydra's errors as one sentence, and keys that nothing reads refused.

Hydra refuses a misspelled key (``trainer.max_step=100``) with four lines and a hint to add it with
``+``; followed, that hint adds a key that no gansuite component reads, and the run goes on without
it. Here both become one sentence that names the nearest real key, with exit status 2 like every
other bad input.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gansuite.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# Keys gansuite reads with a default although no file under conf/ sets them: they may be added with +.
OPTIONAL_KEYS = frozenset({
    "trainer.compile", "trainer.channels_last", "trainer.num_nodes", "trainer.strategy",
    "model.conditional", "model.data_kind", "model.captions", "model.init_generator",
})
_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)


def _paths(node: Any, prefix: str) -> Iterable[str]:
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "defaults" and not prefix:
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path
        yield from _paths(value, path)


@cache
def known_keys(conf_dir: Path = CONF_DIR) -> frozenset[str]:
    """Every key that some file under ``conf/`` sets, at the place it lands in the composed config."""
    keys: set[str] = set(OPTIONAL_KEYS)
    for file in conf_dir.rglob("*.yaml"):
        group = file.parent.relative_to(conf_dir).as_posix()
        if group.split("/")[0] == "hydra":
            continue
        text = file.read_text()
        header = _PACKAGE.search(text.split("\n\n", 1)[0])
        package = header.group(1) if header else ("" if group == "." else group.replace("/", "."))
        package = "" if package == "_global_" else package.removeprefix("_global_.")
        if package == "_group_":
            package = group.replace("/", ".")
        node = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
        keys.update(_paths(node, package))
        if package:
            parts = package.split(".")
            keys.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return frozenset(keys)


def nearest(key: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``key`` (a misspelling of it), or None when nothing is close."""
    candidates = [c for c in candidates if not key.startswith(f"{c}.")]  # not the key's own parents
    leaf = key.rsplit(".", 1)[-1]
    # Compare the last part first: trainer.max_step against trainer.max_steps, not against every long key.
    by_leaf = difflib.get_close_matches(leaf, [c.rsplit(".", 1)[-1] for c in candidates], n=1, cutoff=0.6)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    if by_leaf:
        same_parent = [c for c in candidates if c.rsplit(".", 1)[-1] == by_leaf[0]
                       and (c.rsplit(".", 1)[0] if "." in c else "") == parent]
        if same_parent:
            return same_parent[0]
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.75)
    return match[0] if match else None


def _did_you_mean(key: str, candidates: Iterable[str]) -> str:
    near = nearest(key, candidates)
    return f"the nearest key is {near} (see every key with `gansuite-train --cfg job`)" if near else \
        "see every key with `gansuite-train --cfg job`"


def is_group(key: str) -> bool:
    """Whether an override's key names a config group (``model``, ``loss/regularizer``), not a config key."""
    return "/" in key or "@" in key or (CONF_DIR / key).is_dir()


def check_added_keys(cfg: DictConfig, overrides: Iterable[str]) -> None:
    """Refuse a key added with ``+``/``++`` that no component reads, naming the nearest real key.

    A key under a node with ``_target_`` is left to that class or function, whose signature decides
    (instantiating it with an unknown option fails with the key's name). Any other key must be one
    that a file under ``conf/`` sets, or one of :data:`OPTIONAL_KEYS`.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    added = [o for o in OverridesParser.create().parse_overrides(list(overrides)) if o.is_add() or o.is_force_add()]
    for override in added:
        key = override.key_or_group
        if is_group(key):
            continue  # a config group (+experiment=...), which Hydra has checked
        parent = OmegaConf.select(cfg, key.rsplit(".", 1)[0]) if "." in key else cfg
        if isinstance(parent, DictConfig) and "_target_" in parent:
            continue
        known = known_keys()
        if key in known or _under_free_node(key):
            continue
        raise ConfigError(f"{key} is not a key any gansuite component reads, so {override.input_line} would be "
                          f"ignored; {_did_you_mean(key, known)}.")


def _under_free_node(key: str) -> bool:
    """Whether ``key`` sits inside a node the user may fill freely: Hydra's own settings, or callbacks (each a
    ``_target_`` node, checked when it is built)."""
    return any(key.startswith(f"{prefix}.") for prefix in ("hydra", "callbacks"))


def hydra_sentence(err: BaseException) -> str | None:
    """One sentence for an error Hydra or OmegaConf raised while composing the config; None for others."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    cause = err.__cause__
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, option = err.missing_cfg_file.rpartition("/")
        near = difflib.get_close_matches(option, err.options, n=1, cutoff=0.5)
        hint = f"the nearest is {group}={near[0]}, and " if near else ""
        return (f"{group}={option} is not an option of the config group {group}; {hint}"
                f"the options are {', '.join(err.options)}.")
    if isinstance(err, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException):
        key = cause.full_key or ""
        parent = cause.parent_node
        if isinstance(parent, DictConfig) and key and "not in struct" in str(cause):
            prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            siblings = [f"{prefix}{k}" for k in parent.keys()]
            hint = ""
            if any(arg.startswith("resume=") for arg in sys.argv[1:]) and "." in key:
                hint = (f" (with resume=, a key of the run's own {key.split('.')[0]} option that the default one "
                        f"lacks is given as +{key}=...)")
            return f"{key} is not a key of the config{hint}; {_did_you_mean(key, siblings)}."
    if isinstance(err, ConfigCompositionException):
        already = re.search(r"An item is already at '([^']+)'", str(err))
        if already:
            key = already.group(1)
            return f"{key} is already in the config, so +{key}=... cannot add it; change it with {key}=... (no +)."
        return f"{_first_line(err).rstrip('.').replace('. ', ': ', 1)}; see every key with `gansuite-train --cfg job`."
    if isinstance(err, OverrideParseException):
        return (f"a command-line override could not be parsed ({_first_line(err).rstrip('.')}); quote values with "
                "special characters, e.g. 'data.root=\"/path with spaces\"' (grammar: "
                "https://hydra.cc/docs/advanced/override_grammar/basic/).")
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        where = f"{key}: " if key else ""
        return f"{where}{_first_line(err).rstrip('.')}; fix it on the command line (see `gansuite-train --cfg job`)."
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_VALUE_AT_HOME = re.compile(r"^([^=~\s][^=\s]*=)~(?=/|$)")


def expand_home(argv: list[str]) -> list[str]:
    """``data.root=~/celeba`` as ``data.root=/home/me/celeba``: the shell leaves ``~`` after ``=`` alone and
    Hydra's grammar refuses it."""
    home = os.path.expanduser("~")
    return [_VALUE_AT_HOME.sub(lambda m: m.group(1) + home, arg) for arg in argv]
