"""The text-to-image table of captioned-digits runs (model=gan_int_cls, data=captioned_digits): one row per data set
and model, the digit accuracy and the attributes' rank correlations for the training phrasings and the held-out
phrasings, as mean ± standard error over seeds, then one line per run.

Read from finished runs: each run's last ``eval/captions_step_*.json`` (``callbacks.caption_metrics``, the highest
step, so a killed run counts with what it measured) gives the values and the data set; its ``.hydra/config.yaml``
gives the model and the seed (the JSON's ``protocol.seed`` seeds the drawn noise, not the run); its ``history.csv``
gives ``val/fid_clf_10k`` and ``val/recall_clf_10k`` where the evaluation measured them at that step.
``gansuite-aggregate`` prints it for multirun directories of text-to-image runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gansuite.errors import ConfigError
from gansuite.history import HISTORY_CSV
from gansuite.metrics.summary import Summary, summarize

PATTERN = "captions_step_*.json"
_STEP = re.compile(r"captions_step_(\d+)\.json")
# gansuite.metrics.captions.caption_metrics's keys, over gansuite.data.captions.ATTRIBUTES (not imported: that
# module loads torch, and this table is read by a command that does not need it).
ATTRIBUTES = ("thickness", "slant", "size")
HELDOUT = "_heldout_phrasing"
VALUES = tuple(f"{key}{suffix}" for suffix in ("", HELDOUT)
               for key in ("digit_acc", *(f"rank_corr_{a}" for a in ATTRIBUTES)))
# The evaluation's numbers (callbacks.evaluation, history.csv), taken at the step of the captions measurement.
EVALUATION = ("fid_clf_10k", "recall_clf_10k")


@dataclass(frozen=True)
class CaptionRun:
    path: Path
    model: str
    data: str  # the protocol's data name, e.g. captioned_digits-28px
    seed: int | None
    step: int
    values: dict[str, float]  # VALUES
    evaluation: dict[str, float] = field(default_factory=dict)  # EVALUATION keys measured at ``step``


def _last_measurement(run_dir: Path) -> Path | None:
    """The highest-step captions JSON, by the step in its name (a number, so step 1,000,000 sorts after 999,999)."""
    steps = {int(m.group(1)): p for p in (run_dir / "eval").glob(PATTERN) if (m := _STEP.fullmatch(p.name))}
    return steps[max(steps)] if steps else None


def _evaluation_at(run_dir: Path, step: int) -> dict[str, float]:
    """``val/<key>`` of EVALUATION logged at ``step`` in the run's history.csv (the last row wins: a resumed run
    may have logged a step twice); rows cut short by a killed run are skipped."""
    path = run_dir / HISTORY_CSV
    if not path.is_file():
        return {}
    wanted = {f"val/{key}": key for key in EVALUATION}
    found: dict[str, float] = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    if row["key"] in wanted and int(row["step"]) == step:
                        found[wanted[row["key"]]] = float(row["value"])
                except (KeyError, TypeError, ValueError):
                    continue
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not a readable history ({type(err).__name__}); pass run directories written "
                          "by gansuite-train.") from None
    return found


def read_caption_run(run_dir: Path) -> CaptionRun | None:
    """The run's last captions measurement with its model, seed and evaluation, or None when it has none."""
    result = _last_measurement(run_dir)
    if result is None:
        return None
    try:
        record = json.loads(result.read_text())
        config = OmegaConf.load(run_dir / ".hydra" / "config.yaml") if (run_dir / ".hydra").is_dir() else None
        model = OmegaConf.select(config, "model.name") if config is not None else None
        seed = OmegaConf.select(config, "seed") if config is not None else None
        step = int(record["step"])
        values = {key: float(record["values"][key]) for key in VALUES}
        data = str(record["protocol"]["data"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{result} is not a captions measurement ({type(err).__name__}: {err}); pass run "
                          "directories written by gansuite-train with callbacks.caption_metrics.") from None
    return CaptionRun(path=run_dir, model=str(model or "?"), data=data, seed=None if seed is None else int(seed),
                      step=step, values=values, evaluation=_evaluation_at(run_dir, step))


def find_caption_runs(paths: list[Path]) -> list[CaptionRun]:
    """Every run with a captions measurement under ``paths`` (multirun or run directories)."""
    dirs = {hit.parent.parent.resolve() for path in paths if path.is_dir() for hit in path.rglob(f"eval/{PATTERN}")}
    return [run for run in (read_caption_run(d) for d in sorted(dirs)) if run is not None]


def caption_table(runs: list[CaptionRun]) -> dict[str, Any]:
    """``{"evaluation": [keys any run has], "rows": [...], "runs": [...]}``: one row per (data, model) with ``n``,
    ``seeds``, ``steps`` (every step its runs end at: more than one means a row averages over training lengths),
    a Summary per VALUES key, and per EVALUATION key a Summary over the runs that measured it with their count
    (``<key>_n``); ``runs`` in the rows' order."""
    groups: dict[tuple[str, str], list[CaptionRun]] = {}
    for run in runs:
        groups.setdefault((run.data, run.model), []).append(run)
    evaluation = [key for key in EVALUATION if any(key in r.evaluation for r in runs)]
    rows, ordered = [], []
    for (data, model), members in sorted(groups.items()):
        members.sort(key=lambda r: (r.seed is None, r.seed, str(r.path)))
        ordered += members
        row: dict[str, Any] = {"data": data, "model": model, "n": len(members), "seeds": [r.seed for r in members],
                               "steps": sorted({r.step for r in members})}
        row.update({key: summarize([r.values[key] for r in members]) for key in VALUES})
        for key in evaluation:
            measured = [r.evaluation[key] for r in members if key in r.evaluation]
            row[key] = summarize(measured) if measured else None
            row[f"{key}_n"] = len(measured)
        row["runs"] = [str(r.path) for r in members]
        rows.append(row)
    return {"evaluation": evaluation, "rows": rows, "runs": ordered}


def _steps(steps: list[int]) -> str:
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"


# Column headers and digits: accuracy in percent, Spearman's rho, then the evaluation's numbers.
_HEADERS = {"digit_acc": "digit acc %", **{f"rank_corr_{a}": f"{a} ρ" for a in ATTRIBUTES},
            "fid_clf_10k": "FID clf 10k", "recall_clf_10k": "recall clf 10k"}
_DIGITS = {"digit_acc": 1, "fid_clf_10k": 2, "recall_clf_10k": 3}


def _header(key: str) -> str:
    base = key.removesuffix(HELDOUT)
    return _HEADERS[base] + (" h.o." if base != key else "")


def _cell(key: str, s: Summary) -> str:
    base = key.removesuffix(HELDOUT)
    return s.format(_DIGITS.get(base, 2), scale=100 if base == "digit_acc" else 1)


def _render(header: list[str], lines: list[list[str]], left: int) -> list[str]:
    """Aligned columns, the first ``left`` of them left-aligned."""
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = ["  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths,
                                                                                                       strict=True)))
              for r in [header, *lines]]
    return [render[0], "  ".join("-" * w for w in widths), *render[1:]]


def _display(path: Path) -> str:
    """A run's folder relative to the working directory when it is under it: the listing stays narrow."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def format_caption_table(table: dict[str, Any]) -> str:
    """The table as aligned text, the notes, then one line per run (its folder, seed, step and values)."""
    evaluation = table["evaluation"]
    keys = [*VALUES, *evaluation]
    header = ["data", "model", "n", "steps", *map(_header, keys)]
    lines = []
    for row in table["rows"]:
        cells = [_cell(key, row[key]) for key in VALUES]
        for key in evaluation:
            s, k = row[key], row[f"{key}_n"]
            cells.append("—" if s is None else _cell(key, s) + ("" if k == row["n"] else f" ({k} of {row['n']})"))
        lines.append([row["data"], row["model"], str(row["n"]), _steps(row["steps"]), *cells])
    notes = ["mean ± standard error over the n runs (seeds; sample std, ddof=1, over sqrt(n)); each run's last "
             "captions measurement (callbacks.caption_metrics) on the held-out digits' captions; digit acc: read as "
             "the named digit by the offline MNIST's classifier; ρ: Spearman's rank correlation between the level "
             "a caption asks for and the measured attribute; h.o.: held-out phrasings"]
    if evaluation:
        notes.append("FID / recall: the evaluation (history.csv val/...) at the step of that measurement; "
                     "(k of n): only k of the runs measured it there")
    notes += [f"{row['model']} on {row['data']}: its runs end at different steps ({_steps(row['steps'])}), "
              "averaged in one row; a killed run? see the runs below" for row in table["rows"] if len(row["steps"]) > 1]
    run_header = ["run", "model", "seed", "step", *map(_header, keys)]
    run_lines = [[_display(r.path), r.model, "—" if r.seed is None else str(r.seed), str(r.step),
                  *(_cell(key, Summary(r.values[key], None)) for key in VALUES),
                  *(_cell(key, Summary(r.evaluation[key], None)) if key in r.evaluation else "—"
                    for key in evaluation)] for r in table["runs"]]
    return "\n".join([*_render(header, lines, 2), "", *notes, "", *_render(run_header, run_lines, 2)])


def _number(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _plain(s: Summary | None) -> dict[str, float | None] | None:
    return None if s is None else {"mean": _number(s.mean), "sem": _number(s.sem)}


def caption_json(table: dict[str, Any]) -> dict[str, Any]:
    """The table as plain JSON: summaries as ``{"mean", "sem"}`` (null sem for one run), then every run's values."""
    rows = []
    for row in table["rows"]:
        item = {k: v for k, v in row.items() if k != "runs"}
        item.update({key: _plain(row[key]) for key in (*VALUES, *table["evaluation"])})
        rows.append({**item, "runs": row["runs"]})
    return {
        "protocol": "callbacks.caption_metrics: each run's last measurement on the held-out digits' captions "
                    "(training phrasings, and held-out phrasings: keys ending _heldout_phrasing); digit_acc a "
                    "fraction, rank_corr_* Spearman's rho; fid_clf_10k / recall_clf_10k from history.csv at that "
                    "step, over the <key>_n runs that measured it there",
        "error": "standard error of the mean: sample std (ddof=1) / sqrt(n); null for n = 1",
        "rows": rows,
        "runs": [{"path": str(r.path), "model": r.model, "data": r.data, "seed": r.seed, "step": r.step,
                  "values": {k: _number(v) for k, v in r.values.items()},
                  **{key: _number(r.evaluation.get(key)) for key in table["evaluation"]}} for r in table["runs"]],
    }
