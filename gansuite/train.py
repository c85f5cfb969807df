"""``gansuite-train``: compose a run from ``conf/``, build everything, train.

This file is the edge: the only place that reads the config and calls
``hydra.utils.instantiate``. Everything below it receives built objects.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gansuite.checkpointing import (
    AtomicCheckpointIO,
    RunInfo,
    StepCheckpoint,
    check_compatible,
    disk_full,
    read_checkpoint,
    remove_stale_temporaries,
    resolve_resume,
)
from gansuite.errors import ConfigError, DiskFullError, NonFiniteLossError
from gansuite.keys import check_added_keys, expand_home, hydra_sentence
from gansuite.logging import HISTORY, save_code_state
from gansuite.precision import PerOptimizerMixedPrecision
from gansuite.resuming import resume_config
from gansuite.rundir import auto_resume

# Lightning warnings that do not apply to gansuite's manual schedule: checkpoints are taken after
# a whole step by design, and a resumed run writes into its own new run directory.
warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*is deprecated")
# The EMA generator is kept in eval mode on purpose.
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")



class _QuietLightning(logging.Filter):
    """Drops Lightning's lines that say nothing to a gansuite user: an advertisement, and "max_steps=N reached"
    with N in optimizer steps (gansuite prints "step S of S" in its own steps instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("💡 Tip:") or message.startswith("`Trainer.fit` stopped: `max_steps="))


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_QuietLightning())

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("gansuite")


def _build(key: str, node: Any, objects: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """instantiate(node), reporting a failure as one sentence that names the config key.

    ``objects`` are built Python objects passed to the constructor as they are. (Passed to
    ``instantiate`` as kwargs, a dataclass such as ``losses.Objective`` would be turned into a
    DictConfig, whose callables then go through Hydra on every call.)
    """
    try:
        if objects is not None:
            return instantiate(node, _partial_=True, **kwargs)(**objects)
        return instantiate(node, **kwargs)
    except ConfigError:
        raise
    except Exception as err:
        cause = err
        while cause.__cause__ is not None:  # Hydra wraps the constructor's own error
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(f"{key}: {message.rstrip('.')}; fix the value of {key} (see `gansuite-train --cfg job`).") from None


def _positive(cfg: DictConfig, key: str, integer: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{key} must be {kind} (got {value!r}); set {key}=<{kind.split()[-1]}> on the command line.")


def validate(cfg: DictConfig) -> None:
    """Value checks that Hydra's composition cannot make, each failing with one sentence."""
    for key in ("model.g_optimizer.lr", "model.d_optimizer.lr", "model.module.grad_clip"):
        _positive(cfg, key)
    for key in ("trainer.max_steps", "trainer.checkpoint_every", "trainer.log_every_n_steps", "data.batch_size",
                "trainer.threads",
                "loss.n_critic", "loss.regularizer.every", "model.latent_dim"):
        _positive(cfg, key, integer=True)
    decay = OmegaConf.select(cfg, "model.module.ema_decay")
    if decay is not None and not (isinstance(decay, (int, float)) and 0.0 <= decay < 1.0):
        raise ConfigError(f"model.module.ema_decay must be in [0, 1) (got {decay!r}); use 0.999, or null for no EMA.")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed must be an integer (got {cfg.seed!r}); set seed=0 or another integer.")
    if not isinstance(cfg.trainer.deterministic, bool):
        raise ConfigError(f"trainer.deterministic must be true or false (got {cfg.trainer.deterministic!r}).")
    for net in ("g", "d"):
        key = f"model.{net}_optimizer.betas"
        betas = OmegaConf.select(cfg, key)
        if betas is not None and not (
            isinstance(betas, ListConfig) and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ConfigError(f"{key} must be two numbers in [0, 1) (got {_plain(betas)}); set {key}=[0.5,0.999].")
    for node in ("model.generator", "model.discriminator"):
        for name, value in (OmegaConf.select(cfg, node) or {}).items():
            if name.endswith(_SIZE_OPTIONS) and value is not None and not _is_positive_int(value):
                raise ConfigError(f"{node}.{name} must be a positive integer (got {value!r}); "
                                  f"set {node}.{name} to a positive integer.")
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but torch sees no CUDA GPU on this machine; "
                          "run with trainer=cpu here, or on a machine with a GPU and a CUDA build of torch.")


# Network options that count something (channels, blocks, latent sizes): zero would build empty layers.
_SIZE_OPTIONS = ("width", "latent_dim", "blocks", "pieces", "depth", "channels", "levels")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


_PAIR_DATA = {"paired": "data=sr_mnist, sr_photos, sr_folder, edges2digits or paired_folder",
              "unpaired": "data=digit_styles or unpaired_folders"}


def build(cfg: DictConfig, training: bool = True) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The data module and the GAN module a config describes, checked against each other.

    ``training``: also check the batch against the training data, which loads (or lists) it; gansuite-sample
    and gansuite-eval, which train nothing, skip that.
    """
    validate(cfg)
    datamodule = _build("data", cfg.data)
    if hasattr(datamodule, "check"):
        datamodule.check()
    if cfg.model.get("conditional") and datamodule.num_classes is None:
        raise ConfigError(
            f"model={cfg.model.name} is class-conditional but the data has no labels; "
            "pick labelled data (data=mnist_offline, mnist, cifar10) or an unconditional model."
        )
    shape = tuple(datamodule.shape)
    # Image-to-image families need (source, target) data of their kind, and size their nets from both.
    want, have = cfg.model.get("data_kind"), getattr(datamodule, "kind", None)
    if want != have:
        if want is None:
            raise ConfigError(f"model={cfg.model.name} makes images from noise but data={datamodule.name} holds "
                              f"{have} image pairs; pick an image-to-image model (srgan, pix2pix, cyclegan).")
        raise ConfigError(f"model={cfg.model.name} needs {want} image pairs but data={datamodule.name} "
                          f"{'holds ' + have + ' pairs' if have else 'is not image pairs'}; "
                          f"pick {want} data ({_PAIR_DATA[want]}).")
    size = datamodule.train_size() if training and hasattr(datamodule, "train_size") else None
    if size is not None and datamodule.batch_size > size:
        # The endless sampler would repeat samples to fill the batch, and a huge one exhausts the memory.
        raise ConfigError(f"data.batch_size={datamodule.batch_size} is larger than the {size} training samples of "
                          f"data={datamodule.name}; set data.batch_size to at most {size}.")
    # A conditional family's networks and module size their label embeddings and heads from the data.
    classes = {"num_classes": datamodule.num_classes} if cfg.model.get("conditional") else {}
    if have:
        classes["source_shape"] = tuple(datamodule.source_shape)
    generator = _build("model.generator", cfg.model.generator, shape=shape, **classes)
    discriminator = None
    if cfg.model.discriminator is not None:
        discriminator = _build("model.discriminator", cfg.model.discriminator, shape=shape, **classes)
    for key, net in (("model.generator", generator), ("model.discriminator", discriminator)):
        empty = next((name for name, p in (net.named_parameters() if net is not None else ()) if p.numel() == 0), None)
        if empty is not None:
            raise ConfigError(f"{key} has a layer without weights ({empty}): one of its size options is 0; set the "
                              f"options of {key} (see `gansuite-train --cfg job`) to positive sizes.")
    if have:
        classes = {"examples": datamodule.examples()}
    pack = getattr(discriminator, "pack", 1)
    if datamodule.batch_size % pack:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} does not divide into groups of model.discriminator.pack={pack}; "
            f"set data.batch_size to a multiple of {pack}."
        )
    regularizer = _build("loss.regularizer.fn", cfg.loss.regularizer.fn) if cfg.loss.regularizer.fn else None
    parts = dict(
        generator=generator,
        discriminator=discriminator,
        g_optimizer=_build("model.g_optimizer", cfg.model.g_optimizer),
        d_optimizer=_build("model.d_optimizer", cfg.model.d_optimizer) if cfg.model.d_optimizer else None,
        g_scheduler=_build("model.g_scheduler", cfg.model.g_scheduler) if cfg.model.g_scheduler else None,
        d_scheduler=_build("model.d_scheduler", cfg.model.d_scheduler) if cfg.model.d_scheduler else None,
        objective=_build("loss.objective", cfg.loss.objective),
        regularizer=regularizer,
        reg_every=cfg.loss.regularizer.every,
        n_critic=cfg.loss.n_critic,
        **classes,
    )
    module = _build("model.module", cfg.model.module, objects=parts)
    _dry_run(cfg, module, shape)
    return datamodule, module


def _dry_run(cfg: DictConfig, module: L.LightningModule, shape: tuple[int, ...]) -> None:
    """Run every configured piece once on two samples, so a bad option fails now and names its key."""
    n = 2 * getattr(module.discriminator, "pack", 1)  # a packing discriminator takes whole groups
    inputs = module.make_inputs(n, torch.Generator().manual_seed(0))
    with torch.no_grad():
        made = module.sample(inputs, ema=False)
    if tuple(made.shape[1:]) != shape:
        raise ConfigError(
            f"model={cfg.model.name} makes samples of shape {tuple(made.shape[1:])} but the data gives {shape}; "
            "set data.resolution (and model.generator options) so that they match."
        )
    if module.discriminator is None:
        _check_optimizers(module)
        return
    module.discriminator.eval()
    try:
        with torch.no_grad():
            scores = module.score(made, inputs)
        for key, check in (
            ("loss.objective", lambda: (module.objective.d_loss(scores, scores), module.objective.g_loss(scores))),
            ("loss.regularizer.fn",
             lambda: module.regularizer and module.regularizer(lambda x: module.score(x, inputs), made, made)),
        ):
            try:
                check()
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{key}: {err}; fix the options of {key} (see `gansuite-train --cfg job`).") from None
    finally:
        module.discriminator.train()
    _check_optimizers(module)


def _check_optimizers(module: L.LightningModule) -> None:
    nets = (("g", module.g_optimizer, module.g_scheduler), ("d", module.d_optimizer, module.d_scheduler))
    for net, make_opt, make_sched in nets[: 1 if module.discriminator is None else 2]:
        key = f"model.{net}_optimizer"
        try:
            optimizer = make_opt(getattr(module, "generator" if net == "g" else "discriminator").parameters())
            key = f"model.{net}_scheduler"
            scheduler = make_sched(optimizer) if make_sched else None
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{key}: {err}; fix the value of {key}.") from None
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ConfigError(f"{key}: ReduceLROnPlateau needs a metric that GAN training does not have; "
                              "use a step-based scheduler such as LinearLR or ExponentialLR.")


def init_generator(module: L.LightningModule, path: str) -> None:
    """Start G (and its EMA copy) from another run's generator, e.g. SRGAN from SRResNet; nothing else is taken."""
    ckpt = resolve_resume(path, key="model.init_generator")
    state = read_checkpoint(ckpt, key="model.init_generator")["state_dict"]
    for name in ("generator", "generator_ema"):
        net = getattr(module, name)
        if net is None:
            continue
        prefix = f"{name}." if any(k.startswith(f"{name}.") for k in state) else "generator."
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            net.load_state_dict(weights)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0].rstrip(":. ")
            raise ConfigError(f"model.init_generator: the generator in {ckpt} does not fit this model's ({first}); "
                              "use the same model.generator options as that run.") from None
    log.info(f"generator initialised from {ckpt}")


EVAL_OPTIONS = ("extractor", "metrics", "num_samples", "num_real", "reference_split", "batch_size", "seed",
                "inception_weights", "download", "cache_dir", "precision")
# Options added later, with the value a config written before them meant (a checkpoint's stored config).
EVAL_DEFAULTS = {"precision": "exact"}


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
    from gansuite.evaluation import make_evaluator as _make

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
    strategy = _build("trainer.strategy", node) if isinstance(node, DictConfig) and "_target_" in node else node
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
    from gansuite.logging import run_metadata, sweep_group, wandb_mode

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
    logger = _build("logger", cfg.logger, **kwargs)
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
    callbacks = [_build(f"callbacks.{name}", node) for name, node in (cfg.get("callbacks") or {}).items()
                 if node and "_target_" in node]
    evaluator = make_evaluator(cfg, datamodule)
    if evaluator is not None:
        from gansuite.evaluation import EvalCallback

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
            # gansuite's samplers give each rank its share of one stream (data.InfiniteSampler).
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


def main() -> Any:
    """``gansuite-train``: Hydra's command line, with every bad input (Hydra's own errors included) reported
    as one sentence and exit status 2."""
    sys.argv[1:] = expand_home(sys.argv[1:])
    import hydra._internal.utils as hydra_utils

    # Hydra reports its errors (and the task's uncaught ones) through run_and_report, which prints several
    # lines and exits 1. Its composition errors go through one_sentence first; everything else as before.
    report = hydra_utils.run_and_report
    hydra_utils.run_and_report = lambda func: report(lambda: _one_sentence(func))
    try:
        return _hydra_main()
    finally:
        hydra_utils.run_and_report = report


def _one_sentence(func: Any) -> Any:
    try:
        return func()
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(err, ConfigError):
            sentence = str(err)
        elif isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            sentence = (f"{err.filename or 'a file'}: {err.strerror}; point hydra.run.dir (outputs), data.root (data) "
                        "or paths.cache_dir (caches) at a folder this user can write to.")
        else:
            sentence = hydra_sentence(err)
        if sentence is None:
            raise
        print(f"gansuite-train: error: {sentence}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    """Train one run; return what a sweeper minimises (gansuite.sweeps.objective: the best FID, inf if none)."""
    from hydra.core.hydra_config import HydraConfig

    from gansuite.sweeps import in_multirun, objective

    try:
        overrides = list(HydraConfig.get().overrides.task)
        check_added_keys(cfg, overrides)
        composed_from = {"config_name": HydraConfig.get().job.config_name, "overrides": overrides}
        if cfg.get("resume"):
            cfg, composed_from = resume_config(cfg, overrides)
        result = train(cfg, composed_from=composed_from)
    except ConfigError as err:
        _fail(f"error: {err}", 2)
    except DiskFullError as err:
        _fail(f"stopped: {err.strerror}.", 1)
    except OSError as err:
        # The disk can fill outside a checkpoint save too (a grid, a log), or again while Lightning closes the
        # loggers after a DiskFullError.
        if not disk_full(err):
            HISTORY.exception("failed")
            raise
        _fail(f"stopped: the disk is full (no space left on device) at {err.filename or 'a write'}; the checkpoints "
              f"already written are kept: free some space, then resume with resume={cfg.paths.output_dir}.", 1)
    except OmegaConfBaseException as err:  # a key the code reads that this config lacks (one written by hand)
        _fail(f"error: {hydra_sentence(err)}", 2)
    except NonFiniteLossError as err:
        _fail(f"stopped: {err}", None if in_multirun() else 1)
        return objective(None)  # one diverged trial must not end a sweep (SystemExit would): it scores the worst
    except Exception:
        HISTORY.exception("failed")  # a bug's traceback in train.log too, not only on the terminal
        raise
    if result["stopped"]:
        # The shell's code for "ended by this signal" (130 for Ctrl-C, 143 for SIGTERM); the run itself was saved.
        sys.exit(128 + int(result["signal"] or signal.SIGINT))
    return objective(result)


def _fail(message: str, status: int | None) -> None:
    """Print ``message`` as gansuite-train's one line, write it to train.log, and exit with ``status`` (if any)."""
    print(f"gansuite-train: {message}", file=sys.stderr)
    HISTORY.error(message)
    if status is not None:
        sys.exit(status)


if __name__ == "__main__":
    main()
