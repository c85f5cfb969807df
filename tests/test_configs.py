"""Every option of every config group composes, and everything it names builds (tiny, on offline data)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gansuite.config.schema import SCHEMAS
from gansuite.config.schema import check as check_schemas
from gansuite.errors import ConfigError
from gansuite.models.schedule import AdversarialModule

from .conftest import OFFLINE_DATA, build_tiny, make_cfg, options

GROUPS = ("model", "data", "loss", "loss/regularizer", "trainer", "logger", "callbacks", "eval", "paths",
          "experiment")


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(tmp_path, override):
    cfg = make_cfg(tmp_path, override, tiny=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation points at a key that exists
    check_schemas(cfg)  # and the trainer, evaluation and run keys have the types their schemas say
    if override.startswith("model="):
        assert resolved["model"]["name"] == override.split("=")[1]


@pytest.mark.parametrize("model", options("model"))
def test_every_model_builds_on_offline_data_of_its_kind(tmp_path, model):
    _, _, module = build_tiny(tmp_path, f"model={model}", *OFFLINE_DATA.get(model, []))
    assert isinstance(module, AdversarialModule)
    assert sum(p.numel() for p in module.generator.parameters()) > 0


@pytest.mark.parametrize("data", options("data"))
def test_every_data_option_instantiates(tmp_path, data):
    # Folders and downloads are made, not read: building them needs files this test does not have.
    cfg = make_cfg(tmp_path, f"data={data}")
    datamodule = instantiate(cfg.data)
    assert datamodule.batch_size == cfg.data.batch_size


@pytest.mark.parametrize("loss", options("loss"))
@pytest.mark.parametrize("regularizer", options("loss/regularizer"))
def test_every_loss_and_regularizer_builds(tmp_path, loss, regularizer):
    _, _, module = build_tiny(tmp_path, "model=gan", "data=ring8", f"loss={loss}", f"loss/regularizer={regularizer}")
    assert (module.regularizer is None) == (regularizer == "none")


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_every_callback_instantiates(tmp_path, callbacks):
    cfg = make_cfg(tmp_path, f"callbacks={callbacks}")
    built = [instantiate(node) for node in (cfg.callbacks or {}).values() if node is not None]
    assert (len(built) > 0) == (callbacks != "none")


@pytest.mark.parametrize("group", ["trainer", "eval"])
def test_the_schemas_hold_exactly_the_keys_of_their_group_files(tmp_path, group):
    fields = {f.name for f in dataclasses.fields(SCHEMAS[group])}
    for option in options(group):
        node = make_cfg(tmp_path, f"{group}={option}", tiny=False)[group]
        if node:  # eval=none: empty
            assert set(node) == fields, (option, sorted(set(node) ^ fields))


def test_a_value_of_the_wrong_type_is_one_sentence_naming_the_key_and_the_type(tmp_path):
    for override, says in (("trainer.checkpoint_every=often", "trainer.checkpoint_every must be an integer"),
                           ("eval.download=maybe", "eval.download must be true or false"),
                           ("resume=[a,b]", "resume must be a string or null")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            check_schemas(make_cfg(tmp_path, override, tiny=False))
