"""The command line as a user runs it: subprocesses, offline W&B, the ring8 done-criterion."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gansuite.config.build import build
from gansuite.training.checkpointing import read_checkpoint

from .conftest import GANSUITE_TRAIN, make_cfg

pytestmark = pytest.mark.slow


def gansuite_train(run_dir: Path, *overrides: str, cwd: Path, threads: int | None = None) -> subprocess.CompletedProcess:
    # A user's shell: no W&B key, no netrc, and none of the W&B state the test process may hold.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    if threads is not None:
        # Tiny MLPs gain nothing from threads, and several threads on a busy 2-core machine
        # slow them down many times over (measured: 4,000 ring steps took over 15 minutes).
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(HOME=str(cwd), NETRC=str(cwd / "no-netrc"), WANDB_DIR=str(cwd), WANDB_CONFIG_DIR=str(cwd / "wandb-config"))
    result = subprocess.run([GANSUITE_TRAIN, f"hydra.run.dir={run_dir}", *overrides], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_default_command_offline_wandb_and_resume_into_the_same_run(tmp_path):
    first = tmp_path / "first"
    result = gansuite_train(first, "trainer.max_steps=100", "trainer.checkpoint_every=50",
                            "callbacks.sample_grid.every_n_steps=50", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert output.count("logging offline") == 1
    # Lines every run used to print that say nothing to the user (issue 17).
    for noise in ("anonymous setting", "💡 Tip", "`weights_only` was not set", "`Trainer.fit` stopped"):
        assert noise not in output, noise
    assert "step 100 of 100" in output
    assert sorted(p.name for p in (first / "samples").glob("*.png")) == ["step_000050.png", "step_000100.png"]
    assert (first / "checkpoints" / "step_000100.ckpt").is_file()
    # The default evaluation: the offline MNIST's domain classifier at the end of the run.
    evaluation = json.loads((first / "checkpoints" / "eval_step_000100.json").read_text())
    assert evaluation["protocol"]["feature_extractor"] == "classifier:mnist_offline-28px"
    assert {"fid_clf_10k", "classes_covered_clf_10k"} <= set(evaluation["values"])
    runs = list((first / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    run_id = read_checkpoint(first / "checkpoints" / "last.ckpt")["wandb_run_id"]
    assert runs[0].name.endswith(run_id)

    second = tmp_path / "second"
    gansuite_train(second, "trainer.max_steps=120", f"resume={first}", cwd=tmp_path)
    resumed = list((second / "wandb").glob("offline-run-*"))
    assert len(resumed) == 1 and resumed[0].name.endswith(run_id)
    assert read_checkpoint(second / "checkpoints" / "last.ckpt")["gansuite_step"] == 120


def test_vanilla_gan_puts_ring8_samples_on_the_ring(tmp_path):
    run = tmp_path / "ring"
    gansuite_train(run, "experiment=ring8_gan", "logger=none", cwd=tmp_path, threads=1)
    assert (run / "samples" / "step_004000.png").is_file()
    _, module = build(make_cfg(tmp_path, "experiment=ring8_gan", tiny=False))
    module.load_state_dict(read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"])
    points = module.sample(module.make_inputs(2500, torch.Generator().manual_seed(0)))
    radius = points.norm(dim=1)
    # The ring's modes have std 0.01: a sample "near the ring" is within 0.1 of radius 1.
    assert ((radius - 1).abs() < 0.1).float().mean() > 0.9
    angles = torch.atan2(points[:, 1], points[:, 0])
    nearest_mode = torch.round(angles / (2 * math.pi / 8)).remainder(8)
    assert nearest_mode.unique().numel() >= 4  # not a single collapsed point


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_preemption_signal_saves_last_ckpt_and_exits_non_zero(tmp_path, signum, status):
    """What SLURM and Kubernetes send before they stop a job: the run ends as after a Ctrl-C, saved."""
    run_dir = tmp_path / "run"
    overrides = ["trainer=debug", "logger=none", "eval=none", "model.latent_dim=8", "data.batch_size=8",
                 "model.generator.width=4", "model.discriminator.width=4", "trainer.max_steps=100000",
                 "trainer.checkpoint_every=5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([GANSUITE_TRAIN, f"hydra.run.dir={run_dir}", *overrides], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "step_000005.ckpt").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
            time.sleep(0.2)
        process.send_signal(signum)
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == status, err[-3000:]
    assert f"{signal.Signals(signum).name}: stopping after this batch" in out + err
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 5 <= last["gansuite_step"] < 100000


def test_train_log_tells_the_story_of_a_run_and_of_its_failure(tmp_path):
    """train.log holds the code's commit, the logged losses, every evaluation, the end, and the error of a failed run."""
    tiny = ["trainer=debug", "logger=none", "model.generator.width=4", "model.discriminator.width=4",
            "data.batch_size=8", "eval.every_n_steps=4", "eval.num_samples=64", "eval.num_real=64",
            "trainer.log_every_n_steps=2"]
    run = tmp_path / "run"
    gansuite_train(run, *tiny, "trainer.max_steps=4", cwd=tmp_path, threads=1)
    log = (run / "train.log").read_text()
    steps = [line.split(" - ", 1)[1] for line in log.splitlines() if "[gansuite.history]" in line]
    assert [s.split(":", 1)[0] for s in steps] == ["step 1", "step 3", "step 4"], log
    assert "train/d_loss=" in steps[0] and "train/g_loss=" in steps[1]
    assert "val/fid_clf_64=" in steps[2]
    assert "step 4 of 4" in log.splitlines()[-1]
    history = (run / "history.csv").read_text().splitlines()
    assert history[0] == "step,key,value" and "1,train/d_loss," in history[1]
    assert any(line.startswith("4,val/fid_clf_64,") for line in history)

    failed = tmp_path / "failed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    no_eval = [o for o in tiny if not o.startswith("eval.")] + ["eval=none"]
    result = subprocess.run([GANSUITE_TRAIN, f"hydra.run.dir={failed}", *no_eval, "trainer.max_steps=4",
                             "+model.module.loss_limit=0.5"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1
    sentence = result.stderr.strip().splitlines()[-1].removeprefix("gansuite-train: ")
    assert sentence.startswith("stopped: ") and "diverged" in sentence
    assert (failed / "train.log").read_text().splitlines()[-1].endswith(f"[ERROR] - {sentence}")


def test_gansuite_imports_from_a_folder_holding_a_clone_named_gansuite(tmp_path):
    # From the clone's parent folder, the clone itself (no __init__.py) is a namespace package named gansuite.
    # The clone's folders (e.g. its sweeps/) used to shadow the package's modules; the editable install must
    # find the real package first (pyproject: package-dir).
    (tmp_path / "gansuite" / "training").mkdir(parents=True)
    code = "import gansuite; from gansuite.training.sweeps import in_multirun; print(gansuite.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent == Path(__file__).parents[1] / "gansuite"
    result = subprocess.run([sys.executable, "-m", "gansuite.cli.train", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
