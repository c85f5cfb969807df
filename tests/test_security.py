"""A checkpoint may come from someone else: nothing its config names is called unless gansuite allows that name."""

from __future__ import annotations

import base64
import copy
import io
import re
import sys
from pathlib import Path

import pytest
import torch

from gansuite.cli import evaluate
from gansuite.cli import sample as cli_sample
from gansuite.cli.train import main as train_main
from gansuite.config.security import CLASS_MODULES, RESUMED_CLASS_MODULES, is_allowed
from gansuite.errors import ConfigError
from gansuite.training.run import train

from .conftest import make_cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train(make_cfg(run, "model=gan", "trainer.max_steps=1", "callbacks=none"))
    return run / "checkpoints" / "last.ckpt"


def _crafted(checkpoint: Path, folder: Path, group: str, node: dict) -> Path:
    """``checkpoint`` with ``node`` put at ``group`` (a dotted path) of its stored config."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = copy.deepcopy(payload["gansuite_config"])
    *parents, last = group.split(".")
    target = config
    for name in parents:
        target = target[name]
    target[last] = node
    payload["gansuite_config"] = config
    path = folder / "crafted.ckpt"
    torch.save(payload, path)
    return path


def _attacks(victim: Path) -> list[tuple[str, dict]]:
    pickled = io.BytesIO()
    torch.save({"x": 1}, pickled)
    return [
        # A pickle carried in the config itself, loaded with weights_only=False (issue 16's example).
        ("data", {"_target_": "torch.load", "weights_only": False,
                  "f": {"_target_": "io.BytesIO", "initial_bytes": {"_target_": "base64.b64decode",
                                                                    "s": base64.b64encode(pickled.getvalue()).decode()}}}),
        ("data", {"_target_": "builtins.open", "file": str(victim), "mode": "w"}),
        ("model.generator", {"_target_": "subprocess.run", "args": ["touch", str(victim)]}),
        ("model.discriminator", {"_target_": "os.system", "command": f"touch {victim}"}),
        ("loss.objective", {"_target_": "importlib.import_module", "name": "antigravity"}),
        ("loss.objective.d_loss", {"_target_": "pickle.loads", "data": b"x"}),
        ("model.generator", {"_target_": "gansuite.training.run.os.system", "command": f"touch {victim}"}),
        ("model.module", {"_target_": "gansuite.metrics.shipped.main", "argv": ["--write"]}),
    ]


@pytest.mark.parametrize("attack", range(8))
def test_gansuite_sample_and_eval_refuse_a_checkpoint_whose_config_names_other_callables(checkpoint, tmp_path,
                                                                                          capsys, attack):
    victim = tmp_path / "victim"
    group, node = _attacks(victim)[attack]
    crafted = _crafted(checkpoint, tmp_path, group, node)
    key = f"{group}._target_"
    with pytest.raises(SystemExit) as exited:
        cli_sample.main([str(crafted), "--grid", str(tmp_path / "grid.png"), "-n", "4"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and err.count("\n") == 0
    assert f"its config names {key}='{node['_target_']}', which gansuite does not allow a checkpoint to call" in err
    with pytest.raises(ConfigError, match=f"its config names {key}="):
        evaluate.evaluate_checkpoint(crafted)
    assert not victim.exists() and not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("attack", range(8))
def test_resume_refuses_a_checkpoint_whose_config_names_other_callables(checkpoint, tmp_path, capsys, monkeypatch,
                                                                        attack):
    """resume= rebuilds the run from the checkpoint's config: the same allow-list, and callbacks are checked too."""
    victim = tmp_path / "victim"
    group, node = ([("callbacks.evil", {"_target_": "os.system", "command": f"touch {victim}"})]
                   + _attacks(victim))[attack]
    crafted = _crafted(checkpoint, tmp_path, group, node)
    monkeypatch.setattr(sys, "argv", ["gansuite-train", "model=gan", "logger=none", "eval=none", "trainer=debug",
                                      f"resume={crafted}", "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exited:
        train_main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2
    assert f"its config names {group}._target_='{node['_target_']}', which gansuite does not allow" in err[-1]
    assert not victim.exists() and not list((tmp_path / "run").rglob("*.ckpt"))


def test_init_generator_takes_only_weights_from_a_crafted_checkpoint(checkpoint, tmp_path):
    """model.init_generator reads the state dict alone: a config naming os.system is never looked at."""
    victim = tmp_path / "victim"
    crafted = _crafted(checkpoint, tmp_path, "model.generator",
                       {"_target_": "os.system", "command": f"touch {victim}"})
    result = train(make_cfg(tmp_path / "run", "model=gan", "trainer.max_steps=1", "callbacks=none",
                            f"+model.init_generator={crafted}"))
    assert result["step"] == 1 and not victim.exists()


def test_the_checkpoints_gansuite_writes_and_every_target_of_its_configs_are_allowed(checkpoint, tmp_path):
    cli_sample.main([str(checkpoint), "--grid", str(tmp_path / "grid.png"), "-n", "4"])
    assert (tmp_path / "grid.png").is_file()
    conf = Path(__file__).resolve().parent.parent / "conf"
    targets = {t for path in conf.rglob("*.yaml") for t in re.findall(r"_target_:\s*([A-Za-z0-9_.]+)", path.read_text())}
    # Not built from a checkpoint's config: Lightning's own loggers, the Hydra callbacks under hydra:.
    built = {t for t in targets if not t.startswith(("lightning.", "gansuite.training.rundir."))}
    refused = sorted(t for t in built if not is_allowed(t, CLASS_MODULES + RESUMED_CLASS_MODULES))
    assert built and not refused, refused  # a resumed run builds its callbacks and strategy from these


def test_an_interpolation_cannot_carry_a_target_into_a_built_group(checkpoint, tmp_path, capsys):
    victim = tmp_path / "victim"
    crafted = _crafted(checkpoint, tmp_path, "trainer.evil", {"_target_": "builtins.open", "file": str(victim),
                                                              "mode": "w"})
    crafted = _crafted(crafted, tmp_path, "data", "${trainer.evil}")
    with pytest.raises(SystemExit):
        cli_sample.main([str(crafted), "--grid", str(tmp_path / "grid.png"), "-n", "4"])
    assert "its config holds an interpolation at data ('${trainer.evil}')" in capsys.readouterr().err
    crafted = _crafted(checkpoint, tmp_path, "loss.objective", '${oc.decode:"{_target_: builtins.print}"}')
    with pytest.raises(ConfigError, match="holds an interpolation at loss.objective"):
        evaluate.evaluate_checkpoint(crafted)
    assert not victim.exists()


def test_gansuite_classes_that_open_files_are_not_allowed_and_inception_weights_are_loaded_safely(tmp_path):
    from gansuite.metrics.inception import InceptionExtractor, MissingWeightsError

    assert not is_allowed("gansuite.metrics.inception.InceptionExtractor")
    assert not is_allowed("gansuite.training.checkpointing.AtomicCheckpointIO")
    assert is_allowed("gansuite.nets.dcgan.Generator") and is_allowed("gansuite.data.digits.OfflineMNIST")

    class Payload:  # unpickling it would create the victim file
        def __reduce__(self):
            return (open, (str(tmp_path / "victim"), "w"))

    weights = tmp_path / "weights.pth"
    torch.save({"w": Payload()}, weights)
    with pytest.raises(MissingWeightsError, match="is not a weights file"):
        InceptionExtractor(weights)
    assert not (tmp_path / "victim").exists()
