"""End to end: the real composed config, shrunk, trained on offline data; exact resume."""

from __future__ import annotations

import csv
import itertools
import os
import signal

import lightning as L
import pytest
import torch
from PIL import Image

from gansuite import losses
from gansuite.config.build import build
from gansuite.errors import ConfigError, NonFiniteLossError
from gansuite.training.run import train

from .conftest import assert_trained, make_cfg, trains

MODELS = ["gan", "dcgan"]
LOSSES = ["minimax", "nonsaturating", "lsgan", "wgan", "wgan_gp", "hinge"]


def test_default_run_writes_checkpoints_and_sample_grids(tmp_path):
    cfg = make_cfg(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every=2",
                   "callbacks.sample_grid.every_n_steps=2")
    result = train(cfg)
    assert result["step"] == 4
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step_000002.ckpt", "step_000004.ckpt"]
    grids = sorted((tmp_path / "samples").glob("*.png"))
    assert [p.name for p in grids][-1] == "step_000004.png"
    with Image.open(grids[-1]) as image:
        assert image.size[0] > 28 * 4  # a grid of 28 px digits, not a single sample
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["gansuite_step"] == 4
    assert checkpoint["gansuite_config"]["model"]["name"] == "dcgan"
    assert {"torch", "numpy", "python"} <= checkpoint["rng_states"].keys()
    assert any(k.startswith("generator_ema.") for k in checkpoint["state_dict"])


def test_run_with_a_checkpoint_interval_that_does_not_divide_max_steps_saves_the_end(tmp_path):
    train(make_cfg(tmp_path, "trainer.max_steps=3", "trainer.checkpoint_every=2"))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["gansuite_step"] == 3


@pytest.mark.parametrize(("model", "loss"), list(itertools.product(MODELS, LOSSES)))
def test_every_model_and_loss_trains_with_finite_losses(tmp_path, model, loss):
    cfg = make_cfg(tmp_path, f"model={model}", f"loss={loss}", "trainer.max_steps=2", "callbacks=none")
    result = train(cfg)
    assert_trained(result, 2, *(["train/d_reg"] if loss == "wgan_gp" else []))


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=gan", "data=ring8"],
        ["model=gan", "data=grid25", "loss=hinge"],
        ["model=dcgan", "data.resolution=32", "loss/regularizer=r1"],
        ["model=dcgan", "data.resolution=64", "model.discriminator.spectral_norm=true",
         "model.discriminator.norm=none"],
        ["model=gan", "data=mnist_offline", "model.discriminator.spectral_norm=true"],
    ],
    ids=lambda o: ",".join(o),
)
def test_model_data_combinations_train(tmp_path, overrides):
    trains(tmp_path, *overrides, steps=2)


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("loss", ["nonsaturating", "wgan_gp"])
def test_resume_is_bit_exact(tmp_path, loss):
    """N steps, stop, resume, M steps == N + M steps without a stop, bit for bit."""
    common = [f"loss={loss}", "trainer.checkpoint_every=3", "model.discriminator.norm=layer",
              "callbacks.sample_grid.every_n_steps=2"]
    straight = train(make_cfg(tmp_path / "straight", *common, "trainer.max_steps=6"))
    train(make_cfg(tmp_path / "first", *common, "trainer.max_steps=3"))
    resumed = train(make_cfg(tmp_path / "second", *common, "trainer.max_steps=6",
                             f"resume={tmp_path / 'first'}"))
    assert resumed["step"] == straight["step"] == 6
    a, b = _state(straight["module"]), _state(resumed["module"])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for opt_a, opt_b in zip(straight["trainer"].optimizers, resumed["trainer"].optimizers, strict=True):
        for (_pa, sa), (_pb, sb) in zip(opt_a.state.items(), opt_b.state.items(), strict=True):
            assert torch.equal(sa["exp_avg"], sb["exp_avg"])
            assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}

    def bce_then_nan(real, fake):
        calls["n"] += 1
        loss = losses.F.softplus(-real).mean() + losses.F.softplus(fake).mean()
        # Call 1 is gansuite-train's start-up check; call k + 2 is the D update of batch k.
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(losses, "bce_d", bce_then_nan)
    cfg = make_cfg(tmp_path, "trainer.max_steps=10", "trainer.checkpoint_every=2")
    with pytest.raises(NonFiniteLossError, match="train/d_loss became nan at step 5") as caught:
        train(cfg)
    assert f"the last good checkpoint, {tmp_path / 'checkpoints' / 'last.ckpt'}, was kept" in str(caught.value)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["gansuite_step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "checkpoints" / "step_000006.ckpt").exists()


# DCGAN is convolutional: 2D points are not images, so it pairs with image data only.
SENSIBLE = [(m, d) for m in MODELS for d in ("mnist_offline", "ring8", "grid25") if not (m == "dcgan" and d != "mnist_offline")]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(("model", "data"), SENSIBLE)
def test_every_sensible_combination_builds(tmp_path, model, loss, data):
    datamodule, module = build(make_cfg(tmp_path, f"model={model}", f"loss={loss}", f"data={data}"))
    z = module.make_inputs(3, torch.Generator().manual_seed(0))
    assert module.sample(z).shape == (3, *datamodule.shape)


class InterruptAt(L.Callback):
    """Sends this process a Ctrl-C (SIGINT) at the start of training batch ``batch``."""

    def __init__(self, batch: int):
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_and_resume_from_it_is_exact(tmp_path):
    # wgan_gp has 5 D updates per step: batch 7 is the third D update of step 2, mid-step.
    common = ["loss=wgan_gp", "model.discriminator.norm=layer", "trainer.checkpoint_every=100"]
    straight = train(make_cfg(tmp_path / "straight", *common, "trainer.max_steps=3"))
    # Not always default_int_handler: a shell starts background jobs with SIGINT ignored.
    handler_before = signal.getsignal(signal.SIGINT)
    stopped = train(make_cfg(tmp_path / "first", *common, "trainer.max_steps=3",
                             f"+callbacks.interrupt._target_={__name__}.InterruptAt", "+callbacks.interrupt.batch=7"))
    assert stopped["stopped"] and stopped["step"] == 1
    assert stopped["trainer"].global_step == 1 * 6 + 3  # one whole step, then three D updates
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored
    resumed = train(make_cfg(tmp_path / "second", *common, "trainer.max_steps=3", f"resume={tmp_path / 'first'}"))
    a, b = _state(straight["module"]), _state(resumed["module"])
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_a_changed_schedule(tmp_path):
    train(make_cfg(tmp_path / "first", "trainer.max_steps=2"))
    with pytest.raises(ConfigError, match="loss.n_critic=1 but this run sets loss.n_critic=3"):
        train(make_cfg(tmp_path / "second", "loss.n_critic=3", "trainer.max_steps=4", f"resume={tmp_path / 'first'}"))
    with pytest.raises(ConfigError, match="data.batch_size"):
        train(make_cfg(tmp_path / "third", "data.batch_size=4", "trainer.max_steps=4", f"resume={tmp_path / 'first'}"))


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    """A finite loss followed by an update that overflows: the save refuses, the older checkpoint stays."""
    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def overflowing_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 8:  # the G update of step 4, which is a checkpoint step (D, G, D, G, ...)
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", overflowing_step)
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(make_cfg(tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every=2", "callbacks=none"))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["gansuite_step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "checkpoints" / "step_000004.ckpt").exists()


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bfloat16_runs_stay_finite(tmp_path, precision):
    result = train(make_cfg(tmp_path, f"trainer.precision={precision}", "loss=wgan_gp",
                            "model.discriminator.norm=layer", "trainer.max_steps=2",
                            "callbacks.sample_grid.every_n_steps=1"))
    assert_trained(result, 2)
    assert (tmp_path / "samples" / "step_000002.png").is_file()


def test_logged_step_axis_counts_gansuite_steps(tmp_path):
    train(make_cfg(tmp_path, "logger=csv", "loss=wgan", "trainer.max_steps=3", "trainer.log_every_n_steps=1"))
    (metrics,) = tmp_path.glob("csv/version_*/metrics.csv")
    with open(metrics) as f:
        steps = [int(float(row["step"])) for row in csv.DictReader(f)]
    assert steps == sorted(steps)
    assert set(steps) <= {0, 1, 2, 3} and steps[-1] >= 2


def test_2d_runs_log_the_mode_metrics_of_their_scatter_samples(tmp_path):
    from gansuite.metrics.modes import mode_metrics
    from gansuite.training.callbacks import Scatter2D

    result = train(make_cfg(tmp_path, "model=gan", "data=ring8", "logger=csv", "trainer.max_steps=2",
                            "callbacks.scatter_2d.every_n_steps=1"))
    (scatter,) = [c for c in result["trainer"].callbacks if isinstance(c, Scatter2D)]
    module, datamodule = result["module"], result["trainer"].datamodule
    samples = module.sample(scatter.fixed_inputs(module))
    assert scatter.last_stats == mode_metrics(samples, datamodule.means, datamodule.std)
    (metrics,) = tmp_path.glob("csv/version_*/metrics.csv")
    with open(metrics) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/modes_2500")]
    assert [int(float(r["step"])) for r in rows] == [1, 2]
    assert float(rows[-1]["val/reverse_kl_2500"]) == pytest.approx(scatter.last_stats.reverse_kl)


def test_a_run_removes_checkpoint_temporaries_that_killed_saves_left_and_keeps_live_ones(tmp_path):
    import socket
    import subprocess
    import sys

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = folder / f".step_000002.ckpt.{host}.{int(dead.stdout)}.tmp"  # that process has ended
    live = folder / f".last.ckpt.{host}.{os.getppid()}.tmp"  # a live process's: a save in progress
    elsewhere = folder / f".last.ckpt.another-host.{int(dead.stdout)}.tmp"  # can't tell from here
    for path in (stale, live, elsewhere):
        path.write_bytes(b"partial")
    train(make_cfg(tmp_path, "trainer.max_steps=2", "callbacks=none"))
    assert not stale.exists() and live.exists() and elsewhere.exists()
    assert (folder / "last.ckpt").is_file()
    assert sorted(p.name for p in folder.glob("*.tmp")) == sorted([live.name, elsewhere.name])


def test_a_full_disk_stops_in_one_sentence_and_keeps_the_checkpoints_written(tmp_path, monkeypatch):
    import errno

    import gansuite.training.checkpointing as checkpointing
    from gansuite.errors import DiskFullError

    saves, real_save = {"n": 0}, torch.save

    def save(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] <= 2:  # step_000002.ckpt and last.ckpt
            return real_save(obj, f, *args, **kwargs)
        try:  # what torch.save raises when the disk fills: its zip writer's error, raised while handling the OSError
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(checkpointing.torch, "save", save)
    with pytest.raises(DiskFullError) as caught:
        train(make_cfg(tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every=2", "callbacks=none"))
    assert caught.value.strerror == (f"the disk holding {tmp_path / 'checkpoints'} is full (no space left on device) "
                                     f"while saving step_000004.ckpt; the checkpoints already there are kept: free "
                                     f"some space, then resume with resume={tmp_path}")
    monkeypatch.setattr(checkpointing.torch, "save", real_save)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["gansuite_step"] == 2
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_resume_from_a_directory_takes_a_step_file_newer_than_last_ckpt(tmp_path):
    """A kill between writing step_N.ckpt and refreshing last.ckpt leaves last.ckpt one save behind."""
    import shutil

    from gansuite.training.checkpointing import resolve_resume

    train(make_cfg(tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every=2", "callbacks=none"))
    folder = tmp_path / "checkpoints"
    assert resolve_resume(tmp_path) == folder / "last.ckpt"  # last.ckpt holds step 6, as step_000006.ckpt does
    shutil.copy2(folder / "step_000004.ckpt", folder / "last.ckpt")  # written at step 4, before step_000006.ckpt
    assert resolve_resume(tmp_path) == folder / "step_000006.ckpt"
    # A step file older than last.ckpt is another run's (a reused folder), whatever its number.
    shutil.copy2(folder / "step_000006.ckpt", folder / "step_000100.ckpt")
    os.utime(folder / "step_000100.ckpt", ns=(0, 0))
    assert resolve_resume(tmp_path) == folder / "step_000006.ckpt"
    (folder / "step_000006.ckpt").unlink()
    assert resolve_resume(tmp_path) == folder / "last.ckpt"


def test_trainer_threads_sets_the_cpu_threads_of_the_run(tmp_path):
    """On a shared machine a run uses the cores it was given: trainer.threads sets torch's thread count, and
    by default a run uses no more threads than the cores its CPU set grants."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        train(make_cfg(tmp_path, "trainer.max_steps=1", "trainer.threads=1"))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        with pytest.MonkeyPatch.context() as patch:  # a job granted one core (taskset -c 0, a SLURM CPU set)
            patch.delenv("OMP_NUM_THREADS", raising=False)
            patch.setattr(os, "sched_getaffinity", lambda pid: {0})
            train(make_cfg(tmp_path / "default", "trainer.max_steps=1"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
