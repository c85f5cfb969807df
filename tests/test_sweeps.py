"""Sweeps, offline on the CPU with tiny budgets: the Hydra grid, the Optuna study for the lowest FID, the
W&B sweep files (valid, and their command a Hydra command line that trains), the SLURM launcher."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep
from omegaconf import OmegaConf

from gansuite.cli import compare
from gansuite.cli import train as cli_train
from gansuite.config.keys import CONF_DIR
from gansuite.errors import NonFiniteLossError
from gansuite.metrics.eval_callback import EvalCallback
from gansuite.metrics.fidelity import count_tag
from gansuite.training import run as train_module
from gansuite.training.logging import sweep_group
from gansuite.training.sweeps import in_multirun, objective

from .conftest import make_cfg

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
WANDB_SWEEPS = sorted(SWEEPS.glob("wandb_*.yaml"))

# Tiny nets, a few steps, no sample grids: each run takes well under a second.
TINY_RING = ["model=gan", "data=ring8", "eval=none", "logger=csv", "callbacks=none", "trainer=debug",
             "trainer.max_steps=2", "model.latent_dim=8", "data.batch_size=8", "model.generator.width=16",
             "model.discriminator.width=16", "model.generator.depth=1", "model.discriminator.depth=1"]
# DCGAN on the offline digits measured by the domain classifier on 64 samples (trained for no steps:
# the features are random but fixed, which is all a sweep needs to rank trials).
TINY_FID = ["logger=csv", "callbacks=none", "trainer=debug", "trainer.max_steps=3", "trainer.checkpoint_every=3",
            "eval.every_n_steps=2", "eval.num_samples=64", "eval.num_real=64", "eval.batch_size=64", "model.latent_dim=8",
            "data.batch_size=8", "model.generator.width=4", "model.discriminator.width=4"]

jobs: list[dict] = []  # what each job of the last in-process sweep saw


def run_app(monkeypatch, *argv: str) -> None:
    """``gansuite-train *argv`` in this process (a subprocess would spend most of its time importing):
    gansuite.cli.train.main itself, with each job's W&B group and multirun flag recorded."""
    jobs.clear()
    train = cli_train.train  # what the command calls: training.run.train, or a test's stand-in for it

    def recording_train(cfg, **kwargs):
        jobs.append({"group": sweep_group(), "multirun": in_multirun()})
        return train(cfg, **kwargs)

    monkeypatch.setattr(cli_train, "train", recording_train)
    monkeypatch.setattr(sys, "argv", ["gansuite-train", *argv])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets gain nothing from threads, and lose much on a busy machine
    try:
        cli_train.main()
    finally:
        torch.set_num_threads(threads)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # later tests are not in a multirun


def overrides_of(run_dir: Path) -> list[str]:
    return list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))


def sweeper_params(name: str) -> dict[str, list[str]]:
    """``hydra.sweeper.params`` of a sweep file, each parsed as Hydra parses a sweep."""
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        cfg = compose(name, overrides=[f"hydra.searchpath=[file://{CONF_DIR}]"], return_hydra_config=True)
    parser = OverridesParser.create()
    return {key: parser.parse_override(f"{key}={value}").value() for key, value in cfg.hydra.sweeper.params.items()}


# ----------------------------------------------------------------------------- the objective
def _result(monitor, best):
    callback = EvalCallback.__new__(EvalCallback)  # the fields objective() reads, without an evaluator
    callback.monitor, callback.best = monitor, best
    return {"trainer": SimpleNamespace(callbacks=[object(), callback])}


def test_objective_is_the_best_value_of_the_kept_metric_to_minimise_and_inf_without_one():
    assert objective(_result("fid_clf_10k", {"fid_clf_10k": {"value": 12.5, "step": 2000},
                                             "kid_clf_10k": {"value": 0.01, "step": 3000}})) == 12.5
    assert objective(_result("is_10k", {"is_10k": {"value": 7.5, "step": 1000}})) == -7.5  # higher is better
    assert objective(None) == math.inf  # diverged
    assert objective({"trainer": SimpleNamespace(callbacks=[])}) == math.inf  # eval=none, 2D data
    assert objective(_result(None, {"fid_8": {"value": 1.0, "step": 1}})) == math.inf  # eval.keep_best=null
    assert objective(_result("fid_8", {})) == math.inf  # stopped before its first evaluation


# ----------------------------------------------------------------------------- Hydra grid
def test_grid_sweep_runs_one_run_per_loss_and_seed(tmp_path, monkeypatch):
    grid = sweeper_params("losses_x_seeds")
    losses = grid["loss"].list
    assert set(losses) == {"nonsaturating", "minimax", "lsgan", "hinge", "wgan_gp"} and grid["seed"].list == [0, 1, 2]
    sweep_dir = tmp_path / "grid"
    # The file's five losses, two of its seeds (a command-line value replaces the file's list).
    run_app(monkeypatch, "-m", "-cd", str(SWEEPS), "-cn", "losses_x_seeds", *TINY_RING, "seed=0,1",
            f"hydra.sweep.dir={sweep_dir}")

    runs = sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert len(runs) == len(losses) * 2
    points = set()
    for run in runs:
        swept = {o.split("=")[0]: o.split("=")[1] for o in overrides_of(run) if o.split("=")[0] in ("loss", "seed")}
        checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        config = checkpoint["gansuite_config"]
        assert checkpoint["gansuite_step"] == 2
        assert config["loss"]["name"] == swept["loss"] and str(config["seed"]) == swept["seed"]
        # One W&B group for the whole multirun; each run named by its loss and seed.
        assert config["group"] == str(sweep_dir)
        assert config["name"] == f"gan-{swept['loss']}-seed{swept['seed']}"
        points.add((swept["loss"], int(swept["seed"])))
    assert points == set(itertools.product(losses, [0, 1]))
    assert jobs == [{"group": str(sweep_dir), "multirun": True}] * len(runs)

    # gansuite-compare reads the multirun's own CSV logs: one row per run, the swept overrides apart.
    rows, shared = compare.compare_rows([compare.read_run(p) for p in compare.find_runs([sweep_dir])], "train/d_loss")
    assert len(rows) == len(runs) and "logger=csv" in shared
    assert sorted(tuple(r["overrides"]) for r in rows) == sorted((f"loss={lo}", f"seed={s}") for lo, s in points)


# ----------------------------------------------------------------------------- Optuna
def test_optuna_sweep_reports_the_trial_with_the_lowest_best_fid(tmp_path, monkeypatch):
    from gansuite.metrics import classifier

    monkeypatch.setenv("GANSUITE_CACHE", str(tmp_path / "cache"))  # an untrained classifier stays in this test
    monkeypatch.setattr(classifier, "_train", lambda *args, **kwargs: None)
    train, calls = train_module.train, []

    def second_trial_diverges(cfg, **kwargs):
        calls.append(cfg)
        if len(calls) == 2:
            raise NonFiniteLossError("train/d_loss became nan at step 1")
        return train(cfg, **kwargs)

    monkeypatch.setattr(cli_train, "train", second_trial_diverges)
    sweep_dir = tmp_path / "optuna"
    run_app(monkeypatch, "-m", "-cd", str(SWEEPS), "-cn", "optuna_fid", *TINY_FID, "hydra.sweeper.n_trials=3",
            f"hydra.sweep.dir={sweep_dir}")

    space = sweeper_params("optuna_fid")
    results = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    trials = {}
    for run in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        params = {o.split("=")[0]: o.split("=")[1] for o in overrides_of(run) if o.split("=")[0] in space}
        assert params.keys() == space.keys()
        for key, value in params.items():  # every trial inside the search space
            if isinstance(space[key], IntervalSweep):
                assert space[key].start <= float(value) <= space[key].end, (key, value)
            else:
                assert isinstance(space[key], ChoiceSweep) and value in space[key].list, (key, value)
        fids = [json.loads(p.read_text())["values"]["fid_clf_64"] for p in (run / "checkpoints").glob("eval_step_*.json")]
        trials[run.name] = (params, min(fids) if fids else None)
    assert len(trials) == 3 and trials["1"][1] is None  # the diverged trial measured nothing, and the sweep went on
    best_run = min((name for name in trials if trials[name][1] is not None), key=lambda name: trials[name][1])
    assert jobs[1] == {"group": str(sweep_dir), "multirun": True}
    assert results["best_value"] == trials[best_run][1]
    assert {k: str(v) for k, v in results["best_params"].items()} == trials[best_run][0]


# ----------------------------------------------------------------------------- W&B sweep files
SWEEP_KEYS = {"apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
              "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters"}
DISTRIBUTIONS = {"constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
                 "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal",
                 "q_normal", "log_normal", "q_log_normal", "beta", "q_beta"}


def load_sweep(path: Path) -> dict:
    return yaml.safe_load(path.read_text())  # as `wandb sweep` reads it (YAML 1.1: 1e-5 would be a string)


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda p: p.name)
def test_wandb_sweep_file_has_the_shape_wandb_sweep_accepts(path):
    """The keys and values W&B's sweep schema allows, checked here; wandb's own validation is the next test."""
    sweep = load_sweep(path)
    assert set(sweep) <= SWEEP_KEYS and sweep["method"] in ("grid", "random", "bayes")
    assert sweep["metric"]["goal"] in ("minimize", "maximize") and isinstance(sweep["metric"]["name"], str)
    for name, spec in sweep["parameters"].items():
        kinds = {"value", "values", "distribution"} & set(spec)
        assert len(kinds) == 1 or (kinds == {"distribution", "values"} and spec["distribution"] == "categorical"), name
        if "values" in spec:
            assert isinstance(spec["values"], list) and spec["values"], name
        if "distribution" in spec and spec["distribution"] != "categorical":
            assert spec["distribution"] in DISTRIBUTIONS and spec["distribution"] != "constant", name
            assert all(isinstance(spec[k], (int, float)) for k in ("min", "max")) and spec["min"] < spec["max"], name
        if sweep["method"] == "grid":
            assert "distribution" not in spec, f"{name}: a grid sweep takes value or values"
    assert isinstance(sweep["command"], list) and all(isinstance(c, str) for c in sweep["command"])
    assert "${args_no_hyphens}" in sweep["command"] and sweep["project"] == "gansuite"


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda p: p.name)
def test_wandb_sweep_file_passes_wandbs_own_validation(path):
    # What `wandb sweep` runs on a sweep file, from the package wandb[sweeps] installs. That package pins
    # numpy<2, so it is not a dependency: `pip install --no-deps sweeps jsonref` adds it.
    try:
        from sweeps import schema_violations_from_proposed_config
    except ImportError:  # (this repository's sweeps/ folder imports as an empty namespace package)
        pytest.skip("wandb's sweep validator is not installed (pip install --no-deps sweeps jsonref)")
    assert schema_violations_from_proposed_config(load_sweep(path)) == []


def agent_runs(sweep: dict) -> list[dict]:
    """Parameter sets an agent could be handed: the whole grid, or each distribution's ends and each choice."""
    fixed = {k: v["value"] for k, v in sweep["parameters"].items() if "value" in v}
    free = {k: v for k, v in sweep["parameters"].items() if "value" not in v}
    if sweep["method"] == "grid":
        return [{**fixed, **dict(zip(free, combo, strict=True))}
                for combo in itertools.product(*(v["values"] for v in free.values()))]
    picks = {k: v["values"] if "values" in v else [v["min"], v["max"]] for k, v in free.items()}
    return [{**fixed, **{k: values[i % len(values)] for k, values in picks.items()}}
            for i in range(max(map(len, picks.values())))]


def agent_command(sweep: dict, params: dict) -> list[str]:
    """The command line ``wandb agent`` runs for ``params`` (wandb's own expansion of the macros)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    macros["env"] = ["/usr/bin/env"]
    command = []
    for part in create_sweep_command(list(sweep["command"])):
        command += macros[part[2:-1]] if part.startswith("${") and part.endswith("}") else [part]
    return command


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda p: p.name)
def test_wandb_sweep_command_is_a_hydra_command_line_for_every_run(path, monkeypatch):
    sweep = load_sweep(path)
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_RUN_ID", "run9")
    for params in agent_runs(sweep):
        command = agent_command(sweep, params)
        assert command[:2] == ["/usr/bin/env", "gansuite-train"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=command[2:], return_hydra_config=True)
        assert cfg.hydra.run.dir == "outputs/wandb-sweeps/abc123/run9"
        assert cfg.group == "wandb-sweep-abc123" and cfg.logger.group == "wandb-sweep-abc123"
        for key, value in params.items():
            got = cfg.hydra.runtime.choices[key] if key in cfg.hydra.runtime.choices else OmegaConf.select(cfg, key)
            assert got == value, (key, got, value)
        # The sweep's metric is a key the run logs: best/<FID key at this sample count>.
        assert sweep["metric"]["name"] == f"best/fid_clf_{count_tag(cfg.eval.num_samples)}"
        assert cfg.hydra.runtime.choices["data"] == "mnist_offline"  # the classifier's FID, "fid_clf"


def test_wandb_agent_command_trains_a_run(tmp_path, monkeypatch):
    """The grid's first run as the agent starts it (its command, its environment), on a tiny budget."""
    sweep = load_sweep(SWEEPS / "wandb_losses_x_seeds.yaml")
    params = agent_runs(sweep)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_RUN_ID", "run0")
    run_app(monkeypatch, *agent_command(sweep, params)[2:], *[o for o in TINY_RING if not o.startswith("loss")])
    run = tmp_path / "outputs" / "wandb-sweeps" / "abc123" / "run0"
    config = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["gansuite_config"]
    assert config["loss"]["name"] == params["loss"] and config["seed"] == params["seed"]
    assert config["name"] == f"gan-{params['loss']}-seed{params['seed']}" and config["group"] == "wandb-sweep-abc123"
    assert jobs == [{"group": "wandb-sweep-abc123", "multirun": False}]


# ----------------------------------------------------------------------------- SLURM
def test_slurm_launcher_reserves_what_the_trainer_uses(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4",
                                          "trainer.num_nodes=2", f"hydra.sweep.dir={tmp_path}"],
                      return_hydra_config=True)
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    assert isinstance(launcher, SlurmLauncher)
    params = dict(launcher.params)
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 4, 4)
    assert params["partition"] is None and params["timeout_min"] == 1440

    # The sbatch script submitit writes from these, mapped to its names as SlurmLauncher.launch maps them.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")  # submitit looks for srun
    executor = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"],
                                     slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    script = executor._executor._make_submission_file_text("python -m gansuite.cli.train", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=1440"):
        assert line in script.splitlines()
    assert "--partition" not in script


def test_sweep_group_names_the_wandb_sweep(monkeypatch):
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    assert sweep_group() is None  # a single run outside any sweep
    monkeypatch.setenv("WANDB_SWEEP_ID", "xyz")
    assert sweep_group() == "wandb-sweep-xyz"


def test_wandb_runs_are_grouped_and_tagged_by_their_preset():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        preset = compose("train", overrides=["experiment=acgan_mnist", "logger=wandb"])
        plain = compose("train", overrides=["logger=wandb"])
    assert preset.logger.group == "acgan" and list(preset.logger.tags) == ["acgan", "mnist_offline"]
    assert plain.logger.group is None and list(plain.logger.tags) == []


@pytest.mark.parametrize(("model", "loss", "norm"), [("dcgan", "wgan_gp", "layer"), ("dcgan", "hinge", "batch"),
                                                     ("cgan", "wgan_gp", "layer"), ("acgan", "nonsaturating", "batch")])
def test_every_loss_of_the_losses_grid_gets_a_critic_it_can_use(tmp_path, model, loss, norm):
    """WGAN-GP's penalty is per sample: under loss=wgan_gp the DCGAN-style critics use layer norm, not batch norm
    (the losses_x_seeds grid used to run WGAN-GP with a batch-norm critic)."""
    cfg = make_cfg(tmp_path, f"model={model}", f"loss={loss}", tiny=False)
    assert cfg.model.discriminator.norm == norm
    assert make_cfg(tmp_path, f"model={model}", f"loss={loss}", "model.discriminator.norm=batch",
                    tiny=False).model.discriminator.norm == "batch"  # an explicit choice still wins
