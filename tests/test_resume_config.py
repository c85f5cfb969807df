"""``gansuite-train resume=<run>`` rebuilds the run from the config in its checkpoint: nothing to retype."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gansuite.errors import ConfigError
from gansuite.resuming import resumed_config
from gansuite.train import main

from .conftest import make_cfg

TINY_RING = ["logger=none", "eval=none", "callbacks=none", "trainer=debug", "model=gan", "data=ring8",
             "data.batch_size=100", "model.generator.width=16", "model.discriminator.width=16",
             "model.generator.depth=1", "model.discriminator.depth=1"]


def gansuite_train(monkeypatch, run_dir: Path, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["gansuite-train", f"hydra.run.dir={run_dir}", *args])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["state_dict"] | {"step": torch.tensor(checkpoint["gansuite_step"])}


def test_resume_with_no_overrides_continues_bit_exactly(monkeypatch, tmp_path):
    """A run stopped at step 4 of 8, resumed with resume=<its step-4 checkpoint> alone, ends where an uninterrupted
    run ends, bit for bit; none of its overrides (model, data, batch size, widths) is typed again."""
    straight = tmp_path / "straight"
    assert gansuite_train(monkeypatch, straight, *TINY_RING, "trainer.max_steps=8", "trainer.checkpoint_every=4") == 0
    resumed = tmp_path / "resumed"
    assert gansuite_train(monkeypatch, resumed, f"resume={straight / 'checkpoints' / 'step_000004.ckpt'}") == 0
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and int(b["step"]) == 8
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_changeable_overrides_apply_and_the_stored_run_supplies_the_rest(monkeypatch, tmp_path):
    first = tmp_path / "first"
    assert gansuite_train(monkeypatch, first, *TINY_RING, "trainer.max_steps=2") == 0
    second = tmp_path / "second"
    assert gansuite_train(monkeypatch, second, f"resume={first}", "trainer.max_steps=4",
                          "trainer.log_every_n_steps=1") == 0
    config = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu",
                        weights_only=True)["gansuite_config"]
    assert config["model"]["name"] == "gan" and config["data"]["batch_size"] == 100
    assert config["trainer"]["max_steps"] == 4 and config["trainer"]["log_every_n_steps"] == 1
    assert config["paths"]["output_dir"] == str(second)  # this run's folder, not the stored run's


def test_every_differing_key_is_named_at_once(tmp_path):
    stored = OmegaConf.to_container(make_cfg(tmp_path, "trainer.max_steps=10"), resolve=True)
    cfg = make_cfg(tmp_path, "model=dcgan", "loss=hinge", "model.g_optimizer.lr=0.05", "trainer.max_steps=20")
    overrides = ["loss=hinge", "model.g_optimizer.lr=0.05", "trainer.max_steps=20"]
    with pytest.raises(ConfigError, match=r"other values of 4 key\(s\): ") as caught:
        resumed_config(cfg, overrides, stored, Path("/old/last.ckpt"))
    message = str(caught.value)
    assert "loss.name=hinge (run: nonsaturating)" in message and "model.g_optimizer.lr=0.05 (run: 0.0002)" in message
    assert "trainer.max_steps=20" not in message  # may change on resume
