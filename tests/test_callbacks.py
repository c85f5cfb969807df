"""Callbacks (sample grids, 2D scatter, progress bar) and logging helpers, on tiny fakes on the CPU."""

from __future__ import annotations

import math
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from gansuite.errors import ConfigError
from gansuite.training.callbacks import SampleGrid, Scatter2D
from gansuite.training.logging import flatten_config, git_commit, run_metadata, save_code_state, wandb_mode
from gansuite.training.progress import GANProgressBar
from gansuite.training.translation import TranslationGrid, TranslationMetrics

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class _Noise(IterableDataset):
    def __iter__(self):
        while True:
            yield torch.randn(4)


class FakeGAN(L.LightningModule):
    """A linear generator with gansuite's module interface; ``step`` advances every ``batches_per_step`` batches."""

    def __init__(self, out_shape: tuple[int, ...] = (1, 8, 8), batches_per_step: int = 2, latent: int = 4):
        super().__init__()
        self.automatic_optimization = False
        self.out_shape = out_shape
        self.batches_per_step = batches_per_step
        self.latent = latent
        self.gen = nn.Linear(latent, math.prod(out_shape))
        self.batches_done = 0

    @property
    def step(self) -> int:
        return self.batches_done // self.batches_per_step

    def make_inputs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(self, inputs: torch.Tensor, ema: bool = True) -> torch.Tensor:
        return torch.tanh(self.gen(inputs)).view(-1, *self.out_shape)

    def total_batches(self, trainer: L.Trainer) -> int:
        return trainer.max_steps  # one optimizer step per batch here

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        opt = self.optimizers()
        loss = self.gen(batch).pow(2).mean()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.batches_done += 1
        self.log("train/g_loss", loss, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class FakeMixtureData(L.LightningDataModule):
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    std = 0.05

    def train_dataloader(self):
        return DataLoader(_Noise(), batch_size=2)


def _fit(tmp_path: Path, module: L.LightningModule, callbacks: list, max_steps: int = 10, logger=False, **kw):
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=any(isinstance(c, GANProgressBar) for c in callbacks),
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    if "datamodule" in kw:
        trainer.fit(module, datamodule=kw["datamodule"])
    else:
        trainer.fit(module, train_dataloaders=DataLoader(_Noise(), batch_size=2))
    return trainer


# ---------------------------------------------------------------- SampleGrid


def test_sample_grid_fires_once_per_step_multiple_and_at_the_end(tmp_path):
    # 10 batches at 2 batches per step: steps reach 1..5; every 2 steps -> 2, 4, then the end at 5.
    grid = SampleGrid(every_n_steps=2, num_samples=4)
    _fit(tmp_path, FakeGAN(batches_per_step=2), [grid], max_steps=10)

    folder = tmp_path / "samples"
    assert sorted(p.name for p in folder.iterdir()) == [
        "step_000002.png",
        "step_000004.png",
        "step_000005.png",
    ]
    # 4 images of 1x8x8 in 2 rows of 2, padding 2 around each: 2 * (8 + 2) + 2 = 22.
    for png in folder.iterdir():
        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            assert img.format == "PNG"
            assert img.size == (22, 22)
    assert not list(tmp_path.rglob("*.tmp"))


def test_sample_grid_end_of_training_does_not_repeat_the_last_snapshot(tmp_path):
    grid = SampleGrid(every_n_steps=5, num_samples=4, dirpath=tmp_path / "grids")
    _fit(tmp_path, FakeGAN(batches_per_step=1), [grid], max_steps=10)
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == ["step_000005.png", "step_000010.png"]


def test_fixed_inputs_depend_only_on_the_seed():
    module = FakeGAN()
    torch.manual_seed(0)
    first = SampleGrid(num_samples=8, seed=7).fixed_inputs(module)
    torch.manual_seed(1)  # the global RNG must play no part
    second = SampleGrid(num_samples=8, seed=7).fixed_inputs(module)
    other = SampleGrid(num_samples=8, seed=8).fixed_inputs(module)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_sample_grid_skips_2d_samples_and_scatter_skips_images(tmp_path):
    _fit(
        tmp_path / "points",
        FakeGAN(out_shape=(2,)),
        [SampleGrid(every_n_steps=1, num_samples=4)],
        max_steps=4,
    )
    _fit(tmp_path / "images", FakeGAN(), [Scatter2D(every_n_steps=1, num_samples=16)], max_steps=4)
    assert not (tmp_path / "points" / "samples").exists()
    assert not (tmp_path / "images" / "samples").exists()


def test_bad_period_is_a_config_error():
    with pytest.raises(ConfigError, match="callbacks.sample_grid.every_n_steps"):
        SampleGrid(every_n_steps=0)


# ---------------------------------------------------------------- Scatter2D


def test_scatter_2d_writes_a_png_over_the_datamodule_modes(tmp_path):
    scatter = Scatter2D(every_n_steps=2, num_samples=100)
    _fit(
        tmp_path,
        FakeGAN(out_shape=(2,), batches_per_step=1),
        [scatter],
        max_steps=4,
        datamodule=FakeMixtureData(),
    )
    files = sorted((tmp_path / "samples").iterdir())
    assert [p.name for p in files] == ["step_000002.png", "step_000004.png"]
    with Image.open(files[0]) as img:
        assert img.format == "PNG"
        assert img.size == (500, 500)


# ---------------------------------------------------------------- loggers


def _fake_trainer(tmp_path: Path, logger) -> SimpleNamespace:
    return SimpleNamespace(is_global_zero=True, loggers=[logger], default_root_dir=tmp_path, datamodule=None)


def test_samples_go_to_tensorboard_as_rgb_images(tmp_path):
    module = FakeGAN(batches_per_step=1)
    module.batches_done = 3
    tensorboard = MagicMock(spec=TensorBoardLogger)
    SampleGrid(num_samples=4).on_train_end(_fake_trainer(tmp_path, tensorboard), module)

    tensorboard.experiment.add_image.assert_called_once()
    (tag, image), kwargs = tensorboard.experiment.add_image.call_args
    assert tag == "samples" and kwargs == {"global_step": 3}
    assert image.dtype == torch.uint8 and image.shape == (3, 22, 22)


def test_only_global_rank_zero_writes(tmp_path):
    trainer = _fake_trainer(tmp_path, MagicMock(spec=WandbLogger))
    trainer.is_global_zero = False
    SampleGrid(num_samples=4).on_train_end(trainer, FakeGAN())
    assert not (tmp_path / "samples").exists()
    trainer.loggers[0].log_image.assert_not_called()


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": tmp_path,
        "WANDB_CONFIG_DIR": tmp_path / "config",
        "WANDB_CACHE_DIR": tmp_path / "cache",
        "WANDB_DATA_DIR": tmp_path / "data",
    }.items():
        monkeypatch.setenv(name, str(value))
    import wandb

    yield tmp_path
    wandb.finish()


def test_offline_wandb_run_receives_the_sample_grid(offline_wandb, tmp_path):
    logger = WandbLogger(save_dir=tmp_path, offline=True, project="gansuite-test")
    _fit(
        tmp_path,
        FakeGAN(batches_per_step=1),
        [SampleGrid(every_n_steps=2, num_samples=4)],
        max_steps=4,
        logger=logger,
    )

    media = list((tmp_path / "wandb").glob("offline-run-*/files/media/images/samples_*.png"))
    assert len(media) == 2  # steps 2 and 4
    assert not list(tmp_path.rglob("*.tmp"))


# ---------------------------------------------------------------- GANProgressBar


def test_progress_bar_is_sized_by_the_module_and_shows_the_step(tmp_path):
    bar = GANProgressBar(rate_window_s=0.0)
    module = FakeGAN(batches_per_step=2)
    trainer = _fit(tmp_path, module, [bar], max_steps=6, logger=CSVLogger(tmp_path))

    assert trainer.num_training_batches == math.inf
    assert bar.total_train_batches == 6
    assert bar.train_progress_bar.total == 6
    metrics = bar.get_metrics(trainer, module)
    assert "v_num" not in metrics
    step, rate = metrics["step"].split(" ")
    assert step == "3" and rate.startswith("(") and rate.endswith("/s)")  # the step and its rate, as "3 (41.2/s)"
    assert "train/g_loss" in metrics


# ---------------------------------------------------------------- wandb_mode


@pytest.fixture
def clean_wandb_env(tmp_path, monkeypatch):
    for name in (
        "WANDB_MODE",
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_BASE_URL",
        "WANDB_DIR",
        "NETRC",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_wandb_mode_without_a_key_goes_offline_with_a_reason(clean_wandb_env, tmp_path):
    mode, reason = wandb_mode(save_dir=tmp_path / "run")
    assert mode == "offline"
    assert "no API key" in reason and "wandb sync" in reason and str(tmp_path / "run") in reason


def test_wandb_mode_respects_an_explicit_choice(clean_wandb_env, monkeypatch):
    assert wandb_mode("disabled") == ("disabled", None)
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert wandb_mode() == ("offline", None)
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE"):
        wandb_mode()


def test_wandb_mode_with_a_key_but_no_server_goes_offline(clean_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    mode, reason = wandb_mode(timeout=1.0)
    assert mode == "offline"
    assert "127.0.0.1:9 is not reachable" in reason


def test_wandb_mode_goes_online_with_a_netrc_key_and_a_listening_server(clean_wandb_env, monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        host, port = server.getsockname()
        netrc = clean_wandb_env / ".netrc"
        netrc.write_text(f"machine {host}:{port}\n  login user\n  password {'k' * 40}\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://{host}:{port}")
        assert wandb_mode(timeout=2.0) == ("online", None)


# ---------------------------------------------------------------- metadata


def test_flatten_config_joins_nested_keys():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "name": "dcgan",
            "model": {"name": "dcgan", "generator": {"width": 64}},
            "loss": {"name": "hinge"},
            "data": {"_target_": "gansuite.data.downloads.MNIST", "size": "${model.generator.width}"},
            "optim": {"betas": [0.5, 0.999]},
            "callbacks": [{"every": 5}],
        }
    )
    assert flatten_config(cfg) == {
        "name": "dcgan",
        "model/name": "dcgan",
        "model/generator/width": 64,
        "loss/name": "hinge",
        "data/_target_": "gansuite.data.downloads.MNIST",
        "data/size": 64,
        "optim/betas": "[0.5, 0.999]",
        "callbacks/0/every": 5,
    }
    assert flatten_config({"a": {"b": 1}}, sep=".") == {"a.b": 1}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_commit_in_and_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never see a repository above tmp_path
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a")
    _git(repo, "add", "a.txt")
    _git(
        repo, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "commit", "-qm", "a"
    )
    head = _git(repo, "rev-parse", "HEAD")

    assert git_commit(repo) == head
    (repo / ".gitignore").write_text("outputs/\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "commit", "-qm", "i")
    head = _git(repo, "rev-parse", "HEAD")
    (repo / "outputs").mkdir()
    (repo / "outputs" / "run.log").write_text("ignored output")
    assert git_commit(repo) == head
    (repo / "new_model.py").write_text("print('new')\n")  # an untracked source file: not the commit's code
    assert git_commit(repo) == f"{head}-dirty"
    (repo / "new_model.py").unlink()
    (repo / "a.txt").write_text("b")
    assert git_commit(repo) == f"{head}-dirty"

    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit(outside) is None
    assert git_commit(tmp_path / "missing") is None

    meta = run_metadata({"model": {"name": "dcgan"}}, repo_path=outside)
    assert save_code_state(tmp_path / "run_outside", outside) is None
    assert meta["config"] == {"model/name": "dcgan"} and meta["git_commit"] is None
    assert isinstance(meta["gansuite_version"], str)


# ---------------------------------------------------------------- configs


def _compose(tmp_path: Path, overrides: list[str]):
    # A stand-in primary config: the real one (and its paths group) belongs to the trainer module.
    primary = tmp_path / "primary"
    primary.mkdir(exist_ok=True)
    (primary / "config.yaml").write_text(
        "defaults:\n  - callbacks: default\n  - logger: csv\n  - _self_\n"
        f"hydra:\n  searchpath: ['file://{CONF_DIR}']\n"
        f"name: test\npaths:\n  output_dir: {tmp_path / 'out'}\n  cache_dir: {tmp_path / 'cache'}\n"
    )
    with initialize_config_dir(str(primary), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("choice", ["wandb", "csv", "none"])
def test_logger_configs_compose_and_instantiate(tmp_path, choice):
    cfg = _compose(tmp_path, [f"logger={choice}"])
    logger = instantiate(cfg.logger) if cfg.logger is not None else None
    expected = {"wandb": WandbLogger, "csv": CSVLogger, "none": type(None)}[choice]
    assert isinstance(logger, expected)


def test_default_callbacks_instantiate(tmp_path):
    cfg = _compose(tmp_path, [])
    built = {name: instantiate(node) for name, node in cfg.callbacks.items()}
    assert isinstance(built["sample_grid"], SampleGrid)
    assert isinstance(built["scatter_2d"], Scatter2D)
    assert isinstance(built["progress_bar"], GANProgressBar)
    assert isinstance(built["translation_grid"], TranslationGrid)
    assert isinstance(built["translation_metrics"], TranslationMetrics)


def test_a_dirty_tree_is_saved_as_a_patch_that_restores_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "commit", "-qm", "a")
    head = _git(repo, "rev-parse", "HEAD")
    run = tmp_path / "run"
    assert save_code_state(run, repo) == head
    assert (run / "git_commit.txt").read_text() == f"{head}\n" and not (run / "git_diff.patch").exists()

    (repo / "a.txt").write_text("a changed\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "new.py").write_text("x = 1\n")
    assert save_code_state(run, repo / "sub") == f"{head}-dirty"
    patch = (run / "git_diff.patch").read_text()
    # The patch applied to a clean checkout of the commit gives the tree the run ran.
    clean = tmp_path / "clean"
    subprocess.run(["git", "clone", "-q", str(repo), str(clean)], check=True)
    subprocess.run(["git", "-C", str(clean), "apply", "-"], input=patch, text=True, check=True)
    assert (clean / "a.txt").read_text() == "a changed\n"
    assert (clean / "sub" / "new.py").read_text() == "x = 1\n"
