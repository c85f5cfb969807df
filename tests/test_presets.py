"""Every preset under conf/experiment/ composes, builds, and runs its first steps on offline data."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from gansuite.config.keys import CONF_DIR
from gansuite.training.run import train

from .conftest import assert_trained, make_cfg

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# Data a preset downloads (or reads from a folder) -> an offline stand-in of the same shape.
STAND_INS = {
    "gansuite.data.downloads.MNIST": ["data=mnist_offline"],
    "gansuite.data.downloads.CIFAR10": ["data=mnist_offline", "data.resolution=32"],
    "gansuite.data.folders.ImageFolder": ["data=mnist_offline", "data.resolution=64"],
    "gansuite.data.superres.SuperResolution:folder": ["data=sr_mnist"],
    "gansuite.data.pairs.PairedFolder": ["data=edges2digits", "~data.direction"],
    "gansuite.data.unpaired.UnpairedFolders": ["data=digit_styles"],
    "gansuite.data.captioned_folder.CaptionedFolder": ["data=captioned_digits", "~data.root", "~data.images",
                                                       "text_encoder=word_gru"],
}


def _preset_cfg(tmp_path, preset: str, *extra: str):
    full = make_cfg(tmp_path, f"experiment={preset}", tiny=False)
    source = OmegaConf.select(full, "data.source")
    stand_in = STAND_INS.get(f"{full.data._target_}:{source}" if source else full.data._target_, [])
    # Naming the preset's own model again changes nothing but lets make_cfg pick its tiny widths.
    return full, make_cfg(tmp_path, f"experiment={preset}", f"model={full.model.name}", *stand_in, *extra)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_states_its_source_and_names_its_run(tmp_path, preset):
    text = (CONF_DIR / "experiment" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_\n# "), "a preset starts with its package line and its source"
    full, _ = _preset_cfg(tmp_path, preset)
    # The preset's run name wins over train.yaml's default ${model.name}-${loss.name}.
    assert OmegaConf.select(full, "name") != f"{full.model.name}-{full.loss.name}" or preset == "dcgan_mnist"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_its_first_steps_on_offline_data(tmp_path, preset):
    _, cfg = _preset_cfg(tmp_path, preset, "trainer.max_steps=2", "callbacks=none", "data.batch_size=8")
    result = train(cfg)
    assert_trained(result, 2)
