"""End to end: the real composed config, shrunk, trained on offline data; exact resume."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

from gansuite import losses
from gansuite.errors import NonFiniteLossError
from gansuite.train import build, train

from .conftest import make_cfg

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
    metrics = result["trainer"].callback_metrics
    assert result["step"] == 2
    for key in ("train/d_loss", "train/g_loss"):
        assert torch.isfinite(metrics[key]), key
    if loss == "wgan_gp":
        assert torch.isfinite(metrics["train/d_reg"])


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
    result = train(make_cfg(tmp_path, *overrides, "trainer.max_steps=2", "callbacks=none"))
    assert torch.isfinite(result["trainer"].callback_metrics["train/g_loss"])


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
    with pytest.raises(NonFiniteLossError, match="train/d_loss became nan at step 5"):
        train(cfg)
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
