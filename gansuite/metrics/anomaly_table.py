"""The one-class-out table of anomaly detectors, as GANomaly's Fig. 4a reports it: one row per anomalous
class, one column per model, test AUROC as mean ± standard error over seeds.

Read from finished runs: each run's last ``eval/anomaly_step_*.json`` (``callbacks.anomaly_metrics``)
gives AUROC, AUPRC and the anomaly class, or with ``selected`` its ``eval/anomaly_selected.json`` (the
measurement chosen on the validation split's labelled anomalies); its ``.hydra/config.yaml`` gives the
model and the seed.
``gansuite-aggregate`` prints it for multirun directories of anomaly runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gansuite.errors import ConfigError
from gansuite.metrics.summary import summarize

PATTERN = "anomaly_step_*.json"
SELECTED = "anomaly_selected.json"
# Column order: the GAN detectors first, then the baselines by name.
FIRST = ("ganomaly", "fanogan")


@dataclass(frozen=True)
class AnomalyRun:
    path: Path
    model: str
    anomaly_class: int | str  # the held-out class, or a folder run's data name
    data: str  # the data set without its class: runs of one table share it
    seed: int | None
    step: int
    auroc: float
    auprc: float


def read_anomaly_run(run_dir: Path, selected: bool = False) -> AnomalyRun | None:
    """The run's last measurement (or with ``selected`` the one chosen on the validation split), or None
    when it has none."""
    results = sorted((run_dir / "eval").glob(PATTERN))
    if not results:
        return None
    if selected:
        results = [run_dir / "eval" / SELECTED]
        if not results[0].is_file():
            raise ConfigError(f"{run_dir} has no eval/{SELECTED}: nothing was selected in it; train with labelled "
                              f"validation anomalies (data.validation_anomalies=20), or leave out --selected.")
    try:
        record = json.loads(results[-1].read_text())
        config = OmegaConf.load(run_dir / ".hydra" / "config.yaml") if (run_dir / ".hydra").is_dir() else None
        model = OmegaConf.select(config, "model.name") if config is not None else None
        seed = OmegaConf.select(config, "seed") if config is not None else None
        return AnomalyRun(path=run_dir, model=str(model or "?"), anomaly_class=_row_key(record["protocol"]),
                          data=re.sub(r"anomaly\d+", "anomaly", str(record["protocol"].get("data", "?"))),
                          seed=None if seed is None else int(seed), step=int(record["step"]),
                          auroc=float(record["values"]["auroc"]), auprc=float(record["values"]["auprc"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{results[-1]} is not an anomaly measurement ({type(err).__name__}); pass run directories "
                          "written by gansuite-train with callbacks.anomaly_metrics.") from None


def _row_key(protocol: dict[str, Any]) -> int | str:
    """The table row a run belongs to: its anomaly class, or for a folder (no classes) its data name."""
    return int(protocol["anomaly_class"]) if "anomaly_class" in protocol else str(protocol["data"])


def find_anomaly_runs(paths: list[Path], selected: bool = False) -> list[AnomalyRun]:
    """Every run with an anomaly measurement under ``paths`` (multirun or run directories)."""
    dirs = {hit.parent.parent.resolve() for path in paths if path.is_dir() for hit in path.rglob(f"eval/{PATTERN}")}
    return [run for run in (read_anomaly_run(d, selected) for d in sorted(dirs)) if run is not None]


def anomaly_table(runs: list[AnomalyRun], metric: str = "auroc") -> dict[str, Any]:
    """``{"models": [...], "rows": [{"class": k, model: Summary, ...}], "mean": {model: Summary},
    "wins": {(a, b): digits where a's mean beats b's}}``, summaries over seeds. The runs must share one data set
    (resolution and splits included): a table averages over seeds, never over data sets."""
    datasets = sorted({r.data for r in runs})
    if len(datasets) > 1:
        raise ConfigError(f"the anomaly runs hold more than one data set ({', '.join(datasets)}); pass the runs of one "
                          f"data set at a time.")
    models = sorted({r.model for r in runs}, key=lambda m: (FIRST.index(m) if m in FIRST else len(FIRST), m))
    classes = sorted({r.anomaly_class for r in runs}, key=lambda k: (isinstance(k, str), str(k).zfill(8)))
    cell = {(r.model, r.anomaly_class): [] for r in runs}
    for r in runs:
        cell[(r.model, r.anomaly_class)].append(getattr(r, metric))
    rows = [{"class": k, **{m: summarize(cell[(m, k)]) for m in models if (m, k) in cell}} for k in classes]
    # The mean over classes, per seed (seeds that measured every class), summarised over those seeds.
    mean = {}
    for m in models:
        by_seed: dict[Any, dict[int, float]] = {}
        for r in runs:
            if r.model == m:
                by_seed.setdefault(r.seed, {})[r.anomaly_class] = getattr(r, metric)
        complete = [sum(v.values()) / len(v) for v in by_seed.values() if set(v) == set(classes)]
        if complete:
            mean[m] = summarize(complete)
    wins = {(a, b): sum(1 for row in rows if a in row and b in row and row[a].mean > row[b].mean)
            for a in models for b in models if a != b}
    return {"metric": metric, "models": models, "rows": rows, "mean": mean, "wins": wins,
            "seeds": sorted({r.seed for r in runs}, key=lambda s: (s is None, s)), "steps": sorted({r.step for r in runs})}


def format_anomaly_table(table: dict[str, Any]) -> str:
    """The table in Markdown, with the mean row and, for two models, how many classes each wins."""
    models = table["models"]
    lines = [f"| anomaly class | {' | '.join(models)} |", "| --- |" + " --- |" * len(models)]
    for row in table["rows"]:
        lines.append(f"| {row['class']} | " + " | ".join(row[m].format(3) if m in row else "—" for m in models) + " |")
    lines.append("| mean | " + " | ".join(table["mean"][m].format(3) if m in table["mean"] else "—" for m in models)
                 + " |")
    notes = [f"test {table['metric'].upper()}, mean ± standard error over seeds {table['seeds']} "
             f"(steps {', '.join(map(str, table['steps']))}); mean row: the mean over classes per seed"]
    for (a, b), n in table["wins"].items():
        if models.index(a) < models.index(b):
            notes.append(f"{a} above {b} on {n} of {len(table['rows'])} classes")
    return "\n".join(lines + [""] + notes)




def anomaly_json(table: dict[str, Any]) -> dict[str, Any]:
    """The table as plain JSON: summaries as ``{"mean", "sem"}``, wins as ``"a>b"`` keys."""
    def plain(s) -> dict[str, float | None]:
        return {"mean": s.mean, "sem": s.sem}
    return {"metric": table["metric"], "models": table["models"], "seeds": table["seeds"], "steps": table["steps"],
            "rows": [{"class": row["class"], **{m: plain(row[m]) for m in table["models"] if m in row}}
                     for row in table["rows"]],
            "mean": {m: plain(s) for m, s in table["mean"].items()},
            "wins": {f"{a}>{b}": n for (a, b), n in table["wins"].items()}}
