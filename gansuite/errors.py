"""Errors a user can fix from the command line.

A ``ConfigError`` message is one sentence that names the config key and the fix;
``gansuite-train`` prints it on one line and exits non-zero, without a traceback.
"""


class ConfigError(ValueError):
    """A bad configuration value or combination, reported as one sentence."""


class NonFiniteLossError(RuntimeError):
    """A loss or the weights became NaN or infinite; training stops, and no checkpoint holds such weights."""


class DiskFullError(OSError):
    """A checkpoint could not be written because its disk is full; the checkpoints already written are kept."""
