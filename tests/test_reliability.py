"""Every bad input tried against the command-line tools: its exit status and its one sentence.

One parametrised test per row of ``ROWS``; the README's "When something is wrong" table lists the same
rows (``test_the_readme_lists_every_row`` keeps the two together). A row runs the tool in-process with
tiny settings and checks: the exit status, exactly one line starting ``<tool>: error:`` (or
``stopped:``) that contains the row's words, and no traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from gansuite.cli.train import main as train_main
from gansuite.training.run import train

from .conftest import make_cfg

README = Path(__file__).resolve().parent.parent / "README.md"
TINY = ["trainer=debug", "logger=none", "model.generator.width=4", "model.discriminator.width=4", "data.batch_size=8",
        "eval=none"]


@dataclass(frozen=True)
class Row:
    """``args`` are one tool's arguments; ``{run}``, ``{ckpt}``, ``{bad_ckpt}`` and ``{tmp}`` are filled in."""

    args: str
    status: int
    says: str
    tool: str = "gansuite-train"


# One row per bad input, alike on purpose: the command line, the exit status, words its message must hold.
ROWS = [
    # Values Hydra composes but that cannot train.
    Row("model.g_optimizer.lr=-0.1", 2, "model.g_optimizer.lr must be a positive number"),
    Row("model.d_optimizer.lr=0", 2, "model.d_optimizer.lr must be a positive number"),
    Row("trainer.max_steps=-5", 2, "trainer.max_steps must be a positive integer"),
    Row("trainer.max_steps=abc", 2, "trainer.max_steps must be an integer (got 'abc')"),
    Row("trainer.max_steps=2.5", 2, "trainer.max_steps must be an integer (got 2.5)"),
    Row("data.batch_size=0", 2, "data.batch_size must be a positive integer"),
    Row("data.batch_size=10000000", 2, "data.batch_size=10000000 is larger than"),
    Row("data.num_workers=-1", 2, "data.num_workers"),
    Row("trainer.threads=0", 2, "trainer.threads must be a positive integer"),
    Row("loss.n_critic=0", 2, "loss.n_critic must be a positive integer"),
    Row("model.module.ema_decay=1.5", 2, "model.module.ema_decay must be in [0, 1)"),
    Row("model.module.ema_decay=abc", 2, "model.module.ema_decay must be in [0, 1)"),
    Row("model.module.grad_clip=-1", 2, "model.module.grad_clip must be a positive number"),
    Row("model.g_optimizer.betas=[0.5]", 2, "model.g_optimizer.betas must be two numbers in [0, 1)"),
    Row("model.d_optimizer.betas=[0.5,2.0]", 2, "model.d_optimizer.betas must be two numbers in [0, 1)"),
    Row("model.generator.width=0", 2, "model.generator.width must be a positive integer"),
    Row("model.discriminator.width=-3", 2, "model.discriminator.width must be a positive integer"),
    Row("model=gan model.generator.depth=0", 2, "model.generator.depth must be a positive integer"),
    Row("model.discriminator.norm=group", 2, "model.discriminator.norm must be batch, layer or none (got 'group')"),
    Row("data.resolution=48", 2, "data.resolution: 48 is not supported; use one of 28, 32, 64"),
    Row("seed=abc", 2, "seed must be an integer"),
    Row("trainer.log_every_n_steps=abc", 2, "trainer.log_every_n_steps must be an integer"),
    Row("seed=1.5", 2, "seed must be an integer (got 1.5)"),
    Row("tags=3", 2, "tags must be a list of strings (got 3)"),
    Row("trainer.threads=many", 2, "trainer.threads must be an integer or null"),
    Row("trainer.deterministic=abc", 2, "trainer.deterministic must be true or false"),
    Row("trainer.accelerator=nosuchdevice", 2, "trainer: You selected an invalid accelerator name"),
    Row("trainer.precision=17", 2, "trainer: Precision 17 is invalid"),
    Row("trainer.accelerator=gpu", 2, "trainer.accelerator=gpu but torch sees no CUDA GPU"),
    Row("trainer=gpu", 2, "trainer.accelerator=gpu but torch sees no CUDA GPU"),
    Row("loss/regularizer=r1 loss.regularizer.fn.gamma=abc", 2, "loss.regularizer.fn"),
    Row("loss/regularizer=r1 loss.regularizer.every=0", 2, "loss.regularizer.every must be a positive integer"),
    Row("+loss.objective.d_loss.foo=1", 2, "loss.objective: bce_d() got an unexpected keyword argument 'foo'"),
    Row("+model.module.foo=1", 2, "model.module: AdversarialModule.__init__() got an unexpected keyword argument"),
    Row("model=gan data=ring8 data.batch_size=10 model.discriminator.pack=4", 2,
        "does not divide into groups of model.discriminator.pack=4"),
    Row("model=gan data=ring8 model.discriminator.pack=0", 2, "model.discriminator.pack"),
    Row("+model.g_scheduler={{_target_:torch.optim.lr_scheduler.ReduceLROnPlateau,_partial_:true}}", 2,
        "model.g_scheduler: ReduceLROnPlateau needs a metric"),
    Row("eval=default eval.metrics=fid", 2, "eval.metrics must be a list of strings (got 'fid')"),
    Row("eval=default eval.num_samples=many", 2, "eval.num_samples must be an integer"),
    Row("eval=default eval.metrics=[cas]", 2, "eval.metrics: cas and aug_gain need a class-conditional model"),
    Row("model=cgan eval=default eval.metrics=[cas] eval.cas_per_class=401", 2, "eval.cas_per_class=401: cas_real trains on that many real training images per class"),
    Row("model=cgan eval=default eval.metrics=[aug_gain] eval.aug_real_per_class=[a]", 2, "eval.aug_real_per_class must be a list of integers"),
    # Models and data that do not go together.
    Row("model=dcgan data=ring8", 2, "DCGAN is convolutional and needs images"),
    Row("model=pix2pix data=mnist_offline", 2, "needs paired image pairs"),
    Row("model=ganomaly data=mnist_anomaly data.anomaly_class=10", 2, "data.anomaly_class: 10 is not a digit"),
    Row("model=ganomaly data=mnist_anomaly model.module.score=psnr", 2, "model.module.score: 'psnr' is unknown"),
    Row("model=fanogan data=mnist_anomaly model.module.gan_steps=-1", 2, "model.module.gan_steps must be a count of steps"),
    Row("model=dcgan data=edges2digits", 2, "makes images from noise"),
    # Keys and options that do not exist: the nearest real one is named.
    Row("trainer.max_step=100", 2, "trainer.max_step is not a key of the config; the nearest key is trainer.max_steps"),
    Row("model.generator.widht=8", 2, "the nearest key is model.generator.width"),
    Row("data.batchsize=8", 2, "the nearest key is data.batch_size"),
    Row("loss.n_critics=2", 2, "the nearest key is loss.n_critic"),
    Row("model.g_optimiser.lr=0.1", 2, "the nearest key is model.g_optimizer"),
    Row("eval=default eval.every_n_step=5", 2, "the nearest key is eval.every_n_steps"),
    Row("callbacks.sample_grid.every_n_step=5", 2, "the nearest key is callbacks.sample_grid.every_n_steps"),
    Row("seeds=1", 2, "the nearest key is seed"),
    Row("logger=csv logger.save_dri=x", 2, "the nearest key is logger.save_dir "),
    Row("paths.output_dri=x", 2, "the nearest key is paths.output_dir "),
    Row("model.module.ema_decy=0.9", 2, "the nearest key is model.module.ema_decay "),
    Row("data.resolutoin=32", 2, "the nearest key is data.resolution "),
    Row("loss/regularizer=r1 loss.regularizer.evry=2", 2, "the nearest key is loss.regularizer.every "),
    Row("trainer.precison=32", 2, "the nearest key is trainer.precision "),
    Row("trainer.checkpoint_evry=5", 2, "the nearest key is trainer.checkpoint_every "),
    Row("eval=default eval.num_sample=10", 2, "the nearest key is eval.num_samples "),
    Row("callbacks.progres_bar.x=1", 2, "the nearest key is callbacks.progress_bar "),
    Row("model.latent_dimm=8", 2, "the nearest key is model.latent_dim "),
    Row("name_=x", 2, "the nearest key is name "),
    Row("model.discriminator.nrom=batch", 2, "the nearest key is model.discriminator.norm "),
    Row("data.heldout_sizes=1", 2, "the nearest key is data.heldout_size "),
    Row("loss.objective.d_los=1", 2, "the nearest key is loss.objective.d_loss "),
    Row("model.g_optimizer.betas1=1", 2, "the nearest key is model.g_optimizer.betas "),
    Row("trainer.devics=1", 2, "the nearest key is trainer.devices "),
    Row("loss.nme=x", 2, "the nearest key is loss.name "),
    Row("+model.g_optimzer.lr=1e-3", 2,
        "model.g_optimzer.lr is not a key any gansuite component reads, so +model.g_optimzer.lr=1e-3 would be "
        "ignored; the nearest key is model.g_optimizer.lr"),
    Row("+trainer.max_step=100", 2, "the nearest key is trainer.max_steps"),
    Row("++trainer.log_every_n_step=5", 2, "the nearest key is trainer.log_every_n_steps"),
    Row("+seed=3", 2, "seed is already in the config, so +seed=... cannot add it"),
    Row("~trainer.foo", 2, "'trainer.foo' does not exist"),
    Row("model=nosuchgan", 2, "model=nosuchgan is not an option of the config group model"),
    Row("experiment=dcgan_mnst", 2, "the nearest is experiment=dcgan_mnist"),
    Row("loss=hinj", 2, "the nearest is loss=hinge"),
    Row("loss/regularizer=r2", 2, "loss/regularizer=r2 is not an option of the config group loss/regularizer"),
    Row("seed=[1", 2, "a command-line override could not be parsed"),
    Row("data=image_folder data.root=~/no-such-gansuite-folder", 2, "/no-such-gansuite-folder does not exist"),
    Row("data=mnist data.root={tmp}/nowhere data.download=false", 2, "data.root: no MNIST under"),
    # Checkpoints.
    Row("resume={tmp}/none.ckpt", 2, "/none.ckpt does not exist; pass a .ckpt file or a gansuite run directory"),
    Row("resume={bad_ckpt}", 2, "is not a readable checkpoint"),
    Row("resume={run} trainer.max_steps=1", 2, "trainer.max_steps=1 is below the step"),
    Row("resume={run} loss=hinge trainer.max_steps=4", 2, "loss.name=hinge (run: nonsaturating)"),
    Row("resume={run} model.g_optimizer.lr=0.05 trainer.max_steps=4", 2, "model.g_optimizer.lr=0.05 (run: 0.0002)"),
    Row("resume={run} model=gan data=ring8 trainer.max_steps=4", 2, "was trained with other values of"),
    Row("+model.init_generator={tmp}/none.ckpt", 2, "model.init_generator: "),
    Row("hydra.run.dir={readonly}/run", 2, "Permission denied; point hydra.run.dir"),
    # Faults while training: stopped, exit status 1, the last good checkpoint kept.
    Row("+model.module.loss_limit=0.5 trainer.max_steps=3", 1, "beyond model.module.loss_limit=0.5 (diverged)"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 2-step run of the tiny DCGAN, to resume from."""
    run = tmp_path_factory.mktemp("trained")
    train(make_cfg(run, "trainer.max_steps=2", "model.generator.width=4", "model.discriminator.width=4"))
    return run


def _fill(text: str, tmp_path: Path, trained: Path | None) -> str:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    readonly = tmp_path / "readonly"
    return text.format(tmp=tmp_path, run=trained, ckpt=trained and trained / "checkpoints" / "last.ckpt",
                       bad_ckpt=bad, readonly=readonly)


def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` refuses writes, as a read-only mount does (also for root, whom chmod does not stop)."""
    original = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if Path(self).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def run_tool(monkeypatch, capsys, row: Row, tmp_path: Path, trained: Path | None) -> tuple[int, str]:
    args = _fill(row.args, tmp_path, trained).split(" ")
    if "{readonly}" in row.args:
        _read_only(monkeypatch, tmp_path / "readonly")
    if row.tool == "gansuite-train":
        argv = [row.tool, *TINY, f"hydra.run.dir={tmp_path / 'run'}", *args]
        if any(a.startswith("hydra.run.dir=") for a in args):
            argv = [row.tool, *TINY, *args]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            train_main()
    else:
        raise AssertionError(row.tool)
    return exit_info.value.code, capsys.readouterr().err


def _needs_checkpoint(row: Row) -> bool:
    return "{run}" in row.args or "{ckpt}" in row.args


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.tool} {r.args}" for r in ROWS])
def test_bad_input_is_one_sentence_and_a_non_zero_exit(monkeypatch, capsys, tmp_path, request, row):
    if row.args == "trainer.accelerator=gpu" or row.args == "trainer=gpu":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    trained = request.getfixturevalue("trained") if _needs_checkpoint(row) else None
    status, stderr = run_tool(monkeypatch, capsys, row, tmp_path, trained)
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"{row.tool}: ")]
    assert len(lines) == 1, stderr
    assert row.says in lines[0], lines[0]
    assert status == row.status, stderr


def test_the_readme_lists_every_row():
    readme = README.read_text()
    missing = [row.args for row in ROWS if f"`{row.args.replace('{{', '{').replace('}}', '}')}`" not in readme]
    assert not missing, f"README's reliability table lacks {missing}"


def test_enough_rows():
    """The issue's floor: at least 60 bad inputs, each a row here."""
    assert len(ROWS) >= 60
