"""The ``gansuite-train`` command line: Hydra's entry point, with every bad input reported as one sentence.

A bad input exits with status 2, a full disk or a diverged run with 1, a signal with 128 + its number;
in a sweep a diverged run scores the worst instead of ending the sweep. Hydra composes the config here;
its keys are checked (:mod:`gansuite.config.keys`) and a ``resume=`` run's config rebuilt
(:mod:`gansuite.config.resuming`) here too; then :func:`gansuite.training.run.train` validates it, builds
the data and model (:mod:`gansuite.config.build`) and trains.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Any

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from gansuite.config.keys import CONF_DIR, check_added_keys, expand_home, hydra_sentence
from gansuite.config.resuming import resume_config
from gansuite.errors import ConfigError, DiskFullError, NonFiniteLossError
from gansuite.history import HISTORY
from gansuite.training.checkpointing import disk_full
from gansuite.training.run import train


def main() -> Any:
    """``gansuite-train``: Hydra's command line, with every bad input (Hydra's own errors included) reported
    as one sentence and exit status 2."""
    sys.argv[1:] = expand_home(sys.argv[1:])
    import hydra._internal.utils as hydra_utils

    # Hydra reports its errors (and the task's uncaught ones) through run_and_report, which prints several
    # lines and exits 1. Its composition errors go through one_sentence first; everything else as before.
    report = hydra_utils.run_and_report
    hydra_utils.run_and_report = lambda func: report(lambda: _one_sentence(func))
    try:
        return _hydra_main()
    finally:
        hydra_utils.run_and_report = report


def _one_sentence(func: Any) -> Any:
    try:
        return func()
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(err, ConfigError):
            sentence = str(err)
        elif isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            sentence = (f"{err.filename or 'a file'}: {err.strerror}; point hydra.run.dir (outputs), data.root (data) "
                        "or paths.cache_dir (caches) at a folder this user can write to.")
        else:
            sentence = hydra_sentence(err)
        if sentence is None:
            raise
        print(f"gansuite-train: error: {sentence}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    """Train one run; return what a sweeper minimises (gansuite.training.sweeps.objective: the best FID, inf if none)."""
    from hydra.core.hydra_config import HydraConfig

    from gansuite.training.sweeps import in_multirun, objective

    try:
        overrides = list(HydraConfig.get().overrides.task)
        check_added_keys(cfg, overrides)
        composed_from = {"config_name": HydraConfig.get().job.config_name, "overrides": overrides}
        if cfg.get("resume"):
            cfg, composed_from = resume_config(cfg, overrides)
        result = train(cfg, composed_from=composed_from)
    except ConfigError as err:
        _fail(f"error: {err}", 2)
    except DiskFullError as err:
        _fail(f"stopped: {err.strerror}.", 1)
    except OSError as err:
        # The disk can fill outside a checkpoint save too (a grid, a log), or again while Lightning closes the
        # loggers after a DiskFullError.
        if not disk_full(err):
            HISTORY.exception("failed")
            raise
        _fail(f"stopped: the disk is full (no space left on device) at {err.filename or 'a write'}; the checkpoints "
              f"already written are kept: free some space, then resume with resume={cfg.paths.output_dir}.", 1)
    except OmegaConfBaseException as err:  # a key the code reads that this config lacks (one written by hand)
        _fail(f"error: {hydra_sentence(err)}", 2)
    except NonFiniteLossError as err:
        _fail(f"stopped: {err}", None if in_multirun() else 1)
        return objective(None)  # one diverged trial must not end a sweep (SystemExit would): it scores the worst
    except Exception:
        HISTORY.exception("failed")  # a bug's traceback in train.log too, not only on the terminal
        raise
    if result["stopped"]:
        # The shell's code for "ended by this signal" (130 for Ctrl-C, 143 for SIGTERM); the run itself was saved.
        sys.exit(128 + int(result["signal"] or signal.SIGINT))
    return objective(result)


def _fail(message: str, status: int | None) -> None:
    """Print ``message`` as gansuite-train's one line, write it to train.log, and exit with ``status`` (if any)."""
    print(f"gansuite-train: {message}", file=sys.stderr)
    HISTORY.error(message)
    if status is not None:
        sys.exit(status)


if __name__ == "__main__":
    main()
