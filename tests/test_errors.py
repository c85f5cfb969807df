"""Bad input: one sentence naming the key and the fix, a non-zero exit, nothing lost."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from gansuite.cli.train import main
from gansuite.training.run import train

from .conftest import GANSUITE_TRAIN, make_cfg


def run_cli(monkeypatch, capsys, tmp_path, *overrides: str) -> tuple[int, str]:
    """gansuite-train in-process with tiny settings; returns (exit code, stderr)."""
    argv = ["gansuite-train", "trainer=debug", "logger=none", "model.generator.width=4",
            "model.discriminator.width=4", "data.batch_size=8", "eval=none", f"hydra.run.dir={tmp_path / 'run'}",
            *overrides]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("gansuite-train: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("model.g_optimizer.lr=-0.1", "model.g_optimizer.lr"),
        ("model.d_optimizer.lr=0", "model.d_optimizer.lr"),
        ("trainer.max_steps=-5", "trainer.max_steps"),
        ("data.batch_size=0", "data.batch_size"),
        ("loss.n_critic=0", "loss.n_critic"),
        ("model.module.ema_decay=1.5", "model.module.ema_decay"),
        ("data.resolution=48", "data.resolution"),
        ("model.discriminator.norm=group", "model.discriminator.norm"),
        ("model.g_optimizer.betas=[0.5,2.0]", "model.g_optimizer"),
        ("model.module.ema_decay=abc", "model.module.ema_decay"),
        ("model.module.grad_clip=-1", "model.module.grad_clip"),
        ("seed=abc", "seed"),
        ("trainer.log_every_n_steps=abc", "trainer.log_every_n_steps"),
        ("trainer.deterministic=abc", "trainer.deterministic"),
        ("trainer.accelerator=nosuchdevice", "trainer"),
        ("trainer.precision=17", "trainer"),
        ("loss/regularizer=r1 loss.regularizer.fn.gamma=abc", "loss.regularizer.fn"),
        ("model=gan data=ring8 data.batch_size=10 model.discriminator.pack=4", "model.discriminator.pack"),
        ("model=gan model.discriminator.pack=0", "model.discriminator.pack"),
        ("+model.g_scheduler={_target_:torch.optim.lr_scheduler.ReduceLROnPlateau,_partial_:true}",
         "model.g_scheduler"),
    ],
)
def test_bad_value_is_one_sentence_naming_the_key(monkeypatch, capsys, tmp_path, override, names):
    code, err = run_cli(monkeypatch, capsys, tmp_path, *override.split(" "))
    assert code == 2
    assert names in one_line_error(err)


def test_labelled_model_on_unlabelled_data(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for i in range(10):  # more than data.batch_size=8 and its held-out share
        Image.new("RGB", (40, 40), (i * 20, 0, 0)).save(folder / f"{i}.png")
    code, err = run_cli(monkeypatch, capsys, tmp_path, "data=image_folder", f"data.root={folder}",
                        "data.resolution=32", "model.conditional=true")
    assert code == 2
    line = one_line_error(err)
    assert "class-conditional" in line and "no labels" in line


class Fixed64Generator(torch.nn.Module):
    """A generator whose architecture is fixed at 64 px, whatever the data says."""

    def __init__(self, shape, latent_dim, width):
        super().__init__()
        self.linear = torch.nn.Linear(latent_dim, 64 * 64)

    def forward(self, z):
        return self.linear(z).view(-1, 1, 64, 64)


def test_generator_that_does_not_fit_the_data(monkeypatch, capsys, tmp_path):
    code, err = run_cli(monkeypatch, capsys, tmp_path, f"model.generator._target_={__name__}.Fixed64Generator")
    assert code == 2
    assert "data.resolution" in one_line_error(err)


def test_missing_data_directory(monkeypatch, capsys, tmp_path):
    code, err = run_cli(monkeypatch, capsys, tmp_path, "data=mnist", f"data.root={tmp_path / 'nowhere'}",
                        "data.download=false")
    assert code == 2
    assert "data.root" in one_line_error(err)


def test_no_network_when_a_download_is_needed(monkeypatch, capsys, tmp_path):
    def offline(*args, download=False, **kwargs):
        if not download:
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    code, err = run_cli(monkeypatch, capsys, tmp_path, "data=mnist", f"data.root={tmp_path / 'nowhere'}",
                        "data.download=true")
    assert code == 2
    line = one_line_error(err)
    assert "data.root" in line or "data.download" in line


def test_corrupt_checkpoint(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    code, err = run_cli(monkeypatch, capsys, tmp_path, f"resume={bad}")
    assert code == 2
    assert "resume" in one_line_error(err)


def test_missing_checkpoint(monkeypatch, capsys, tmp_path):
    code, err = run_cli(monkeypatch, capsys, tmp_path, f"resume={tmp_path / 'none.ckpt'}")
    assert code == 2
    assert "resume" in one_line_error(err)


def test_checkpoint_of_another_model_is_refused_and_kept(monkeypatch, capsys, tmp_path):
    first = tmp_path / "first"
    train(make_cfg(first, "trainer.max_steps=2"))
    last = first / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    code, err = run_cli(monkeypatch, capsys, tmp_path, f"resume={first}", "model.generator.width=8")
    assert code == 2
    assert "model.generator.width=8 (run: 4)" in one_line_error(err)
    assert last.read_bytes() == before


def test_unknown_option_of_a_loss_function(monkeypatch, capsys, tmp_path):
    code, err = run_cli(monkeypatch, capsys, tmp_path, "+loss.objective.d_loss.foo=1")
    assert code == 2
    assert "loss.objective" in one_line_error(err)


def test_unknown_group_option_lists_the_choices():
    result = subprocess.run([sys.executable, "-m", "gansuite.cli.train", "model=nosuchgan"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert "model=nosuchgan is not an option of the config group model" in line
    assert "dcgan" in line and ", gan," in line


def test_cfg_job_prints_the_composed_config_and_help_lists_groups():
    result = subprocess.run([GANSUITE_TRAIN, "--cfg", "job", "model=gan", "loss=hinge"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "gansuite.losses.hinge_d" in result.stdout and "gansuite.nets.mlp.Generator" in result.stdout
    result = subprocess.run([GANSUITE_TRAIN, "--help"], capture_output=True, text=True, timeout=120)
    for group in ("model:", "data:", "loss:", "trainer:", "logger:", "callbacks:", "experiment:"):
        assert group in result.stdout


def test_checkpoint_files_are_never_half_written(tmp_path):
    train(make_cfg(tmp_path, "trainer.max_steps=2"))
    leftovers = [p for p in (tmp_path / "checkpoints").iterdir() if not p.name.endswith(".ckpt")]
    assert leftovers == []
    torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
