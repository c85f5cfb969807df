"""Train the run a composed config describes: the Trainer, its strategy, precision, logger and callbacks.

With :mod:`gansuite.config.build` this is the edge: the places that read the config and call
``hydra.utils.instantiate`` (here for the trainer's own groups: strategy, logger, callbacks). Everything
below receives built objects.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gansuite.config.build import build, build_node, init_generator
from gansuite.config.renamed import current_targets
from gansuite.config.validate import validate
from gansuite.errors import ConfigError
from gansuite.training.checkpointing import (
    AtomicCheckpointIO,
    RunInfo,
    StepCheckpoint,
    check_compatible,
    read_checkpoint,
    remove_stale_temporaries,
    resolve_resume,
)
from gansuite.training.logging import save_code_state
from gansuite.training.precision import PerOptimizerMixedPrecision
from gansuite.training.rundir import auto_resume

log = logging.getLogger("gansuite")


EVAL_OPTIONS = ("extractor", "metrics", "num_samples", "num_real", "reference_split", "batch_size", "seed",
                "inception_weights", "download", "cache_dir", "precision", "cas_per_class", "aug_real_per_class")
# Options added later, with the value a config written before them meant (a checkpoint's stored config).
EVAL_DEFAULTS = {"precision": "exact", "cas_per_class": None, "aug_real_per_class": [10, 50, 100]}


def eval_device(cfg: DictConfig) -> str:
    """Where a run's evaluation runs: its training device, so gansuite-eval repeats its numbers."""
    on_gpu = str(cfg.trainer.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return "cuda" if on_gpu else "cpu"


def make_evaluator(cfg: DictConfig, datamodule: L.LightningDataModule, device: str | None = None):
    """The evaluation ``cfg.eval`` describes for this data (None when off or not applicable).

    Trains or loads the domain classifier and computes or loads the reference features now,
    so missing weights fail before training starts. The global RNG is left untouched, so a
    run is the same whether those were cached or not.
    """
    node = cfg.get("eval")
    if not node or "extractor" not in node:
        return None
    from gansuite.metrics.eval_callback import make_evaluator as _make

    options = {**EVAL_DEFAULTS, **OmegaConf.to_container(node, resolve=True)}
    missing = [k for k in EVAL_OPTIONS + ("every_n_steps", "keep_best") if k not in options]
    if missing:
        raise ConfigError(f"eval.{missing[0]} is missing; start from conf/eval/default.yaml (eval=default) "
                          f"and override single keys.")
    if not isinstance(options.get("metrics"), list):
        raise ConfigError(f"eval.metrics: {options.get('metrics')!r} is not a list; write eval.metrics=[fid,kid].")
    device = device or eval_device(cfg)
    cuda = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        return _make(datamodule, **{k: options[k] for k in EVAL_OPTIONS}, device=device, log=log.info)


def _granted_cores() -> int | None:
    """The cores this process may run on, unless OMP_NUM_THREADS already chose (None: leave torch's default)."""
    if os.environ.get("OMP_NUM_THREADS") or not hasattr(os, "sched_getaffinity"):
        return None
    return len(os.sched_getaffinity(0)) or None


def _strategy_and_precision(cfg: DictConfig) -> tuple[Any, list[Any]]:
    """trainer.strategy (a name or a node with _target_) and the precision plugin 16-mixed needs."""
    node = cfg.trainer.get("strategy", "auto")
    strategy = build_node("trainer.strategy", node) if isinstance(node, DictConfig) and "_target_" in node else node
    plugins = []
    if str(cfg.trainer.precision) in ("16-mixed", "16"):
        # One gradient scaler per optimizer (D and G), not Lightning's shared one.
        plugins.append(PerOptimizerMixedPrecision(device=eval_device(cfg)))
    return strategy, plugins


def _compile_for_training(net: torch.nn.Module, options: dict[str, Any]) -> None:
    """``torch.compile`` ``net`` in place for its training-mode calls; in eval mode it runs eagerly.

    Eval-mode calls are sample grids, evaluation and ``sample(ema=False)`` (the EMA copy is never
    compiled): other batch sizes, no grad, eval-mode batch norm. Compiled, each would be a
    recompile in the middle of training (about 10 s on a CPU) and a batch size seen twice would
    turn the batch dimension dynamic. Eager, they compute what an eager run computes.
    A ``ModuleDict`` or ``ModuleList`` (CycleGAN's pairs) is never called itself: its members are.
    """
    if isinstance(net, (torch.nn.ModuleDict, torch.nn.ModuleList)):
        for member in (net.values() if isinstance(net, torch.nn.ModuleDict) else net):
            _compile_for_training(member, options)
        return
    net.compile(**options)  # in place: parameter names and checkpoints are unchanged
    compiled, eager = net._compiled_call_impl, net._call_impl

    def call(*args: Any, **kwargs: Any) -> Any:
        return compiled(*args, **kwargs) if net.training else eager(*args, **kwargs)

    net._compiled_call_impl = call


class EagerRegularizer:
    """A D regularizer whose passes through D run eagerly although D is compiled.

    Gradient penalty and R1 put D's input gradient into the loss, so its backward is a double
    backward, which compiled graphs (AOTAutograd) refuse at the first regularized step. D's loss
    terms keep its compiled graphs; the penalty's own pass is the eager one, the same math.
    """

    def __init__(self, regularizer: Any) -> None:
        self.regularizer = regularizer

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.compiler.set_stance("force_eager"):
            return self.regularizer(*args, **kwargs)


def _speed_options(cfg: DictConfig, module: L.LightningModule) -> None:
    """trainer.channels_last and trainer.compile, applied to the trained networks (not the EMA copy)."""
    nets = [net for net in (module.generator, module.discriminator) if net is not None]
    if cfg.trainer.get("channels_last"):
        for net in nets:
            net.to(memory_format=torch.channels_last)
    options = cfg.trainer.get("compile")
    if not options:
        return
    kwargs = OmegaConf.to_container(options) if isinstance(options, DictConfig) else {}
    # A training batch always has the same shape (drop_last), so graphs stay static: a dynamic batch
    # dimension would only cost speed. trainer.compile={dynamic: true} asks for one anyway.
    kwargs.setdefault("dynamic", False)
    for net in nets:
        _compile_for_training(net, kwargs)
    if module.regularizer is not None:
        if not hasattr(torch.compiler, "set_stance"):
            raise ConfigError(f"trainer.compile with a regularizer (loss.regularizer) needs torch 2.6 or newer to run "
                              f"its double backward eagerly, and this is torch {torch.__version__}; upgrade torch or "
                              "set trainer.compile=false.")
        module.regularizer = EagerRegularizer(module.regularizer)


def _make_logger(cfg: DictConfig, resume_id: str | None, commit: str | None = None):
    """The configured logger, or None. W&B never prompts or hangs: without a key or network it runs offline."""
    if cfg.get("logger") is None or "_target_" not in cfg.logger:
        return None
    from gansuite.training.logging import run_metadata, sweep_group, wandb_mode

    kwargs: dict[str, Any] = {}
    if cfg.logger._target_.endswith("WandbLogger"):
        mode, reason = wandb_mode(save_dir=cfg.logger.save_dir)
        if reason:
            log.warning(reason)
        kwargs["mode"] = mode  # not offline=True, which Lightning turns into a process-wide env var
        if cfg.logger.get("group") is None and (group := sweep_group()):
            kwargs["group"] = group  # the runs of one sweep (Hydra multirun or W&B agent) form one W&B group
        if resume_id:
            kwargs.update(id=resume_id, resume="allow")
    logger = build_node("logger", cfg.logger, **kwargs)
    # Lightning always passes wandb.init an "anonymous" value, which wandb warns about on every run.
    if isinstance(getattr(logger, "_wandb_init", None), dict) and logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    metadata = run_metadata(cfg, commit=commit)
    # Flat keys (model/name, loss/name, data/_target_), not W&B's own nesting: a W&B sweep's parameters (loss, seed)
    # live in the same run config, and a nested "loss" node would overwrite the sweep's "loss" value.
    logger.log_hyperparams({**metadata["config"], "git_commit": metadata["git_commit"],
                            "gansuite_version": metadata["gansuite_version"]})
    return logger


def train(cfg: DictConfig, composed_from: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the run ``cfg`` describes; returns where its outputs went and how far it got.

    ``composed_from``: the primary config and overrides ``cfg`` was composed from, kept in the checkpoints
    for ``resume=`` (gansuite-train passes them).
    """
    validate(cfg)
    threads = cfg.trainer.get("threads") or _granted_cores()
    if threads and (cfg.trainer.get("threads") or threads < torch.get_num_threads()):
        # On a shared machine, the cores this job was given (taskset, a SLURM or container CPU set); torch's
        # default can count every core of the machine and collide with the other jobs.
        torch.set_num_threads(threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    cfg.resume = auto_resume(output_dir, cfg.get("resume"))  # a requeued SLURM job continues from its own checkpoints
    datamodule, module = build(cfg)

    config = OmegaConf.to_container(cfg, resolve=True)
    commit = None
    if rank_zero_only.rank == 0:
        commit = save_code_state(output_dir)
        if commit is not None:
            dirty = " (its uncommitted changes are in git_diff.patch)" if commit.endswith("-dirty") else ""
            log.info(f"code: gansuite {commit}{dirty}")
    if cfg.model.get("init_generator") and not cfg.get("resume"):
        init_generator(module, cfg.model.init_generator)
    ckpt_path, resume_id = None, None
    if cfg.get("resume"):
        ckpt_path = resolve_resume(cfg.resume)
        checkpoint = read_checkpoint(ckpt_path)
        current_targets(checkpoint.get("gansuite_config"))  # an older version's class paths, renamed
        check_compatible(checkpoint, module, config, ckpt_path)
        resume_id = checkpoint.get("wandb_run_id")
        done = checkpoint.get("gansuite_step")
        if isinstance(done, int) and cfg.trainer.max_steps < done:
            raise ConfigError(f"trainer.max_steps={cfg.trainer.max_steps} is below the step {ckpt_path} is at "
                              f"({done}); resume with trainer.max_steps above {done} to train further.")
        remove_stale_temporaries(ckpt_path.parent)  # the killed run's folder, which this run does not write to
        log.info(f"resuming from {ckpt_path} at step {checkpoint.get('gansuite_step', '?')}")
        del checkpoint

    # A node without _target_ is a preset's tweak of a callback that callbacks=none turned off.
    callbacks = [build_node(f"callbacks.{name}", node) for name, node in (cfg.get("callbacks") or {}).items()
                 if node and "_target_" in node]
    evaluator = make_evaluator(cfg, datamodule)
    if evaluator is not None:
        from gansuite.metrics.eval_callback import EvalCallback

        evaluator.prepare(module)  # a model the metrics cannot measure fails now, not at the first evaluation
        callbacks.append(EvalCallback(evaluator, every_n_steps=cfg.eval.every_n_steps, keep_best=cfg.eval.keep_best))
    callbacks += [
        StepCheckpoint(
            dirpath=output_dir / "checkpoints",
            every=cfg.trainer.checkpoint_every,
            optimizer_steps_per_step=module.optimizer_steps_per_step,
        ),
        RunInfo(config, composed_from),
    ]
    module.history_dir = output_dir  # history.csv beside train.log
    logger = _make_logger(cfg, resume_id, commit)
    strategy, plugins = _strategy_and_precision(cfg)
    _speed_options(cfg, module)
    try:
        trainer = L.Trainer(
            # trainer.max_steps counts gansuite steps; Lightning counts every optimizer step.
            max_steps=cfg.trainer.max_steps * module.optimizer_steps_per_step,
            max_epochs=-1,
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            num_nodes=cfg.trainer.get("num_nodes", 1),
            strategy=strategy,
            precision=None if any(isinstance(p, PerOptimizerMixedPrecision) for p in plugins)
            else cfg.trainer.precision,
            # gansuite's samplers give each rank its share of one stream (data.base.InfiniteSampler).
            use_distributed_sampler=False,
            deterministic=cfg.trainer.deterministic,
            # Lightning counts batches here; a gansuite step is n_critic batches.
            log_every_n_steps=cfg.trainer.log_every_n_steps * module.n_critic,
            logger=logger if logger is not None else False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO(), *plugins],
            default_root_dir=output_dir,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_model_summary=False,
        )
    except (ValueError, TypeError, RuntimeError) as err:  # Lightning's MisconfigurationException is a ValueError
        message = str(err).strip().splitlines()[0].rstrip(".")
        raise ConfigError(f"trainer: {message}; fix trainer.accelerator, devices or precision "
                          "(trainer=cpu runs anywhere).") from None
    try:
        with _stop_on_signals(trainer) as stop:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        _finish(logger)
    log.info(f"step {module.step} of {cfg.trainer.max_steps} ({trainer.global_step} optimizer steps); outputs in {output_dir}")
    if stop["requested"]:
        log.warning(f"stopped at step {module.step}; checkpoints/last.ckpt holds it: resume with resume={output_dir}")
    return {"output_dir": output_dir, "step": module.step, "trainer": trainer, "module": module,
            "stopped": stop["requested"], "signal": stop["signal"]}


def _finish(logger) -> None:
    """Close the W&B run now, so a resume or the next run in this process can open it again."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and logger._experiment is not None:
        logger.experiment.finish()


# Signals that stop a run as the first Ctrl-C does: SIGTERM is what SLURM and Kubernetes send before they
# stop a job, SIGUSR1 what SLURM sends ahead of its time limit with `--signal=USR1@<seconds>`.
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None)


@contextmanager
def _stop_on_signals(trainer: L.Trainer):
    """First Ctrl-C, SIGTERM or SIGUSR1: finish the batch in flight, save last.ckpt and stop cleanly.

    A second Ctrl-C aborts. ``stop["signal"]`` is the first signal received (the exit status is 128 plus it).
    """
    stop: dict[str, Any] = {"requested": False, "signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum, frame):
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, previous[signal.SIGINT] or signal.SIG_DFL)
        elif trainer.world_size > 1:
            # Several ranks: Lightning's own handler stops them all at the same batch (a flag set here would reach
            # each rank at its own batch and leave the others waiting in an all-reduce).
            log.warning(f"{signal.Signals(signum).name}: stopping every rank (Lightning's handling, without last.ckpt)")
            return
        stop["requested"] = True
        stop["signal"] = stop["signal"] or signum
        trainer.should_stop = True
        # Lightning's own SIGTERM handler runs before this one (it keeps handlers it finds) and would end the
        # run after this batch with exit status 0 and no last.ckpt: the stop above saves it instead.
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None:
            connector.received_sigterm = False
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        again = " (press again to abort)" if signum == signal.SIGINT else ""
        log.warning(f"{name}: stopping after this batch and saving checkpoints/last.ckpt{again}")

    previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
