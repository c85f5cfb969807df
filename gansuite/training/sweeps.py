"""What a Hydra sweep optimises: one number per run, taken from the run's own evaluation.

``gansuite-train`` returns :func:`objective` of the run it trained; Hydra hands that value to the
sweeper. The Optuna sweeper (``hydra/sweeper=optuna_fid``, ``sweeps/optuna_fid.yaml``) minimises it;
the basic grid sweeper ignores it. The sweep files themselves are under ``sweeps/`` and
``conf/hydra/``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["in_multirun", "objective"]


def objective(result: Mapping[str, Any] | None) -> float:
    """The value a sweeper minimises for one run: its best value of the metric ``eval.keep_best`` keeps.

    That is the run's best FID by default: the value of ``checkpoints/best.ckpt``, logged as
    ``best/<key>`` (``best/fid_clf_10k``) and written to ``checkpoints/best.json``; a resumed run
    counts the best values it carried over. A metric where higher is better (``eval.keep_best=is``)
    is returned negated, so the sweeper always minimises (``hydra.sweeper.direction: minimize``).

    Args:
        result: what :func:`gansuite.training.run.train` returned, or None for a run that diverged.

    Returns:
        ``inf`` when the run has no such value: it diverged, or measured nothing (``eval=none``, 2D
        data, ``eval.keep_best=null``, stopped before its first evaluation). Optuna takes it as the
        worst possible trial, so its sampler learns to avoid that region, and goes on with the next
        trial. (A NaN would stop the whole Optuna sweep: hydra-optuna-sweeper 1.3.0 with optuna 2.10 fails
        to record it as a failed trial.)
    """
    from gansuite.metrics.eval_callback import EvalCallback
    from gansuite.metrics.results import HIGHER_IS_BETTER, short_name

    if result is None:
        return math.inf
    callbacks = getattr(result.get("trainer"), "callbacks", None) or []
    callback = next((c for c in callbacks if isinstance(c, EvalCallback)), None)
    if callback is None or callback.monitor is None:
        return math.inf
    best = callback.best.get(callback.monitor)  # only rank 0 measures: inf on the other ranks
    if best is None or not math.isfinite(best["value"]):
        return math.inf
    return -float(best["value"]) if short_name(callback.monitor) in HIGHER_IS_BETTER else float(best["value"])


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``gansuite-train -m``): a sweep's trial."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
