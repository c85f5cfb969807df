"""``gansuite-train resume=<run>`` rebuilds the run from the config in its checkpoint: nothing to retype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gansuite.config.resuming import resumed_config
from gansuite.errors import ConfigError

from .conftest import gansuite_train_in_process as gansuite_train
from .conftest import make_cfg

TINY_RING = ["logger=none", "eval=none", "callbacks=none", "trainer=debug", "model=gan", "data=ring8",
             "data.batch_size=100", "model.generator.width=16", "model.discriminator.width=16",
             "model.generator.depth=1", "model.discriminator.depth=1"]


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
    assert "resuming from" in (resumed / "train.log").read_text()  # not a fresh run that happens to match
    assert int((resumed / "history.csv").read_text().splitlines()[1].split(",")[0]) >= 4  # its first logged step
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


def _config(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["gansuite_config"]


def test_values_that_follow_a_changed_key_follow_it_on_resume(monkeypatch, tmp_path):
    """CycleGAN's learning rate decays to 0 over trainer.max_steps: a run extended on resume decays over the new
    length, not the old one (its stored schedule was resolved from trainer.max_steps)."""
    tiny = ["logger=none", "eval=none", "callbacks=none", "trainer=debug", "model=cyclegan", "data=digit_styles",
            "data.batch_size=2", "model.generator.width=4", "model.generator.n_blocks=1", "model.discriminator.width=4"]
    first = tmp_path / "first"
    assert gansuite_train(monkeypatch, first, *tiny, "trainer.max_steps=2") == 0
    assert _config(first)["model"]["g_scheduler"]["total_steps"] == 2
    second = tmp_path / "second"
    assert gansuite_train(monkeypatch, second, f"resume={first}", "trainer.max_steps=4") == 0
    assert _config(second)["model"]["g_scheduler"]["total_steps"] == 4
    assert _config(second)["model"]["d_scheduler"]["total_steps"] == 4


def test_the_runs_logger_name_and_tags_come_back(monkeypatch, tmp_path):
    first = tmp_path / "first"
    assert gansuite_train(monkeypatch, first, *TINY_RING[1:], "logger=csv", "name=myrun", "tags=[a,b]",
                          "trainer.max_steps=2") == 0
    second = tmp_path / "second"
    assert gansuite_train(monkeypatch, second, f"resume={first}", "trainer.max_steps=3") == 0
    config = _config(second)
    assert config["logger"]["_target_"] == "lightning.pytorch.loggers.CSVLogger"
    assert config["name"] == "myrun" and config["tags"] == ["a", "b"]
    assert list((second / "csv").glob("version_*/metrics.csv"))


def test_a_key_added_to_gansuite_since_the_run_gets_its_default(monkeypatch, tmp_path):
    """A checkpoint written before a key existed resumes with the key's default."""
    first = tmp_path / "first"
    assert gansuite_train(monkeypatch, first, *TINY_RING, "trainer.max_steps=2") == 0
    last = first / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    del checkpoint["gansuite_config"]["loss"]["regularizer"]["every"]
    torch.save(checkpoint, last)
    assert gansuite_train(monkeypatch, tmp_path / "second", f"resume={first}", "trainer.max_steps=3") == 0
    assert _config(tmp_path / "second")["loss"]["regularizer"]["every"] == 1


@pytest.mark.parametrize(("override", "status"), [("trainer.threads=1", 0), ("eval=none", 0),
                                                  ("~model.module.ema_decay", 2), ("seed=5", 2)])
def test_host_settings_change_on_resume_and_what_is_trained_does_not(monkeypatch, tmp_path, capsys, override,
                                                                      status):
    first = tmp_path / "first"
    assert gansuite_train(monkeypatch, first, *TINY_RING, "trainer.max_steps=2") == 0
    capsys.readouterr()
    assert gansuite_train(monkeypatch, tmp_path / "second", f"resume={first}", "trainer.max_steps=3",
                          override) == status
    if status:
        key = override.lstrip("~").split("=")[0]
        assert key in capsys.readouterr().err


def test_moved_data_is_found_with_data_root(monkeypatch, tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(images / f"{i}.png")
    tiny = ["logger=none", "eval=none", "callbacks=none", "trainer=debug", "data=image_folder", f"data.root={images}",
            "data.resolution=32", "data.batch_size=4", "model.generator.width=4", "model.discriminator.width=4"]
    first = tmp_path / "first"
    assert gansuite_train(monkeypatch, first, *tiny, "trainer.max_steps=1") == 0
    moved = images.rename(tmp_path / "moved")
    capsys.readouterr()
    # The default data (the offline MNIST) has no data.root: Hydra refuses the key, and the sentence says how.
    assert gansuite_train(monkeypatch, tmp_path / "refused", f"resume={first}", f"data.root={moved}") == 2
    assert "is given as +data.root=..." in capsys.readouterr().err
    assert gansuite_train(monkeypatch, tmp_path / "second", f"resume={first}", "trainer.max_steps=2",
                          f"+data.root={moved}") == 0
    assert _config(tmp_path / "second")["data"]["root"] == str(moved)
