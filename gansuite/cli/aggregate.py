"""``gansuite-aggregate``: the 2D mode metrics of many runs, one row per data set and packing, beside PacGAN's Table 1;
or, for anomaly runs, the one-class-out table (:mod:`gansuite.metrics.anomaly_table`); or, for text-to-image runs
(eval/captions_step_*.json), digit accuracy and rank correlations per data set, model and setting (the config
keys that differ between rows; :mod:`gansuite.metrics.caption_table`). Runs of one kind per call: 2D runs first, else anomaly runs, else
text-to-image runs.

    gansuite-aggregate multirun/2026-11-23/12-00-00                 # every run of a Hydra multirun
    gansuite-aggregate outputs/2026-11-23/10-00-00 outputs/... --json table.json

Each run's ``eval/modes.json`` (written by the ``scatter_2d`` callback at its last plot) gives the
metrics; its ``.hydra/config.yaml`` gives the data set, ``model.discriminator.pack`` and ``seed``
(the JSON's own copies are used for runs without one). Runs are grouped by (data, pack) and each
row shows the number of runs, then mean ± standard error (sample std with ddof=1 over sqrt(n); no
± term for a single run) of the modes captured, the percentage of high-quality samples and the
reverse KL, next to the paper's value where Table 1 of Lin et al. (NeurIPS 2018) has the row.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gansuite.errors import ConfigError
from gansuite.metrics.anomaly_table import (
    anomaly_json,
    anomaly_table,
    find_anomaly_runs,
    format_anomaly_table,
)
from gansuite.metrics.caption_table import (
    caption_json,
    caption_table,
    find_caption_runs,
    format_caption_table,
)
from gansuite.metrics.summary import Summary, summarize
from gansuite.outputs import check_writable, write_text

RESULT = Path("eval") / "modes.json"
# Lin, Khetan, Fanti, Oh, "PacGAN", NeurIPS 2018, Table 1 (mean of 10 runs): modes, high quality (%), reverse KL.
PAPER_TABLE_1: dict[tuple[str, int], tuple[float, float, float]] = {
    ("ring8", 1): (6.3, 98.2, 0.45),
    ("ring8", 2): (7.9, 95.6, 0.07),
    ("grid25", 1): (17.3, 94.8, 0.70),
    ("grid25", 4): (24.8, 93.6, 0.04),
}
_DATA_ORDER = {"ring8": 0, "grid25": 1}  # the paper's order; anything else after, by name
_METRICS = ("modes", "high_quality", "reverse_kl")


class AggregateError(Exception):
    """Nothing to aggregate, or an unreadable input: reported as one line, exit status 2."""


@dataclass(frozen=True)
class Run:
    """One finished run: where it is, which row it belongs to and its final metrics."""

    path: Path
    data: str
    pack: int
    seed: int | None
    step: int
    modes: float
    high_quality: float  # a fraction
    reverse_kl: float  # inf when no sample was high quality


def _config_value(config: Any, key: str) -> Any:
    if config is None:
        return None
    try:
        return OmegaConf.select(config, key)
    except Exception:  # an interpolation that only resolves inside Hydra (paths, ${hydra:...})
        return None


def read_run(result: Path) -> Run:
    """The run whose ``eval/modes.json`` is ``result``."""
    run_dir = result.parent.parent
    try:
        record = json.loads(result.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AggregateError(f"{result} is not readable JSON ({err})") from None
    config = None
    hydra_config = run_dir / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        config = OmegaConf.load(hydra_config)
    data = _config_value(config, "data.modes") or (record.get("data") or {}).get("modes")
    pack = _config_value(config, "model.discriminator.pack") or record.get("pack") or 1
    seed = _config_value(config, "seed")
    seed = record.get("seed") if seed is None else seed
    try:
        reverse_kl = record["reverse_kl"]
        return Run(
            path=run_dir,
            data=str(data),
            pack=int(pack),
            seed=None if seed is None else int(seed),
            step=int(record["step"]),
            modes=float(record["modes"]),
            high_quality=float(record["high_quality"]),
            reverse_kl=math.inf if reverse_kl is None else float(reverse_kl),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise AggregateError(f"{result} lacks a valid {err} entry; was it written by the scatter_2d callback?") from None


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run under ``paths`` (multirun directories, run directories or modes.json files)."""
    results: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise AggregateError(f"{path} does not exist")
        if path.is_file():
            results.add(path.resolve())
        else:
            results.update(p.resolve() for p in path.rglob(str(RESULT)))
    return [read_run(p) for p in sorted(results)]


def model_label(pack: int) -> str:
    return "GAN" if pack == 1 else f"PacGAN{pack}"


def aggregate(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (data, pack), in the paper's order, with the summaries and the paper's values."""
    groups: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.data, run.pack), []).append(run)
    rows = []
    for (data, pack), members in sorted(groups.items(), key=lambda kv: (_DATA_ORDER.get(kv[0][0], 99), kv[0])):
        members.sort(key=lambda r: (r.seed is None, r.seed, str(r.path)))
        paper = PAPER_TABLE_1.get((data, pack))
        rows.append({
            "data": data,
            "pack": pack,
            "model": model_label(pack),
            "n": len(members),
            "seeds": [r.seed for r in members],
            "steps": sorted({r.step for r in members}),
            **{m: summarize([getattr(r, m) for r in members]) for m in _METRICS},
            "paper": None if paper is None else dict(zip(_METRICS, (paper[0], paper[1] / 100, paper[2]), strict=True)),
            "runs": [str(r.path) for r in members],
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table, ours on the left and the paper's Table 1 on the right."""
    header = ["data", "model", "n", "steps", "modes", "high quality %", "reverse KL",
              "paper modes", "paper HQ %", "paper rev. KL"]
    lines = []
    for row in rows:
        steps = row["steps"]
        paper = row["paper"]
        lines.append([
            row["data"],
            row["model"],
            str(row["n"]),
            str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}",
            row["modes"].format(1),
            row["high_quality"].format(1, scale=100),
            row["reverse_kl"].format(2),
            "—" if paper is None else f"{paper['modes']:.1f}",
            "—" if paper is None else f"{paper['high_quality'] * 100:.1f}",
            "—" if paper is None else f"{paper['reverse_kl']:.2f}",
        ])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
              for r in [header, *lines]]
    note = ("mean ± standard error over the n runs (seeds); paper: Lin et al. 2018, Table 1, mean of 10 runs; "
            "2,500 samples, high quality = within 3 std of the nearest mode")
    return "\n".join([render[0], "  ".join("-" * w for w in widths), *render[1:], "", note])


def _json_number(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def to_json(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = []
    for row in rows:
        item = dict(row)
        for m in _METRICS:
            s: Summary = row[m]
            item[m] = {"mean": _json_number(s.mean), "sem": _json_number(s.sem)}
        out.append(item)
    return {
        "protocol": "veegan-pacgan-modes: 2,500 samples, high quality within 3 std of the nearest mode",
        "error": "standard error of the mean: sample std (ddof=1) / sqrt(n); null for n = 1; "
                 "null means are infinite (a run with no high-quality sample)",
        "paper": "Lin, Khetan, Fanti, Oh, PacGAN, NeurIPS 2018, Table 1 (high_quality as a fraction)",
        "rows": out,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gansuite-aggregate",
        description="Mean ± standard error of the 2D mode metrics (eval/modes.json) of many runs, "
                    "one row per data set and packing, beside PacGAN's Table 1; for anomaly runs "
                    "(eval/anomaly_step_*.json), test AUROC per anomalous class and model; for text-to-image runs "
                    "(eval/captions_step_*.json), digit accuracy and attribute rank correlations per data set and "
                    "model, then each run's values. One kind per call: 2D runs, else anomaly runs, else "
                    "text-to-image runs.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="multirun directories, run directories or modes.json files")
    parser.add_argument("--json", type=Path, help="also write the table to this JSON file")
    parser.add_argument("--selected", action="store_true",
                        help="anomaly runs: the measurement chosen on the validation split (eval/anomaly_selected.json) "
                             "instead of the last one")
    args = parser.parse_args(argv)
    try:
        if args.json is not None:  # before reading anything: the table must have somewhere to go
            try:
                check_writable(args.json, "--json")
            except ConfigError as err:
                raise AggregateError(str(err).rstrip(".")) from None
        runs = find_runs(args.paths)
        anomaly = [] if runs else find_anomaly_runs(args.paths, args.selected)
        captions = [] if runs or anomaly else find_caption_runs(args.paths)
        if not runs and not anomaly and not captions:
            raise AggregateError(f"no {RESULT}, eval/anomaly_step_*.json or eval/captions_step_*.json under "
                                 f"{', '.join(map(str, args.paths))}; pass a multirun directory or run directories "
                                 "of finished 2D, anomaly or text-to-image runs")
        # the one-class-out table of anomaly detectors (GANomaly's Fig. 4a)
        tables = {metric: anomaly_table(anomaly, metric) for metric in ("auroc", "auprc")} if anomaly else {}
    except (AggregateError, ConfigError) as err:
        print(f"gansuite-aggregate: error: {str(err).rstrip('.')}", file=sys.stderr)
        sys.exit(2)
    if anomaly:
        print(format_anomaly_table(tables["auroc"]))
        if args.json:
            write_text(args.json, json.dumps({m: anomaly_json(table) for m, table in tables.items()}, indent=2) + "\n")
        return
    if captions:
        table = caption_table(captions)
        print(format_caption_table(table))
        if args.json:
            write_text(args.json, json.dumps(caption_json(table), indent=2) + "\n")
        return
    rows = aggregate(runs)
    print(format_table(rows))
    if args.json:  # renamed into place: never half a JSON
        write_text(args.json, json.dumps(to_json(rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
