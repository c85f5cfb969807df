"""Start-up: seconds from launching ``gansuite-train`` to its first training batch, with a clean cache.

    python benchmarks/startup.py                  # the default run (evaluation on), 3 launches
    python benchmarks/startup.py --repeats 1 -- model=projection

Each launch is a fresh process of the installed ``gansuite-train`` with ``GANSUITE_CACHE`` and ``TORCH_HOME``
pointing at new empty folders (nothing computed by an earlier run helps it) and outputs in a temporary folder.
A callback added on the command line prints the time since the process started when the first training
batch begins, then ends the process. The run's own log lines, with their timestamps, show where the time went.

Target (issue 15): at most 20 s to the first training step of the default run on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

MARK = "gansuite-startup: first batch after"


class FirstBatch(L.Callback):
    """Prints the seconds since this process started at the first training batch, then ends the process."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        started = _process_start()
        print(f"{MARK} {time.time() - started:.2f} s", flush=True)
        os._exit(0)


def _process_start() -> float:
    """This process's start time (seconds since the epoch), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + start_ticks / ticks


def launch(overrides: list[str]) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GANSUITE_CACHE": f"{tmp}/cache", "TORCH_HOME": f"{tmp}/torch",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]),
               "WANDB_MODE": "offline"}
        command = [str(Path(sys.executable).parent / "gansuite-train"), f"hydra.run.dir={tmp}/run",
                   "+callbacks.first_batch._target_=startup.FirstBatch", *overrides]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        out = done.stdout + done.stderr
        line = next((x for x in out.splitlines() if MARK in x), None)
        if line is None:
            raise SystemExit(f"the run ended without a training batch (exit {done.returncode}):\n{out[-3000:]}")
        return float(line.split(MARK)[1].split()[0]), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--show-log", action="store_true", help="print the last launch's log lines")
    parser.add_argument("--json", type=Path, default=None, help="also write the times here")
    parser.add_argument("overrides", nargs="*", help="gansuite-train overrides (after --)")
    args = parser.parse_args()
    times, out = [], ""
    for _ in range(args.repeats):
        seconds, out = launch(args.overrides)
        times.append(seconds)
    if args.show_log:
        print(out)
    if args.json:
        args.json.write_text(json.dumps({"overrides": args.overrides, "seconds": times,
                                         "median_s": statistics.median(times)}) + "\n")
    print(f"gansuite-train {' '.join(args.overrides) or '(default run)'}: clean cache to first training batch: "
          f"median {statistics.median(times):.1f} s over {len(times)} launches ({', '.join(f'{t:.1f}' for t in times)}); "
          f"target <= 20 s on 2 CPU cores; {os.cpu_count()} CPUs here")


if __name__ == "__main__":
    main()
