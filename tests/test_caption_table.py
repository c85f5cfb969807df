"""gansuite-aggregate on text-to-image runs: eval/captions_step_*.json of fake runs, hand-computed means."""

import json
import math

import pytest
from omegaconf import OmegaConf

from gansuite.cli import aggregate
from gansuite.metrics.caption_table import EVALUATION, VALUES, caption_table, find_caption_runs


def _values(acc: float, rho: float, heldout_acc: float, heldout_rho: float) -> dict[str, float]:
    """Every key caption_metrics writes: thickness rho, slant rho - 0.1, size rho - 0.2."""
    values = {}
    for suffix, a, r in (("", acc, rho), ("_heldout_phrasing", heldout_acc, heldout_rho)):
        values[f"digit_acc{suffix}"] = a
        for i, name in enumerate(("thickness", "slant", "size")):
            values[f"rank_corr_{name}{suffix}"] = round(r - 0.1 * i, 10)
    return values


# The parts of a text-to-image run's .hydra/config.yaml the table reads, as Hydra writes it (unresolved).
CONFIG = """
paths: {root_dir: '${oc.env:GANSUITE_ROOT,.}', output_dir: '${hydra:runtime.output_dir}',
        cache_dir: '${oc.env:GANSUITE_CACHE,"~/.cache/gansuite"}'}
data: {_target_: gansuite.data.captions.CaptionedDigits, resolution: 28, batch_size: 64, seed: '${seed}',
       num_workers: 0, mismatch_other_digit: 0.25}
model:
  name: gan_int_cls
  latent_dim: 100
  module: {_target_: gansuite.models.text_to_image.GANINTCLS, latent_dim: '${model.latent_dim}',
           joint_classes: both, mode_seeking_weight: 0.0}
  g_optimizer: {_target_: torch.optim.Adam, _partial_: true, lr: 0.0002, betas: [0.5, 0.999]}
  d_optimizer: {_target_: torch.optim.Adam, _partial_: true, lr: 0.0002, betas: [0.5, 0.999]}
loss:
  name: nonsaturating
  objective: {_target_: gansuite.losses.Objective, d_loss: {_target_: gansuite.losses.bce_d, _partial_: true},
              g_loss: {_target_: gansuite.losses.nonsaturating_g, _partial_: true}}
text_encoder: {_target_: gansuite.data.text_sources.WordGRU, word_dim: 64, hidden: 128, word_dropout: 0.1,
               cache_dir: '${paths.cache_dir}'}
trainer: {max_steps: 4000, accelerator: cpu, checkpoint_every: 500}
logger: {wandb: {name: '${name}-${seed}'}}
callbacks: {sample_grid: {every_n_steps: 500, seed: 1234}}
name: ${model.name}-${loss.name}
"""


def _fake_run(root, name: str, *, seed: int, steps: dict[int, tuple[float, float, float, float]],
              model: str = "gan_int_cls", data: str = "captioned_digits-28px", history: str | None = None,
              overrides: dict | None = None, config: bool = True):
    """A run folder as gansuite-train leaves it: config (CONFIG with ``overrides``, dotted keys as on the command
    line; none with ``config=False``), one captions JSON per measured step, a history.csv."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    if config:
        (run / ".hydra").mkdir()
        composed = OmegaConf.create(CONFIG)
        for key, value in {"model.name": model, "seed": seed, **(overrides or {})}.items():
            OmegaConf.update(composed, key, value)
        OmegaConf.save(composed, run / ".hydra" / "config.yaml")
    for step, numbers in steps.items():
        (run / "eval" / f"captions_step_{step:06d}.json").write_text(json.dumps({
            "step": step, "values": _values(*numbers),
            "protocol": {"data": data, "seed": 0, "generator": "EMA", "classifier": {"name": "offline"}}}, indent=2))
    if history is not None:
        (run / "history.csv").write_text("step,key,value\n" + history)
    return run


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("  ") if cell.strip()]  # two spaces: a cell holds 'mean ± sem'


def _row(out: str, *start: str) -> list[str]:
    """The cells of the first table line whose cells begin with ``start``."""
    return next(cells for line in out.splitlines() if (cells := _cells(line))[:len(start)] == list(start))


def test_the_metric_keys_are_the_ones_caption_metrics_writes():
    from gansuite.data.captions import ATTRIBUTES

    assert set(VALUES) == {f"{k}{s}" for s in ("", "_heldout_phrasing")
                           for k in ("digit_acc", *(f"rank_corr_{a}" for a in ATTRIBUTES))}


def test_the_table_is_the_mean_and_standard_error_of_each_runs_last_measurement(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    # Three seeds at step 4000; an earlier measurement (step 500) of each must not count.
    last = {0: (0.90, 0.80, 0.70, 0.60), 1: (0.80, 0.70, 0.60, 0.50), 2: (0.85, 0.90, 0.65, 0.40)}
    fid = {0: 12.0, 1: 14.0}  # seed 2 has no evaluation at step 4000 (only at 3500)
    for seed, numbers in last.items():
        history = ("3500,val/fid_clf_10k,99.0\n4000,train/d_loss,1.2\n"
                   + (f"4000,val/fid_clf_10k,{fid[seed]}\n4000,val/recall_clf_10k,0.5\n" if seed in fid else ""))
        _fake_run(sweep, str(seed), seed=seed, steps={500: (0.1, 0.0, 0.1, 0.0), 4000: numbers}, history=history)
    # Another setting of the model (MSGAN's term on): its own row, one run, no ± term, no history.csv at all.
    _fake_run(sweep, "other", seed=0, overrides={"model.module.mode_seeking_weight": 0.1},
              steps={4000: (0.5, 0.25, 0.5, 0.25)})
    (sweep / "unfinished" / "eval").mkdir(parents=True)  # a run killed before its first measurement: skipped

    aggregate.main([str(sweep), "--json", str(tmp_path / "table.json")])
    out = capsys.readouterr().out
    cells = _row(out, "captioned_digits-28px", "gan_int_cls", "mode_seeking_weight=0.0")
    assert cells[3:5] == ["3", "4000"]
    # digit acc (0.90, 0.80, 0.85): mean 85.0 %, std 5.0 % -> sem 5 / sqrt(3) = 2.9 %
    # thickness (0.80, 0.70, 0.90): 0.80, std 0.1 -> 0.06; slant and size 0.1 and 0.2 lower, the same sem
    # held out: acc (0.70, 0.60, 0.65) -> 65.0 ± 2.9; rho (0.60, 0.50, 0.40) -> 0.50 ± 0.06, 0.40, 0.30
    # FID over the two runs measured at 4000: (12, 14) -> 13.00 ± 1.00, of 2; recall 0.500 ± 0.000, of 2
    assert cells[5:] == ["85.0 ± 2.9", "0.80 ± 0.06", "0.70 ± 0.06", "0.60 ± 0.06",
                         "65.0 ± 2.9", "0.50 ± 0.06", "0.40 ± 0.06", "0.30 ± 0.06",
                         "13.00 ± 1.00 (2 of 3)", "0.500 ± 0.000 (2 of 3)"]
    assert _row(out, "captioned_digits-28px", "gan_int_cls", "mode_seeking_weight=0.1")[3:] == [
        "1", "4000", "50.0", "0.25", "0.15", "0.05", "50.0", "0.25", "0.15", "0.05", "—", "—"]
    assert "different steps" not in out

    # One line per run under the table: folder, model, setting, seed, step, its own values; the earlier
    # measurement absent.
    run_line = _row(out, str(sweep / "2"))
    assert run_line[1:] == ["gan_int_cls", "mode_seeking_weight=0.0", "2", "4000", "85.0", "0.90", "0.80", "0.70",
                            "65.0", "0.40", "0.30", "0.20", "—", "—"]
    assert _row(out, str(sweep / "0"))[-2:] == ["12.00", "0.500"]

    table = json.loads((tmp_path / "table.json").read_text())
    row = table["rows"][0]
    assert (row["model"], row["n"], row["seeds"], row["steps"]) == ("gan_int_cls", 3, [0, 1, 2], [4000])
    assert row["setting"] == "mode_seeking_weight=0.0"
    assert row["differs"] == {"model.module.mode_seeking_weight": 0.0}
    sem = 0.05 / math.sqrt(3)  # std of (0.90, 0.80, 0.85) and of (0.70, 0.60, 0.65)
    assert row["digit_acc"] == pytest.approx({"mean": 0.85, "sem": sem}, rel=0, abs=1e-12)
    assert row["digit_acc_heldout_phrasing"] == pytest.approx({"mean": 0.65, "sem": sem}, rel=0, abs=1e-12)
    assert row["rank_corr_slant"] == pytest.approx({"mean": 0.70, "sem": 0.1 / math.sqrt(3)}, rel=0, abs=1e-12)
    assert row["rank_corr_size_heldout_phrasing"] == pytest.approx({"mean": 0.30, "sem": 0.1 / math.sqrt(3)},
                                                                   rel=0, abs=1e-12)
    assert row["fid_clf_10k"] == pytest.approx({"mean": 13.0, "sem": 1.0}, rel=0, abs=1e-12)
    assert row["fid_clf_10k_n"] == 2 and row["recall_clf_10k_n"] == 2
    assert len(row["runs"]) == 3
    single = table["rows"][1]
    assert single["setting"] == "mode_seeking_weight=0.1" and single["digit_acc"] == {"mean": 0.5, "sem": None}
    assert single["differs"] == {"model.module.mode_seeking_weight": 0.1}
    assert single["fid_clf_10k"] is None and single["fid_clf_10k_n"] == 0
    assert [r["step"] for r in table["runs"]] == [4000] * 4
    assert table["runs"][2]["fid_clf_10k"] is None and table["runs"][0]["fid_clf_10k"] == 12.0
    assert table["runs"][0]["values"]["rank_corr_thickness"] == 0.80
    assert [r["setting"] for r in table["runs"]] == ["mode_seeking_weight=0.0"] * 3 + ["mode_seeking_weight=0.1"]


def test_a_killed_run_counts_with_its_last_measurement_and_the_row_says_so(tmp_path, capsys):
    _fake_run(tmp_path, "a", seed=0, steps={3000: (0.8, 0.6, 0.5, 0.4), 4000: (0.9, 0.8, 0.7, 0.6)})
    _fake_run(tmp_path, "b", seed=1, steps={3000: (0.7, 0.4, 0.5, 0.2)})  # killed before step 3500
    # The last step by number, not by name: 1,000,000 sorts after 999,999 only as a number.
    _fake_run(tmp_path, "c", seed=2, steps={999_999: (0.1, 0.1, 0.1, 0.1), 1_000_000: (0.5, 0.5, 0.5, 0.5)},
              model="long")
    runs = {r.path.name: r for r in find_caption_runs([tmp_path])}
    assert (runs["a"].step, runs["b"].step, runs["c"].step) == (4000, 3000, 1_000_000)
    assert runs["a"].values["digit_acc"] == 0.9 and runs["c"].values["digit_acc"] == 0.5

    aggregate.main([str(tmp_path)])
    out = capsys.readouterr().out
    cells = _row(out, "captioned_digits-28px", "gan_int_cls")
    assert cells[2:5] == ["2", "3000-4000", "80.0 ± 10.0"]  # (0.9 + 0.7) / 2, std 0.1414 / sqrt(2)
    assert "gan_int_cls on captioned_digits-28px: its runs end at different steps (3000-4000)" in out
    assert "long on captioned_digits-28px" not in out
    assert _row(out, str(tmp_path / "b"))[2:4] == ["1", "3000"]
    assert "FID" not in out  # no run has a history.csv: no evaluation columns


def test_the_evaluation_is_taken_at_the_step_of_the_last_measurement(tmp_path):
    history = ("4000,val/fid_clf_10k,10.0\n4000,val/recall_clf_10k,0.25\n"
               "5000,val/fid_clf_10k,3.0\n"  # after the captions measurement: not its step
               "4000,val/fid_clf_10k,11.0\n"  # a resumed run logged step 4000 again: the last row wins
               "4000,val/recall_clf_10k\n")  # cut short by a kill: skipped
    _fake_run(tmp_path, "a", seed=0, steps={4000: (0.9, 0.8, 0.7, 0.6)}, history=history)
    (run,) = find_caption_runs([tmp_path])
    assert run.evaluation == {"fid_clf_10k": 11.0, "recall_clf_10k": 0.25}
    table = caption_table([run])
    assert table["evaluation"] == list(EVALUATION)
    assert table["rows"][0]["fid_clf_10k"].mean == 11.0 and table["rows"][0]["fid_clf_10k"].sem is None


def test_runs_of_other_data_sets_are_other_rows(tmp_path):
    _fake_run(tmp_path, "a", seed=0, steps={4000: (0.9, 0.8, 0.7, 0.6)})
    _fake_run(tmp_path, "b", seed=1, steps={4000: (0.7, 0.6, 0.5, 0.4)}, data="captioned_digits-32px")
    rows = caption_table(find_caption_runs([tmp_path]))["rows"]
    assert [(r["data"], r["n"]) for r in rows] == [("captioned_digits-28px", 1), ("captioned_digits-32px", 1)]


def test_each_setting_of_a_sweep_is_its_own_row_labelled_by_what_differs(tmp_path, capsys):
    # model.module.joint_classes=both,digit x seed=0,1. Seeds of one setting also differ in what the table must not
    # compare: data.seed set outright, the output folder, the logger's run name, a callback's seed.
    sweep = tmp_path / "sweep"
    numbers = {("both", 0): (0.9, 0.8, 0.7, 0.6), ("both", 1): (0.7, 0.6, 0.5, 0.4),
               ("digit", 0): (0.6, 0.4, 0.5, 0.2), ("digit", 1): (0.5, 0.2, 0.3, 0.0)}
    for (classes, seed), values in numbers.items():
        _fake_run(sweep, f"{classes}-{seed}", seed=seed, steps={4000: values}, overrides={
            "model.module.joint_classes": classes, "data.seed": 100 + seed,
            "paths.output_dir": str(sweep / f"{classes}-{seed}"), "logger.wandb.name": f"run-{seed}",
            "callbacks.sample_grid.seed": seed})

    aggregate.main([str(sweep), "--json", str(tmp_path / "table.json")])
    out = capsys.readouterr().out
    header = _cells(out.splitlines()[0])
    assert header[:5] == ["data", "model", "setting", "n", "steps"]
    # both: acc (0.9, 0.7) -> 80.0, std 0.1414 / sqrt(2) = 10.0 %; thickness (0.8, 0.6) -> 0.70 ± 0.10, slant
    # and size 0.1 and 0.2 lower; held out acc (0.7, 0.5) -> 60.0 ± 10.0, rho (0.6, 0.4) -> 0.50 ± 0.10
    assert _row(out, "captioned_digits-28px", "gan_int_cls", "joint_classes=both")[3:] == [
        "2", "4000", "80.0 ± 10.0", "0.70 ± 0.10", "0.60 ± 0.10", "0.50 ± 0.10",
        "60.0 ± 10.0", "0.50 ± 0.10", "0.40 ± 0.10", "0.30 ± 0.10"]
    # digit: acc (0.6, 0.5) -> 55.0 ± 5.0; rho (0.4, 0.2) -> 0.30 ± 0.10; held out (0.5, 0.3) -> 40.0 ± 10.0,
    # rho (0.2, 0.0) -> 0.10 ± 0.10, then 0.00 and -0.10
    assert _row(out, "captioned_digits-28px", "gan_int_cls", "joint_classes=digit")[3:] == [
        "2", "4000", "55.0 ± 5.0", "0.30 ± 0.10", "0.20 ± 0.10", "0.10 ± 0.10",
        "40.0 ± 10.0", "0.10 ± 0.10", "0.00 ± 0.10", "-0.10 ± 0.10"]
    assert _row(out, str(sweep / "digit-1"))[1:5] == ["gan_int_cls", "joint_classes=digit", "1", "4000"]
    table = json.loads((tmp_path / "table.json").read_text())
    assert [(r["setting"], r["differs"], r["seeds"]) for r in table["rows"]] == [
        ("joint_classes=both", {"model.module.joint_classes": "both"}, [0, 1]),
        ("joint_classes=digit", {"model.module.joint_classes": "digit"}, [0, 1])]
    assert table["rows"][1]["digit_acc"] == pytest.approx({"mean": 0.55, "sem": 0.05}, rel=0, abs=1e-12)

    # A run trained for another number of steps is another setting: three rows, labelled by both keys.
    _fake_run(tmp_path / "short", "both-0", seed=0, steps={2000: (0.3, 0.3, 0.3, 0.3)},
              overrides={"trainer.max_steps": 2000})
    rows = caption_table(find_caption_runs([sweep, tmp_path / "short"]))["rows"]
    assert [(r["setting"], r["n"], r["steps"]) for r in rows] == [
        ("joint_classes=both max_steps=2000", 1, [2000]), ("joint_classes=both max_steps=4000", 2, [4000]),
        ("joint_classes=digit max_steps=4000", 2, [4000])]
    assert rows[0]["differs"] == {"model.module.joint_classes": "both", "trainer.max_steps": 2000}


def test_a_setting_is_read_from_the_values_and_named_by_its_shortest_unambiguous_key(tmp_path):
    steps = {4000: (0.5, 0.5, 0.5, 0.5)}
    # =0 on the command line is the default 0.0: one setting, so one row without a label.
    _fake_run(tmp_path, "default", seed=0, steps=steps)
    _fake_run(tmp_path, "zero", seed=1, steps=steps, overrides={"model.module.mode_seeking_weight": 0})
    (row,) = caption_table(find_caption_runs([tmp_path]))["rows"]
    assert (row["n"], row["setting"], row["differs"]) == (2, None, {})

    # G's learning rate (D has one too: g_optimizer.lr) and loss=hinge (the classes by their names; loss.name
    # as model.name is another name); the data's mismatched captions.
    _fake_run(tmp_path, "hinge", seed=0, steps=steps, overrides={
        "model.g_optimizer.lr": 0.0001, "data.mismatch_other_digit": 0.5, "loss.name": "hinge",
        "loss.objective.d_loss._target_": "gansuite.losses.hinge_d",
        "loss.objective.g_loss._target_": "gansuite.losses.hinge_g"})
    rows = caption_table(find_caption_runs([tmp_path]))["rows"]
    assert [r["setting"] for r in rows] == [
        "g_optimizer.lr=0.0001 mismatch_other_digit=0.5 loss.name=hinge d_loss=hinge_d g_loss=hinge_g",
        "g_optimizer.lr=0.0002 mismatch_other_digit=0.25 loss.name=nonsaturating d_loss=bce_d g_loss=nonsaturating_g"]
    assert rows[0]["differs"]["loss.objective.d_loss._target_"] == "gansuite.losses.hinge_d"


def test_runs_without_a_config_are_grouped_by_data_and_model(tmp_path, capsys):
    _fake_run(tmp_path, "a", seed=0, steps={4000: (0.9, 0.8, 0.7, 0.6)}, config=False)
    _fake_run(tmp_path, "b", seed=1, steps={4000: (0.7, 0.6, 0.5, 0.4)}, config=False)
    (row,) = caption_table(find_caption_runs([tmp_path]))["rows"]
    assert (row["model"], row["setting"], row["n"], row["seeds"]) == ("?", None, 2, [None, None])
    aggregate.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "setting" not in out
    assert _row(out, "captioned_digits-28px", "?")[2:5] == ["2", "4000", "80.0 ± 10.0"]


def test_a_measurement_without_its_values_is_a_one_line_error(tmp_path, capsys):
    run = _fake_run(tmp_path, "a", seed=0, steps={4000: (0.9, 0.8, 0.7, 0.6)})
    record = json.loads((run / "eval" / "captions_step_004000.json").read_text())
    del record["values"]["rank_corr_size_heldout_phrasing"]
    (run / "eval" / "captions_step_004000.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit) as exit_info:
        aggregate.main([str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "captions_step_004000.json is not a captions measurement" in err and "rank_corr_size_heldout" in err


def test_a_folder_without_any_result_is_still_the_one_line_error(tmp_path, capsys):
    (tmp_path / "empty" / "eval").mkdir(parents=True)
    (tmp_path / "empty" / "eval" / "captions.json").write_text("{}")  # not a captions_step_*.json
    with pytest.raises(SystemExit) as exit_info:
        aggregate.main([str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("gansuite-aggregate: error: no eval/modes.json") and err.count("\n") == 1
    assert "eval/captions_step_*.json" in err


def test_2d_runs_come_first_as_anomaly_runs_do(tmp_path, capsys):
    _fake_run(tmp_path, "captions", seed=0, steps={4000: (0.9, 0.8, 0.7, 0.6)})
    modes = tmp_path / "ring" / "eval"
    modes.mkdir(parents=True)
    (modes / "modes.json").write_text(json.dumps({"step": 100, "modes": 8, "high_quality": 0.9, "reverse_kl": 0.1,
                                                  "data": {"modes": "ring8"}, "pack": 1, "seed": 0}))
    aggregate.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith("data ") and "ring8" in out and "captioned_digits" not in out
