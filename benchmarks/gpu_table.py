"""The table of ``benchmarks/gpu_check.sh``: reads the JSON and logs it left in OUT_DIR, prints Markdown.

    python benchmarks/gpu_table.py OUT_DIR

A part whose JSON is missing (it failed or ran out of time) is printed as "not measured" with its exit
status and seconds, so a row is either what was measured in this run or marked as missing: never a guess.
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys
from pathlib import Path


def _load(out: Path, name: str) -> dict | None:
    path = out / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _status(out: Path, name: str) -> str:
    try:
        rc, seconds = (out / f"{name}.status").read_text().split()
    except (OSError, ValueError):
        return "not run"
    return "timed out" if rc in ("124", "137", "130") else f"exit {rc}" + ("" if rc == "0" else f" after {seconds} s")


def _missing(out: Path, name: str) -> str:
    return f"not measured ({_status(out, name)}; see {name}.log)"


def throughput_rows(out: Path) -> list[str]:
    rows = []
    for mode in ("eager", "compile"):
        for precision in ("32-true", "bf16-mixed"):
            name = f"throughput_{mode}_{precision}"
            data = _load(out, name)
            label = f"DCGAN img/s, {mode}, {precision}"
            if data is None:
                rows.append(f"| {label} | {_missing(out, name)} | | |")
                continue
            by_variant: dict[str, list[float]] = {}
            for r in data["results"]:
                by_variant.setdefault(r["variant"], []).append(r["img_per_s"])
            g, p = (statistics.median(by_variant.get(v, [float("nan")])) for v in ("gansuite", "plain"))
            px = str(data["args"].get("resolution")).strip("[]")
            rows.append(f"| {label} (batch {data['args'].get('batch_size')}, {px} px) "
                        f"| {g:,.0f} | {p:,.0f} | {g / p:.2f} |")
    return rows


def main() -> None:
    out = Path(sys.argv[1])
    versions = _load(out, "versions") or {}
    today = datetime.date.today().isoformat()
    print(f"GPU check of {today}: {versions.get('gpu', '?')}, torch {versions.get('torch', '?')}, "
          f"lightning {versions.get('lightning', '?')}\n")
    print("| what | gansuite | plain loop / peer | ratio |")
    print("| --- | --- | --- | --- |")
    for row in throughput_rows(out):
        print(row)

    syncs = _load(out, "host_syncs")
    if syncs is None:
        print(f"| host syncs per training batch | {_missing(out, 'host_syncs')} | | |")
    else:
        for r in syncs["rows"]:
            print(f"| host syncs per training batch, {r['family']} ({r['batches']} batches) | {r['per_batch']:.4f} "
                  f"| 0 | target <= 0.05 |")

    for name, label, row in (
        ("fid_speed", "FID time, s",
         lambda d: f"| FID of {d['n']:,} generated images, s | {d['gansuite_s']:.1f} | torch-fidelity "
                   f"{d['torch_fidelity_s']:.1f} | {d['gansuite_s'] / d['torch_fidelity_s']:.2f} |"),
        ("startup", "clean cache to first training batch, s",
         lambda d: f"| clean cache to first training batch, s | {d['median_s']:.1f} | | target <= 20 |"),
    ):
        data = _load(out, name)
        print(f"| {label} | {_missing(out, name)} | | |" if data is None else row(data))

    evals = sorted((out / "default_run" / "checkpoints").glob("eval_step_*.json"))
    if not evals:
        print(f"| default run, fid_clf_10k | {_missing(out, 'default_run')} | | |")
    else:
        last = json.loads(evals[-1].read_text())
        fid_key = next((k for k in last["values"] if k.startswith("fid_clf_")), None)
        value = f"{last['values'][fid_key]:.2f}" if fid_key else "no fid_clf value"
        print(f"| default run: {fid_key} at step {last['step']} ({_status(out, 'default_run')}) | {value} | | |")


if __name__ == "__main__":
    main()
