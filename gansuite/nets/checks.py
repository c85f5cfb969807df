"""Argument checks the networks share: one sentence naming the config key and the fix, as a ConfigError."""

from __future__ import annotations

from gansuite.errors import ConfigError


def check_int(value: object, key: str, minimum: int, hint: str) -> int:
    """``value`` if it is an integer >= ``minimum`` (not a bool); ``hint`` ends the sentence (the papers' value)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum} (got {value!r}); {hint}")
    return value


def check_classes(num_classes: object, key: str) -> int | None:
    """``num_classes`` if it is None (unconditional) or an integer >= 2 (from the data)."""
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 2):
        raise ConfigError(f"{key}: num_classes must be null (unconditional) or an integer >= 2 "
                          f"(got {num_classes!r}); train a conditional model on labelled data such as data=cifar10.")
    return num_classes
