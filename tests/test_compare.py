"""gansuite-compare: the table and plot of one metric over many runs, from files the tests write themselves."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from PIL import Image

from gansuite.cli import compare
from gansuite.history import record

FID = "val/fid_clf_10k"
COLUMNS = ["step", "train/d_loss", "train/g_loss", FID, "val/is_10k"]


def write_run(run: Path, overrides: list[str], seed: int, steps: int = 30, every: int = 5) -> dict[str, dict[int, float]]:
    """A run directory as a logger=csv run leaves it: .hydra/overrides.yaml and csv/version_0/metrics.csv
    (Lightning's layout: one row per logging call, empty cells for keys it did not log). Returns the values."""
    rng = random.Random(seed)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    logged: dict[str, dict[int, float]] = {key: {} for key in COLUMNS if key != "step"}
    rows = []
    for step in range(steps):
        row = {"step": step, "train/d_loss": rng.uniform(0.5, 1.5), "train/g_loss": rng.uniform(0.5, 3.0)}
        rows.append(row)
        if step % every == every - 1:
            rows.append({"step": step + 1, FID: rng.uniform(5, 100), "val/is_10k": rng.uniform(1, 9)})
    for row in rows:
        for key, value in row.items():
            if key != "step":
                logged[key][row["step"]] = value
    path = run / "csv" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return logged


@pytest.fixture
def multirun(tmp_path):
    root = tmp_path / "multirun"
    runs = {}
    for i, (loss, seed) in enumerate([("hinge", 0), ("hinge", 1), ("lsgan", 0), ("lsgan", 1)]):
        overrides = [f"loss={loss}", f"seed={seed}", "logger=csv", "trainer.max_steps=30"]
        runs[str(i)] = (overrides, write_run(root / str(i), overrides, seed=10 * i))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root, runs


def run_compare(*argv: str, capsys) -> tuple[int, str, str]:
    try:
        compare.main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_holds_each_runs_best_and_last_value_and_the_plot_is_a_png(multirun, tmp_path, capsys):
    root, runs = multirun
    png, table = tmp_path / "out" / "fid.png", tmp_path / "fid.json"
    code, out, err = run_compare(str(root), "--metric", FID, "--out", str(png), "--json", str(table), capsys=capsys)
    assert code == 0, err
    result = json.loads(table.read_text())
    assert result["goal"] == "min" and result["shared_overrides"] == ["logger=csv", "trainer.max_steps=30"]
    assert len(result["rows"]) == 4
    for row in result["rows"]:
        overrides, logged = runs[row["run"]]
        fid = logged[FID]
        best = min(fid.values())
        assert row["best"] == best and row["best_step"] == min(s for s, v in fid.items() if v == best)
        assert (row["last_step"], row["last"]) == (30, fid[30])
        assert row["overrides"] == overrides[:2]  # the ones that differ between the runs
    assert [r["best"] for r in result["rows"]] == sorted(r["best"] for r in result["rows"])  # best first
    # The printed table: one line per run with its overrides and values, and the seeds pooled per loss.
    for row in result["rows"]:
        line = next(x for x in out.splitlines() if x.startswith(f"{row['run']} "))
        assert " ".join(row["overrides"]) in line and f"{row['best']:.6g}" in line and f"{row['last']:.6g}" in line
    pooled = {tuple(p["overrides"]): p for p in result["pooled_over_seeds"]}
    hinge = sorted(r["best"] for r in result["rows"] if r["overrides"][0] == "loss=hinge")
    assert pooled[("loss=hinge",)]["n"] == 2 and pooled[("loss=hinge",)]["best"]["mean"] == pytest.approx(sum(hinge) / 2)
    assert "pooled over seeds" in out
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 300
        image.verify()


def test_higher_is_better_metrics_rank_by_their_highest_value(multirun, tmp_path, capsys):
    root, runs = multirun
    table = tmp_path / "is.json"
    code, _, err = run_compare(str(root / "0"), str(root / "2"), "--metric", "val/is_10k", "--out",
                               str(tmp_path / "is.png"), "--json", str(table), capsys=capsys)
    assert code == 0, err
    rows = json.loads(table.read_text())["rows"]
    assert {r["run"] for r in rows} == {"0", "2"}
    assert all(r["best"] == max(runs[r["run"]][1]["val/is_10k"].values()) for r in rows)
    code, _, _ = run_compare(str(root / "0"), "--metric", "val/is_10k", "--goal", "min", "--out",
                             str(tmp_path / "is.png"), "--json", str(table), capsys=capsys)
    assert json.loads(table.read_text())["rows"][0]["best"] == min(runs["0"][1]["val/is_10k"].values())


def test_without_metric_the_one_fid_logged_is_compared(multirun, tmp_path, capsys):
    root, _ = multirun
    code, out, err = run_compare(str(root), "--out", str(tmp_path / "c.png"), capsys=capsys)
    assert code == 0, err
    assert out.startswith(f"{FID}: 4 runs, best = lowest")


def test_a_metric_no_run_logged_or_no_runs_is_one_line_and_exit_2(multirun, tmp_path, capsys):
    root, _ = multirun
    code, out, err = run_compare(str(root), "--metric", "val/fid_50k", "--out", str(tmp_path / "c.png"), capsys=capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.strip().endswith("no run logged the metric 'val/fid_50k'; available metrics: "
                                "train/d_loss, train/g_loss, val/fid_clf_10k, val/is_10k")
    empty = tmp_path / "empty"
    (empty / "not_a_run").mkdir(parents=True)
    code, _, err = run_compare(str(empty), capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"no runs under {empty}" in err
    assert not (tmp_path / "c.png").exists()


def test_history_and_evaluation_json_are_read_whatever_the_logger(tmp_path, capsys):
    """A logger=wandb (or none) run: its numbers come from history.csv, which every run writes, and the
    evaluations' JSON files; a row cut short by a kill is skipped."""
    run = tmp_path / "wandb_run"
    run.mkdir()
    for step in range(6):
        record(step, {"train/g_loss": 1.0 / (step + 1), "train/d_loss": 2.0}, run)
    record(2, {"val/fid_8": 40.0}, run)
    with open(run / "history.csv", "a") as f:
        f.write("6,train/g_lo")  # killed mid-write
    (run / "checkpoints").mkdir()
    for step, fid in ((2, 40.0), (4, 30.0)):  # as EvalCallback writes them
        (run / "checkpoints" / f"eval_step_{step:06d}.json").write_text(json.dumps(
            {"step": step, "values": {"fid_8": fid}, "protocol": {}, "best": {"fid_8": {"value": 30.0 if step == 4
                                                                                        else 40.0, "step": step}}}))
    runs = [compare.read_run(p) for p in compare.find_runs([tmp_path])]
    assert [r.path for r in runs] == [run.resolve()]
    assert runs[0].series["train/g_loss"] == {s: 1.0 / (s + 1) for s in range(6)}  # from history.csv
    assert runs[0].series["val/fid_8"] == {2: 40.0, 4: 30.0}  # the history row and the JSON files agree
    assert runs[0].series["best/fid_8_step"] == {2: 2, 4: 4}
    code, out, err = run_compare(str(tmp_path), "--out", str(tmp_path / "c.png"), capsys=capsys)
    assert code == 0, err
    (line,) = [x for x in out.splitlines() if x.startswith("wandb_run")]
    assert line.split() == ["wandb_run", "—", "30", "4", "30", "4"]  # run, overrides, best, step, last, step


def test_direction_of_better_covers_every_metric_the_evaluation_ranks():
    from gansuite.metrics.results import HIGHER_IS_BETTER

    assert HIGHER_IS_BETTER <= compare.HIGHER_IS_BETTER
    for key in ("val/is_10k", "val/precision_clf_10k", "val/cond_acc_clf_10k", "val/modes_2500",
                "val/high_quality_2500", "val/psnr", "val/baseline_ssim", "best/is_50k"):
        assert compare.higher_is_better(key), key
    for key in ("val/fid_clf_10k", "val/kid_10k", "val/reverse_kl_2500", "val/stacked_kl_10k", "train/d_loss",
                "val/l1", "val/cycle_l1_a"):
        assert not compare.higher_is_better(key), key


def test_out_and_json_never_replace_files_gansuite_did_not_write(multirun, tmp_path, capsys):
    root, _ = multirun
    png, table = tmp_path / "fid.png", tmp_path / "fid.json"
    png.write_bytes(b"someone's figure")
    code, _, err = run_compare(str(root), "--metric", FID, "--out", str(png), capsys=capsys)
    assert code == 2 and png.read_bytes() == b"someone's figure"
    assert err.strip() == (f"gansuite-compare: error: --out {png} already exists and was not written by gansuite; "
                           "pass a new path, or --overwrite to replace it")
    png.unlink()
    for _ in range(2):  # the second run replaces its own plot and table without asking
        code, _, err = run_compare(str(root), "--metric", FID, "--out", str(png), "--json", str(table), capsys=capsys)
        assert code == 0, err
    assert json.loads(table.read_text())["written_by"] == "gansuite-compare"
    table.write_text('{"mine": 1}')
    code, _, _ = run_compare(str(root), "--metric", FID, "--out", str(png), "--json", str(table), capsys=capsys)
    assert code == 2 and json.loads(table.read_text()) == {"mine": 1}
    code, _, _ = run_compare(str(root), "--metric", FID, "--out", str(png), "--json", str(table), "--overwrite",
                             capsys=capsys)
    assert code == 0 and "rows" in json.loads(table.read_text())
