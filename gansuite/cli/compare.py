"""``gansuite-compare``: one metric of many runs side by side, from their run directories alone: a table and a plot.

    gansuite-compare multirun/losses_x_seeds/2026-11-23_12-00-00          # every run of a multirun
    gansuite-compare outputs/2026-11-23/10-00-00 outputs/2026-11-23/11-00-00 --metric train/g_loss
    gansuite-compare multirun/optuna_fid/... --out fid.png --json fid.json

No W&B account or network is needed: a run's values are read from the files it wrote, merged by step:

- ``history.csv``: every logged loss and evaluation, whatever the logger (``step,key,value`` rows);
- ``checkpoints/eval_step_*.json``: every evaluation (``val/<key>``, ``best/<key>``);
- ``csv/version_*/metrics.csv`` (``logger=csv``): everything that was logged.

The table has one row per run, best first: the run (its folder), the overrides that differ between the
runs (from ``.hydra/overrides.yaml``; the ones they share are printed above), the best value of the
metric with the step it was reached at, and the last value with its step. "Best" is the lowest value,
or the highest for metrics where higher is better (IS, precision, recall, accuracies, modes, PSNR,
SSIM); ``--goal`` overrides that. When the runs differ in ``seed``, a second table pools the seeds of
each setting: mean ± standard error of their best values. The plot shows the metric against the
gansuite step (generator updates) for every run, its best point marked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from gansuite.errors import ConfigError
from gansuite.metrics.summary import summarize
from gansuite.outputs import SOFTWARE, check_output, write_text
from gansuite.training.runs import CompareError, Run, find_runs, read_run

__all__ = ["CompareError", "Run", "compare_rows", "find_runs", "format_table", "main", "plot", "read_run"]

# Higher is better for these short names (the metric key without its prefix, sample count and "_clf");
# everything else (FID, KID, KLs, losses, L1 errors) is better lower. The evaluation's own list,
# gansuite.metrics.results.HIGHER_IS_BETTER, is part of it (a test checks); not imported, as it brings
# in torch. The image-to-image names are those of gansuite.training.translation.TranslationMetrics.
HIGHER_IS_BETTER = {"is", "precision", "recall", "cond_acc", "classes_covered", "stacked_modes",  # evaluation
                    "cas", "cas_real", "aug_gain", "aug_acc_mixed", "aug_acc_real",  # metrics.augmentation
                    "modes", "high_quality",  # 2D mixtures (metrics.modes)
                    "psnr", "ssim", "class_kept_a2b"}  # image-to-image (TranslationMetrics)
_COUNT = re.compile(r"_(\d+k?|k\d+)$")  # a sample count (fid_10k, modes_2500) or aug_gain's k (aug_gain_k10)


def higher_is_better(metric: str) -> bool:
    """``val/is_10k``, ``val/modes_2500``, ``val/psnr``: True; ``val/fid_clf_10k``, ``train/d_loss``: False."""
    name = metric.rsplit("/", 1)[-1].removeprefix("baseline_")
    name = _COUNT.sub("", name).removesuffix("_clf")
    return name in HIGHER_IS_BETTER


# ----------------------------------------------------------------------------- the table
def available_metrics(runs: list[Run]) -> list[str]:
    return sorted({m for run in runs for m in run.series})


def pick_metric(runs: list[Run], metric: str | None) -> str:
    """``metric``, or the one FID the runs logged when it is None; one sentence if that cannot be."""
    available = available_metrics(runs)
    listing = ", ".join(available) if available else "none"
    if metric is None:
        fids = [m for m in available if m.startswith("val/fid")]
        if len(fids) == 1:
            return fids[0]
        raise CompareError(f"no --metric given and the runs logged {len(fids) or 'no'} FID keys; "
                           f"pass --metric, one of: {listing}")
    if metric not in available:
        raise CompareError(f"no run logged the metric {metric!r}; available metrics: {listing}")
    return metric


def _label(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    return path.name if rel == "." else rel


def compare_rows(runs: list[Run], metric: str, goal: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per run, best first (runs without the metric last), and the overrides all runs share.

    Each row: ``run`` (folder), ``path``, ``overrides`` (those that differ between runs), ``best``,
    ``best_step``, ``last``, ``last_step`` (None where the run has no value).
    """
    higher = higher_is_better(metric) if goal is None else goal == "max"
    root = Path(os.path.commonpath([r.path for r in runs])) if len(runs) > 1 else runs[0].path.parent
    shared = [o for o in runs[0].overrides if all(o in r.overrides for r in runs[1:])] if runs else []
    rows = []
    for run in runs:
        points = sorted(run.series.get(metric, {}).items())
        finite = [(s, v) for s, v in points if math.isfinite(v)]
        best = (max if higher else min)(finite, key=lambda p: p[1]) if finite else None
        if best is not None:  # the earliest step that reached the best value
            best = next(p for p in finite if p[1] == best[1])
        rows.append({
            "run": _label(run.path, root),
            "path": str(run.path),
            "overrides": [o for o in run.overrides if o not in shared],
            "best": None if best is None else best[1],
            "best_step": None if best is None else best[0],
            "last": points[-1][1] if points else None,
            "last_step": points[-1][0] if points else None,
        })
    sign = -1.0 if higher else 1.0
    rows.sort(key=lambda r: (r["best"] is None, 0.0 if r["best"] is None else sign * r["best"], r["run"]))
    return rows, shared


def pooled_rows(rows: list[dict[str, Any]], goal: str = "min") -> list[dict[str, Any]]:
    """Rows of runs that differ only in ``seed``, pooled: mean ± standard error of their best values, best first."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(o for o in row["overrides"] if not o.startswith("seed="))
        groups.setdefault(key, []).append(row)
    pooled = []
    for key, members in groups.items():
        values = [m["best"] for m in members if m["best"] is not None]
        seeds = [o.split("=", 1)[1] for m in members for o in m["overrides"] if o.startswith("seed=")]
        pooled.append({"overrides": list(key), "n": len(values),
                       "seeds": sorted(seeds, key=lambda s: (len(s), s)),  # 2 before 10
                       "best": summarize(values) if values else None})
    sign = -1.0 if goal == "max" else 1.0
    pooled.sort(key=lambda p: (p["best"] is None, 0.0 if p["best"] is None else sign * p["best"].mean))
    return pooled


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def _render(header: list[str], lines: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
              .rstrip() for r in [header, *lines]]
    return [render[0], "  ".join("-" * w for w in widths), *render[1:]]


def format_table(metric: str, rows: list[dict[str, Any]], shared: list[str], goal: str) -> str:
    """The rows as plain text: run, differing overrides, best (step), last (step); pooled seeds below."""
    out = [f"{metric}: {len(rows)} runs, best = {'highest' if goal == 'max' else 'lowest'}"]
    if shared:
        out.append(f"shared overrides: {' '.join(shared)}")
    out.append("")
    lines = [[r["run"], " ".join(r["overrides"]) or "—", _fmt(r["best"]),
              "—" if r["best_step"] is None else str(r["best_step"]), _fmt(r["last"]),
              "—" if r["last_step"] is None else str(r["last_step"])] for r in rows]
    out += _render(["run", "overrides", "best", "step", "last", "step"], lines, right={2, 3, 4, 5})
    pooled = pooled_rows(rows, goal)
    if any(o.startswith("seed=") for r in rows for o in r["overrides"]) and len(pooled) < len(rows):
        lines = [[" ".join(p["overrides"]) or "—", str(p["n"]), ",".join(p["seeds"]),
                  "—" if p["best"] is None else p["best"].format(4)] for p in pooled]
        out += ["", "pooled over seeds (mean ± standard error of the best values):"]
        out += _render(["overrides", "n", "seeds", "best"], lines, right={1, 3})
    return "\n".join(out)


def to_json(metric: str, goal: str, rows: list[dict[str, Any]], shared: list[str]) -> dict[str, Any]:
    def number(value: float | None) -> float | None:
        return value if value is None or math.isfinite(value) else None

    pooled = [{**p, "best": None if p["best"] is None else {"mean": number(p["best"].mean), "sem": number(p["best"].sem)}}
              for p in pooled_rows(rows, goal)]
    return {"metric": metric, "goal": goal, "shared_overrides": shared,
            "rows": [{**r, "best": number(r["best"]), "last": number(r["last"])} for r in rows],
            "pooled_over_seeds": pooled}


# ----------------------------------------------------------------------------- the plot
def _short(override: str) -> str:
    """``model.g_optimizer.lr=0.0002504130762999892`` -> ``model.g_optimizer.lr=0.0002504``: legends stay readable."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return override if "." not in value and "e" not in value.lower() else f"{key}={number:.4g}"


def plot(runs: list[Run], rows: list[dict[str, Any]], metric: str, out: Path) -> Path:
    """The metric against the gansuite step, one line per run (labelled by its overrides), best points starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    by_path = {str(r.path): r for r in runs}
    colour = {str(r.path): f"C{i % 10}" for i, r in enumerate(sorted(runs, key=lambda r: str(r.path)))}
    labels = [" ".join(_short(o) for o in row["overrides"]) or row["run"] for row in rows]
    columns = 1 if max(map(len, labels)) > 45 else 2 if max(map(len, labels)) > 25 else 3
    fig, ax = plt.subplots(figsize=(9, 5 + 0.25 * math.ceil(len(rows) / columns)), dpi=100)
    try:
        for row, label in zip(rows, labels, strict=True):
            points = sorted(by_path[row["path"]].series.get(metric, {}).items())
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            (line,) = ax.plot(steps, values, marker="o" if len(points) <= 40 else None, markersize=3,
                              linewidth=1.2, label=label, color=colour[row["path"]])  # a run keeps its colour
            if row["best"] is not None:
                ax.plot([row["best_step"]], [row["best"]], marker="*", markersize=13, color=line.get_color(),
                        markeredgecolor="black", markeredgewidth=0.5, linestyle="none")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step (generator updates)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: {len(rows)} runs, \u2605 = best")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=columns, frameon=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # renamed into place: never half a PNG
        try:
            fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Software": SOFTWARE})
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)
    return out


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> None:
    # Starts like gansuite-aggregate's parser (run folders, --json) and differs after it: one parser per command.
    parser = argparse.ArgumentParser(
        prog="gansuite-compare",
        description="One metric of many runs from their run directories (no W&B needed): a table of the best "
                    "and last values and a PNG plot against the gansuite step.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, multirun directories or folders above them")
    parser.add_argument("--metric", help="a logged key, e.g. val/fid_clf_10k or train/g_loss (default: the FID the runs logged)")
    parser.add_argument("--goal", choices=("min", "max"), help="which value is best (default: by the metric's name)")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="the plot (default: compare.png)")
    parser.add_argument("--json", type=Path, help="also write the table to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace --out / --json files gansuite did not write")
    args = parser.parse_args(argv)
    try:
        for option, path in (("--out", args.out), ("--json", args.json)):
            if path is not None:
                try:
                    check_output(path, option, args.overwrite)
                except ConfigError as err:
                    raise CompareError(str(err).rstrip(".")) from None
        paths = find_runs(args.paths)
        if not paths:
            raise CompareError(f"no runs under {', '.join(map(str, args.paths))}: no .hydra/config.yaml, "
                               "history.csv, csv/version_*/metrics.csv or checkpoints/eval_step_*.json; pass "
                               "run directories or a multirun directory")
        runs = [read_run(p) for p in paths]
        metric = pick_metric(runs, args.metric)
    except CompareError as err:
        print(f"gansuite-compare: error: {err}", file=sys.stderr)
        sys.exit(2)
    goal = args.goal or ("max" if higher_is_better(metric) else "min")
    rows, shared = compare_rows(runs, metric, goal)
    print(format_table(metric, rows, shared, goal))
    plot(runs, rows, metric, args.out)
    print(f"\nplot: {args.out}")
    if args.json:  # renamed into place: never half a JSON
        write_text(args.json, json.dumps({"written_by": "gansuite-compare", **to_json(metric, goal, rows, shared)},
                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
