"""A run directory read back: every number it logged, by metric and step, and the overrides it ran with.

``gansuite-compare`` reads runs through this; a run's values come from the files it wrote (``history.csv``,
the evaluations' JSON files, Lightning's CSV logger), so no W&B account or network is needed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gansuite.history import HISTORY_CSV


class CompareError(Exception):
    """Nothing to compare, or a metric no run logged: reported as one line, exit status 2."""


@dataclass
class Run:
    """One run directory and every number it logged: ``series[metric][step] = value``."""

    path: Path
    overrides: list[str] = field(default_factory=list)
    series: dict[str, dict[int, float]] = field(default_factory=dict)

    def add(self, metric: str, step: int, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return  # images, tables and text are not plotted
        self.series.setdefault(metric, {})[int(step)] = float(value)


# ----------------------------------------------------------------------------- reading runs
def _is_run(path: Path) -> bool:
    return ((path / ".hydra" / "config.yaml").is_file() or any(path.glob("csv/version_*/metrics.csv"))
            or any(path.glob("checkpoints/eval_step_*.json")) or (path / HISTORY_CSV).is_file())


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """The run directories at or under ``paths`` (run directories, multirun directories, any folder above them)."""
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path} does not exist")
        if not path.is_dir():
            raise CompareError(f"{path} is not a directory; pass run directories or a multirun directory")
        if _is_run(path):
            found.add(path.resolve())
        # Where each kind of file sits inside a run directory, as (pattern, levels up to the run).
        for pattern, up in ((".hydra/config.yaml", 2), ("csv/version_*/metrics.csv", 3),
                            ("checkpoints/eval_step_*.json", 2), (HISTORY_CSV, 1)):
            for hit in path.rglob(pattern):
                found.add(hit.parents[up - 1].resolve())
    return sorted(found)


def read_run(path: Path) -> Run:
    """Everything a run directory holds, merged by step (the evaluation's JSON files win ties)."""
    run = Run(path=path, overrides=_overrides(path))
    if (path / HISTORY_CSV).is_file():
        read_history(path / HISTORY_CSV, run)
    for metrics_csv in sorted(path.glob("csv/version_*/metrics.csv")):
        _read_csv(metrics_csv, run)
    for result in sorted(path.glob("checkpoints/eval_step_*.json")):
        _read_eval_json(result, run)
    return run


def _overrides(path: Path) -> list[str]:
    file = path / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return []
    from omegaconf import OmegaConf

    try:
        return [str(o) for o in OmegaConf.load(file)]
    except Exception as err:  # noqa: BLE001 - a broken file is reported, whatever broke it
        raise CompareError(f"{file} is not a list of overrides ({type(err).__name__})") from None


def _read_csv(path: Path, run: Run) -> None:
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step")
                if not step:
                    continue
                for key, value in row.items():
                    if key not in ("step", "epoch") and value not in (None, ""):
                        try:
                            run.add(key, int(float(step)), float(value))
                        except ValueError:
                            pass  # a text column
    except (OSError, csv.Error, ValueError) as err:
        raise CompareError(f"{path} is not a readable metrics CSV ({err})") from None


def _read_eval_json(path: Path, run: Run) -> None:
    try:
        record = json.loads(path.read_text())
        step = int(record["step"])
        values = dict(record["values"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CompareError(f"{path} is not an evaluation result ({type(err).__name__}: {err})") from None
    for key, value in values.items():
        run.add(f"val/{key}", step, value)
    for key, best in (record.get("best") or {}).items():
        run.add(f"best/{key}", step, best.get("value"))
        run.add(f"best/{key}_step", step, best.get("step"))


def read_history(path: Path, run: Run) -> None:
    """``history.csv`` (gansuite.history.record): rows of step, key, value."""
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    run.add(row["key"], int(row["step"]), float(row["value"]))
                except (KeyError, TypeError, ValueError):
                    continue  # a row cut short by a killed run
    except (OSError, csv.Error) as err:
        raise CompareError(f"{path} is not a readable history ({err})") from None
