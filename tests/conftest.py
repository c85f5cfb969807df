"""Shared fixtures: compose the real config from conf/ and shrink it for the CPU."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from gansuite.config.keys import CONF_DIR

# The console script of the interpreter running the tests, not whichever one is first on PATH.
GANSUITE_TRAIN = str(Path(sys.executable).parent / "gansuite-train")

# Small nets and batches: enough to exercise every code path in seconds.
TINY = [
    "trainer=debug",
    "logger=none",
    "model.latent_dim=8",
    "data.batch_size=8",
    "eval=none",
]
IMAGE_TO_IMAGE = ("srresnet", "srgan", "pix2pix", "cyclegan")
TINY_WIDTH = {
    "dcgan": ["model.generator.width=4", "model.discriminator.width=4"],
    "gan": ["model.generator.width=16", "model.discriminator.width=16", "model.generator.depth=1",
            "model.discriminator.depth=1"],
    "cgan": ["model.generator.width=4", "model.discriminator.width=4"],
    "acgan": ["model.generator.width=4", "model.discriminator.width=4"],
    "projection": ["model.generator.width=4", "model.discriminator.width=4", "model.discriminator.hidden=16"],
    "infogan": ["model.generator.width=4", "model.discriminator.width=4", "model.generator.hidden=16",
                "model.discriminator.hidden=16", "model.discriminator.q_hidden=8"],
    "lapgan": ["model.generator.coarse_width=16", "model.generator.width=4", "model.discriminator.coarse_width=16",
               "model.discriminator.width=4"],
    "resnet_wgan_gp": ["model.generator.width=8", "model.discriminator.width=8"],
    "sngan": ["model.generator.width=8", "model.discriminator.width=8"],
    "sngan_projection": ["model.generator.width=8", "model.discriminator.width=8"],
    "srresnet": ["model.generator.width=4", "model.generator.blocks=1"],
    "srgan": ["model.generator.width=4", "model.generator.blocks=1", "model.discriminator.width=4",
              "model.discriminator.hidden=8"],
    "pix2pix": ["model.generator.width=4", "model.discriminator.width=4"],
    "cyclegan": ["model.generator.width=4", "model.generator.n_blocks=1", "model.discriminator.width=4"],
    "ganomaly": ["model.generator.width=4", "model.discriminator.width=4"],
    "conv_autoencoder": ["model.generator.width=4"],
    "fanogan": ["model.generator.width=4", "model.discriminator.width=4"],
    "gan_int_cls": ["model.generator.width=4", "model.discriminator.width=4", "model.text_dim=8",
                    "model.generator.projected=4", "model.discriminator.projected=4", "text_encoder.word_dim=4",
                    "text_encoder.hidden=8"],
    "biggan": ["model.generator.width=4", "model.discriminator.width=4"],
    "biggan_unconditional": ["model.generator.width=4", "model.discriminator.width=4"],
    "stylegan2": ["model.generator.channel_base=64", "model.generator.channel_max=8", "model.generator.w_dim=8",
                  "model.discriminator.channel_base=64", "model.discriminator.channel_max=8"],
    "stylegan2_conditional": ["model.generator.channel_base=64", "model.generator.channel_max=8", "model.generator.w_dim=8",
                  "model.discriminator.channel_base=64", "model.discriminator.channel_max=8"],
    "cgan_mlp": ["model.generator.z_width=16", "model.generator.y_width=16", "model.generator.joint_width=32",
                 "model.discriminator.x_width=16", "model.discriminator.y_width=8",
                 "model.discriminator.joint_width=16"],
}


def gansuite_train_in_process(monkeypatch, run_dir: Path, *args: str) -> int:
    """``gansuite-train hydra.run.dir=<run_dir> <args>`` in this process (Hydra's command line, gansuite's error
    handling); returns its exit status."""
    from gansuite.cli.train import main

    monkeypatch.setattr(sys, "argv", ["gansuite-train", f"hydra.run.dir={run_dir}", *args])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def make_cfg(tmp_path: Path, *overrides: str, tiny: bool = True) -> DictConfig:
    """The composed training config with outputs under tmp_path (no Hydra run directory)."""
    overrides = list(overrides)
    if tiny:
        model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "dcgan")
        groups = {o.split("=", 1)[0] for o in overrides if "=" in o and "." not in o.split("=", 1)[0]}
        tiny = [o for o in TINY if o.split("=", 1)[0] not in groups]
        if model in IMAGE_TO_IMAGE:  # no noise vector to shrink
            tiny = [o for o in tiny if not o.startswith("model.latent_dim")]
        # A group picked on the command line (text_encoder=precomputed) drops the tiny values of its default.
        widths = [o for o in TINY_WIDTH.get(model, []) if o.split(".", 1)[0] not in groups - {"model"}]
        overrides = tiny + widths + overrides
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


def assert_finite(metrics: dict, *keys: str) -> None:
    """Every one of ``keys`` was logged (in a trainer's ``callback_metrics``) and is finite."""
    for key in keys:
        assert key in metrics, f"{key} was not logged"
        assert torch.isfinite(torch.as_tensor(metrics[key])).all(), f"{key} = {metrics[key]}"


def assert_trained(result: dict, steps: int, *extra: str) -> None:
    """A train() result reached ``steps`` generator steps with finite D and G losses (and ``extra`` metrics)."""
    assert result["step"] == steps
    has_d = result["module"].discriminator is not None  # SRResNet trains G alone
    assert_finite(result["trainer"].callback_metrics,
                  *(("train/d_loss", "train/g_loss") if has_d else ("train/g_loss",)), *extra)


def trains(tmp_path: Path, *overrides: str, steps: int = 2, extra: tuple[str, ...] = ()) -> dict:
    """The tiny config of ``overrides`` trained ``steps`` steps (no callbacks unless overridden): the result,
    once it reached that step with finite losses (and finite ``extra`` metrics)."""
    from gansuite.training.run import train

    callbacks = () if any(o.startswith("callbacks") for o in overrides) else ("callbacks=none",)
    result = train(make_cfg(tmp_path, *callbacks, f"trainer.max_steps={steps}", *overrides))
    assert_trained(result, steps, *extra)
    return result


def assert_resume_is_bit_exact(tmp_path: Path, *overrides: str) -> None:
    """Four steps straight equal two steps, a checkpoint, then a resume to four, bit for bit in every weight and
    buffer (``overrides`` must keep a checkpoint at step 2: ``trainer.checkpoint_every=2``)."""
    from gansuite.training.run import train

    straight = train(make_cfg(tmp_path / "straight", *overrides, "trainer.max_steps=4"))
    train(make_cfg(tmp_path / "first", *overrides, "trainer.max_steps=2"))
    resumed = train(make_cfg(tmp_path / "second", *overrides, "trainer.max_steps=4", f"resume={tmp_path / 'first'}"))
    a, b = straight["module"].state_dict(), resumed["module"].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# Offline data a model trains on when it does not take the default (data=mnist_offline at 28 px), for building
# every config without a download or a folder.
OFFLINE_DATA = {
    "gan": ["data=ring8"], "pacgan_mlp": ["data=ring8"],
    "resnet_wgan_gp": ["data.resolution=32"], "sngan": ["data.resolution=32"], "sngan_projection": ["data.resolution=32"],
    "srresnet": ["data=sr_mnist"], "srgan": ["data=sr_mnist"], "pix2pix": ["data=edges2digits"],
    "cyclegan": ["data=digit_styles"], "ganomaly": ["data=mnist_anomaly"],
    "conv_autoencoder": ["data=mnist_anomaly"], "fanogan": ["data=mnist_anomaly"],
    "gan_int_cls": ["data=captioned_digits"],
    "biggan": ["data.resolution=32"], "biggan_unconditional": ["data.resolution=32"],
    "stylegan2": ["data.resolution=32"], "stylegan2_conditional": ["data.resolution=32"],
}


def options(group: str) -> list[str]:
    """Every option of a config group (``model``, ``loss/regularizer``, ...): the files under conf/<group>/."""
    from gansuite.config.keys import CONF_DIR

    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def build_tiny(tmp_path: Path, *overrides: str, training: bool = False):
    """(cfg, data module, module) the tiny config of ``overrides`` builds, as gansuite-train would."""
    from gansuite.config.build import build

    cfg = make_cfg(tmp_path, *overrides)
    datamodule, module = build(cfg, training=training)
    return cfg, datamodule, module


def write_random_inception_weights(path: Path) -> None:
    """Randomly initialised weights of the architecture torch-fidelity expects: no download, ever."""
    from unittest import mock

    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), path)


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    from gansuite.metrics.inception import INCEPTION_FILE

    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
    write_random_inception_weights(path)
    return path


@pytest.fixture(scope="session")
def gansuite_cache(tmp_path_factory) -> Path:
    """One evaluation cache (domain classifiers, reference features) shared by the whole session."""
    return tmp_path_factory.mktemp("gansuite-cache")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path, gansuite_cache):
    """No test may reach the network or a real W&B account, or touch the user's caches."""
    monkeypatch.setenv("GANSUITE_CACHE", str(gansuite_cache))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)


@pytest.fixture(autouse=True)
def _restore_logging():
    """An in-process Hydra run points the root logger at that test's captured stdout; undo it after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
