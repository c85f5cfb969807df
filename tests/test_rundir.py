"""Run directories no two runs share, and a stopped SLURM job that requeues and resumes by itself
(gansuite/training/rundir.py): the pieces on a DictConfig, then real gansuite-train processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import submitit
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict, read_write

from gansuite.config.keys import CONF_DIR
from gansuite.errors import ConfigError
from gansuite.training import rundir
from gansuite.training.rundir import LOCK, REQUEUED, RunDirectory, auto_resume, claim

from .conftest import GANSUITE_TRAIN

TINY = ["trainer=debug", "logger=none", "eval=none", "callbacks=none", "model.latent_dim=8",
        "model.generator.width=4", "model.discriminator.width=4", "data.batch_size=8"]
# Hydra's ${now:} as two runs started in the same second see it: a sitecustomize on PYTHONPATH fixes the clock.
FIXED_CLOCK = """
import datetime
import hydra.core.utils

class _Fixed(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2030, 1, 2, 3, 4, 5)

hydra.core.utils.datetime = _Fixed  # the datetime Hydra's ${now:} resolver calls
"""


@pytest.fixture(autouse=True)
def _no_job_environment(monkeypatch):
    """The tests decide whether they run as a rank, a SLURM job or a submitit job."""
    for name in ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
                 "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)


def hydra_cfg(*overrides: str):
    """The composed config with its hydra node, as a callback receives it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder: Path, **holder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    lock.write_text(json.dumps({"host": socket.gethostname(), "slurm_job": None, "slurm_restart": 0, **holder}))
    return lock


# ----------------------------------------------------------------------------- run directories
def test_a_directory_from_the_config_is_never_shared_the_next_run_takes_dash_2(tmp_path):
    wanted = str(tmp_path / "outputs" / "2030-01-02" / "03-04-05")
    assert claim(wanted, explicit=False) == wanted
    assert claim(wanted, explicit=False) == wanted + "-2"
    assert claim(wanted, explicit=False) == wanted + "-3"
    holder = json.loads(Path(wanted + "-2", LOCK).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()


def _claim(path: str) -> str:
    return claim(path, explicit=False)


def test_processes_claiming_one_directory_at_once_each_get_their_own(tmp_path):
    wanted = str(tmp_path / "03-04-05")
    with ProcessPoolExecutor(4) as pool:
        claimed = list(pool.map(_claim, [wanted] * 8))
    assert sorted(claimed) == sorted([wanted] + [f"{wanted}-{n}" for n in range(2, 9)])


def test_an_explicit_directory_held_by_a_live_run_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    folder = tmp_path / "mine"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(folder, pid=sleeper.pid)
        with pytest.raises(ConfigError, match=r"^hydra\.run\.dir=.*mine is in use by another gansuite run \(pid "
                                              rf"{sleeper.pid} on .*pick another hydra\.run\.dir"):
            claim(str(folder), explicit=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claim(str(folder), explicit=True) == str(folder)  # its process is gone: the lock was stale
    assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()
    # An explicit directory is the user's: a finished run's directory is reused as Hydra always did.
    assert claim(str(tmp_path / "mine"), explicit=True) == str(folder)


def test_a_lock_from_another_host_counts_as_alive_unless_an_earlier_start_of_this_slurm_job_wrote_it(
        tmp_path, monkeypatch):
    lock = write_lock(tmp_path / "run", host="node-7", pid=dead_pid(), slurm_job="42", slurm_restart=0)
    with pytest.raises(ConfigError, match=r"on node-7.*delete .*\.gansuite\.lock if that run is gone"):
        claim(str(tmp_path / "run"), explicit=True, key="hydra.sweep.dir")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # this job, requeued: its first start was killed on node-7
    claim(str(tmp_path / "run"), explicit=True)
    assert json.loads(lock.read_text())["slurm_restart"] == 1


def test_the_callback_moves_a_taken_run_directory_before_hydra_reads_it(tmp_path):
    taken = tmp_path / "outputs" / "03-04-05"
    claim(str(taken), explicit=False)
    cfg = hydra_cfg(*TINY)
    with read_write(cfg), open_dict(cfg):  # as the default pattern resolves at that second
        cfg.hydra.run.dir = str(taken)
    RunDirectory().on_run_start(config=cfg)
    assert cfg.hydra.run.dir == f"{taken}-2" and Path(f"{taken}-2", LOCK).is_file()


def test_a_taken_sweep_directory_reaches_every_job_of_the_multirun(tmp_path):
    taken = tmp_path / "multirun" / "03-04-05"
    claim(str(taken), explicit=False)
    cfg = hydra_cfg(*TINY)
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.sweep.dir = str(taken)
    RunDirectory().on_multirun_start(config=cfg)
    assert cfg.hydra.sweep.dir == f"{taken}-2"
    # Each job recomposes its config from the hydra overrides (load_sweep_config): the new directory is one.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        job = GlobalHydra.instance().config_loader().load_sweep_config(cfg, ["seed=1"])
    assert job.hydra.sweep.dir == f"{taken}-2" and job.seed == 1


def test_the_callback_refuses_an_explicit_directory_in_use_with_one_line_and_status_2(tmp_path, capsys):
    folder = tmp_path / "run"
    write_lock(folder, pid=os.getppid())  # pytest's parent: alive
    cfg = hydra_cfg(*TINY, f"hydra.run.dir={folder}")
    with pytest.raises(SystemExit) as stop:  # Hydra turns a callback's exception into a warning and runs anyway
        RunDirectory().on_run_start(config=cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"gansuite-train: error: hydra.run.dir={folder} is in use")


def test_other_ranks_claim_nothing(tmp_path, monkeypatch):
    """Lightning starts ranks 1.. with hydra.run.dir set to rank 0's directory, which rank 0 holds."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    folder = tmp_path / "run"
    write_lock(folder, pid=os.getppid())
    cfg = hydra_cfg(*TINY, f"hydra.run.dir={folder}")
    RunDirectory().on_run_start(config=cfg)
    assert cfg.hydra.run.dir == str(folder)


# ----------------------------------------------------------------------------- requeue and resume
def save_checkpoint(run: Path, name: str = "last.ckpt") -> None:
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / name).write_bytes(b"")


def test_auto_resume_continues_a_requeued_job_from_its_own_directory_only(tmp_path, monkeypatch):
    run, other = tmp_path / "run", str(tmp_path / "other")
    assert auto_resume(run, None) is None  # a new run
    assert auto_resume(run, other) == other  # resume= as given
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert auto_resume(run, None) is None  # requeued before it saved anything: starts again
    assert auto_resume(run, other) == other
    save_checkpoint(run, "step_000500.ckpt")  # killed between the step file and last.ckpt
    assert auto_resume(run, None) == str(run)
    save_checkpoint(run)
    assert auto_resume(run, None) == str(run)
    # Its own progress wins over the resume= it was first started with: that run is where it began.
    assert auto_resume(run, other) == str(run)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # SLURM sets 0 too: not requeued
    assert auto_resume(run, None) is None and auto_resume(run, other) == other


def test_a_job_that_submitit_requeued_is_known_by_its_job_id(tmp_path, monkeypatch):
    """submitit's local executor has no restart count: the requeue leaves the job id in the run directory."""
    run = tmp_path / "run"
    save_checkpoint(run)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "1234")
    assert auto_resume(run, None) is None
    (run / REQUEUED).write_text("999")  # another job's: a run given this directory later
    assert auto_resume(run, None) is None
    (run / REQUEUED).write_text("1234")
    assert auto_resume(run, None) == str(run)


def test_submitits_signal_stops_training_first_and_requeues_at_once_outside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "1234")
    usr = submitit.JobEnvironment._usr_sig()
    assert usr == signal.SIGUSR2  # what #SBATCH --signal names below
    calls, at_exit = [], []
    monkeypatch.setattr(rundir.atexit, "register", lambda *args: at_exit.append(args))
    saved = {s: signal.getsignal(s) for s in (usr, signal.SIGUSR1)}
    try:
        for training in (True, False):
            calls.clear()
            signal.signal(usr, lambda signum, frame: calls.append("submitit requeues"))  # as process_job sets it
            signal.signal(signal.SIGUSR1, (lambda signum, frame: calls.append("gansuite stops")) if training
                          else signal.SIG_DFL)
            rundir.SaveBeforeRequeue().on_job_start(config=OmegaConf.create({"hydra": {"runtime": {
                "output_dir": str(tmp_path)}}}), task_function=None)
            os.kill(os.getpid(), usr)
            os.kill(os.getpid(), usr)  # a second signal while stopping changes nothing
            if training:
                assert calls == ["gansuite stops"] and len(at_exit) == 1  # submitit's handler once the run exits
                assert at_exit[0][0] is rundir._requeue_at_exit
            else:
                assert calls == ["submitit requeues"] * 2 and len(at_exit) == 1
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_the_slurm_launcher_asks_for_submitits_signal_early_and_requeues_at_the_time_limit(tmp_path, monkeypatch):
    """hydra/launcher=slurm composed and launched up to the sbatch file (a stand-in srun, no SLURM)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = hydra_cfg(*TINY, "hydra/launcher=slurm", "trainer=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert cfg.hydra.callbacks.save_before_requeue._target_ == "gansuite.training.rundir.SaveBeforeRequeue"
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    executors = []
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", lambda self, *a: executors.append(self._executor) or [])
    launcher.launch([["seed=0"]], initial_job_idx=0)
    slurm = executors[0]
    sbatch = slurm._make_submission_file_text("python -m submitit.core._submit folder", "uid")
    assert "#SBATCH --signal=USR2@300" in sbatch.splitlines()  # submitit's signal, 5 minutes ahead
    assert slurm.max_num_timeout == 20  # requeued at the time limit (0 would end the job there)


# ----------------------------------------------------------------------------- real gansuite-train processes
def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_write_to_two_directories(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FIXED_CLOCK)
    env = env_with(PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    runs = [subprocess.Popen([GANSUITE_TRAIN, *TINY, f"trainer.max_steps={steps}", f"seed={steps}"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for steps in (3, 5)]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    day = tmp_path / "outputs" / "2030-01-02"
    assert sorted(p.name for p in day.iterdir()) == ["03-04-05", "03-04-05-2"]
    steps = set()
    for run_dir in day.iterdir():
        config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        # The config beside the checkpoint is the run's that wrote it.
        assert last["gansuite_step"] == config.trainer.max_steps == last["gansuite_config"]["trainer"]["max_steps"]
        assert last["gansuite_config"]["seed"] == config.seed
        assert not (run_dir / LOCK).exists()  # released at exit
        steps.add(config.trainer.max_steps)
    assert steps == {3, 5}


@pytest.mark.slow
def test_gansuite_train_refuses_an_explicit_run_directory_a_live_run_holds(tmp_path):
    folder = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        write_lock(folder, pid=sleeper.pid)
        result = subprocess.run([GANSUITE_TRAIN, *TINY, f"hydra.run.dir={folder}"], cwd=tmp_path, env=env_with(),
                                capture_output=True, text=True, timeout=600)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"gansuite-train: error: hydra.run.dir={folder} is in use by another gansuite run (pid {sleeper.pid}")
    assert sorted(p.name for p in folder.iterdir()) == [LOCK]  # nothing written into the other run's directory


def _processes(*words: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if all(word in cmdline for word in words):
                pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the job's process through /proc")
def test_a_job_stopped_by_submitits_signal_saves_is_requeued_and_resumes_in_its_own_directory(tmp_path):
    """The SLURM chain on one machine, with submitit's local executor in place of SLURM: the signal submitit
    asks SLURM for, gansuite's stop and save, submitit's checkpoint and requeue, the same Hydra job started
    again in the same directory, and the resume there."""
    sweep, max_steps = tmp_path / "sweep", 60
    master = subprocess.Popen(
        [GANSUITE_TRAIN, "-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", *TINY,
         f"trainer.max_steps={max_steps}", "trainer.checkpoint_every=5"],
        cwd=tmp_path, env=env_with(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (sweep / "0" / "checkpoints" / "step_000005.ckpt").exists():
            assert master.poll() is None and time.monotonic() < deadline, master.communicate()[1][-3000:]
            time.sleep(0.1)
        (job,) = _processes("submitit.core._submit", str(sweep))
        os.kill(job, submitit.JobEnvironment._usr_sig())
        _, err = master.communicate(timeout=300)
    finally:
        master.kill()
    assert master.returncode == 0, err[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "multirun.yaml"]
    log = (sweep / "0" / "train.log").read_text()
    assert "SIGUSR2: the job reaches its time limit or is preempted: stopping as on SIGUSR1" in log
    stopped = int(re.search(r"stopped at step (\d+); checkpoints/last\.ckpt holds it", log).group(1))
    assert 5 <= stopped < max_steps
    assert "Requeued job" in log  # submitit's own line, after the save
    assert f"requeued job: resuming from its own run directory {sweep / '0'}" in log
    assert f"resuming from {sweep / '0' / 'checkpoints' / 'last.ckpt'} at step {stopped}" in log
    last = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["gansuite_step"] == max_steps
