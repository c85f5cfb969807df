"""A run's history, whatever its logger: lines in its train.log and rows of its history.csv.

The training step (:mod:`gansuite.models.losswatch`), the evaluation and the callbacks record here;
``gansuite-compare`` reads history.csv back (:mod:`gansuite.training.runs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# A run's history in its train.log: the logged losses, every evaluation, the end and any error. Hydra's logging
# config (conf/hydra/job_logging/gansuite.yaml) sends this logger to the file alone; the console has the
# progress bar for the losses.
HISTORY = logging.getLogger("gansuite.history")


HISTORY_CSV = "history.csv"


def run_folder(module: Any) -> Path | None:
    """Where a module's history.csv goes: its run's folder, which ``gansuite-train`` sets (``history_dir``), or
    None for a module trained by some other Trainer (a notebook, a test), which then writes train.log lines only."""
    return getattr(module, "history_dir", None)


def record(step: int, values: Mapping[str, float], folder: str | os.PathLike | None = None) -> None:
    """One line of history in train.log (``step 500: train/d_loss=1.2034 train/g_loss=0.8123``) and, given the run's
    folder, its numbers as rows ``step,key,value`` of ``history.csv`` there, whatever the logger: what
    ``gansuite-compare`` reads (W&B's own run file has no reader outside W&B's service)."""
    if not values:
        return
    HISTORY.info("step %d: %s", step, " ".join(f"{k}={_short(v)}" for k, v in values.items()))
    if folder is None:
        return
    path = Path(folder) / HISTORY_CSV
    rows = [f"{step},{key},{float(value)!r}\n" for key, value in values.items()
            if isinstance(value, (int, float)) and "," not in key]
    new = not path.exists()
    with open(path, "a") as f:
        f.write(("step,key,value\n" if new else "") + "".join(rows))


def _short(value: Any) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)
