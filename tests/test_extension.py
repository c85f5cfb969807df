"""A family from the user's own package, outside the repository (tests/extension/): README "Your own family or data"."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gansuite.config.security import is_allowed

from .conftest import gansuite_train_in_process as gansuite_train

EXTENSION = Path(__file__).resolve().parent / "extension"
ARGS = [f"hydra.searchpath=[file://{EXTENSION / 'conf'}]", "model=residual_mlp", "data=ring8", "logger=none",
        "eval=none", "callbacks=none", "trainer=debug"]


@pytest.fixture
def user_package(monkeypatch):
    monkeypatch.syspath_prepend(str(EXTENSION))  # as PYTHONPATH or `pip install -e` of the user's package would


def test_a_family_from_the_users_own_package_trains_through_the_searchpath(monkeypatch, tmp_path, user_package):
    run = tmp_path / "run"
    assert gansuite_train(monkeypatch, run, *ARGS, "trainer.max_steps=3") == 0
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["gansuite_step"] == 3
    assert checkpoint["gansuite_config"]["model"]["generator"]["_target_"] == "mygan.nets.ResidualGenerator"
    assert any(k.startswith("generator.blocks.1.") for k in checkpoint["state_dict"])


def test_its_checkpoints_are_trusted_only_when_the_user_names_the_package(monkeypatch, tmp_path, capsys, user_package):
    run = tmp_path / "run"
    assert gansuite_train(monkeypatch, run, *ARGS, "trainer.max_steps=2") == 0
    capsys.readouterr()
    monkeypatch.delenv("GANSUITE_TRUSTED_MODULES", raising=False)
    assert gansuite_train(monkeypatch, tmp_path / "refused", f"resume={run}", "trainer.max_steps=4") == 2
    assert "model.generator._target_='mygan.nets.ResidualGenerator'" in capsys.readouterr().err
    monkeypatch.setenv("GANSUITE_TRUSTED_MODULES", "mygan")
    assert gansuite_train(monkeypatch, tmp_path / "resumed", f"resume={run}", "trainer.max_steps=4") == 0
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["gansuite_step"] == 4


def test_a_trusted_package_lends_its_classes_and_nothing_else(monkeypatch, user_package):
    monkeypatch.setenv("GANSUITE_TRUSTED_MODULES", "mygan,os")
    assert is_allowed("mygan.nets.ResidualGenerator")
    assert not is_allowed("mygan.nets.math")  # a module imported there
    assert not is_allowed("mygan.nets.torch.load")
    assert not is_allowed("os.system")  # a function, even of a trusted module
    assert not is_allowed("mygans.nets.ResidualGenerator")  # another package whose name starts the same
