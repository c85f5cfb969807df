"""From a composed config to the data module and the GAN module, checked against each other.

Every failed ``instantiate`` becomes one sentence naming its config key. The model is checked against
the data (labels, image pairs, captions, shapes, ``data.batch_size``) and run once on two samples, so a bad
option fails before training starts. A text-to-image model's ``text_encoder`` is built here and handed to the
data (what its batches carry) and to the networks (the vocabulary's size, or the fixed embeddings' size).
Also ``model.init_generator``: G's weights from another run.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gansuite.config.validate import validate
from gansuite.errors import ConfigError
from gansuite.training.checkpointing import read_checkpoint, resolve_resume

log = logging.getLogger("gansuite")


def build_node(key: str, node: Any, objects: dict[str, Any] | None = None, **kwargs: Any) -> Any:
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


_PAIR_DATA = {"paired": "data=sr_mnist, sr_photos, sr_folder, edges2digits or paired_folder",
              "unpaired": "data=digit_styles or unpaired_folders"}


def build(cfg: DictConfig, training: bool = True) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The data module and the GAN module a config describes, checked against each other.

    ``training``: also check the batch against the training data, which loads (or lists) it; gansuite-sample
    and gansuite-eval, which train nothing, skip that.
    """
    validate(cfg)
    datamodule = build_node("data", cfg.data)
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
    captioned = hasattr(datamodule, "vocab")
    if cfg.model.get("captions") and not captioned:
        raise ConfigError(f"model={cfg.model.name} draws images for captions but data={datamodule.name} has none; "
                          "pick captioned data (data=captioned_digits or captioned_folder).")
    # A text-to-image model's captions: the data serves what the text encoder reads (before it loads).
    text = _text_encoder(cfg, datamodule) if cfg.model.get("captions") else None
    size = datamodule.train_size() if training and hasattr(datamodule, "train_size") else None
    if size is not None and datamodule.batch_size > size:
        # The endless sampler would repeat samples to fill the batch, and a huge one exhausts the memory.
        raise ConfigError(f"data.batch_size={datamodule.batch_size} is larger than the {size} training samples of "
                          f"data={datamodule.name}; set data.batch_size to at most {size}.")
    # A conditional family's networks and module size their label embeddings and heads from the data.
    classes = {"num_classes": datamodule.num_classes} if cfg.model.get("conditional") else {}
    if have:
        classes["source_shape"] = tuple(datamodule.source_shape)
    g_text, d_text = _text_options(text, datamodule) if cfg.model.get("captions") else ({}, {})
    generator = build_node("model.generator", cfg.model.generator, shape=shape, **classes, **g_text)
    discriminator = None
    if cfg.model.discriminator is not None:
        # A text-to-image D holds the caption encoder, sized by the data's vocabulary (or the fixed embeddings').
        discriminator = build_node("model.discriminator", cfg.model.discriminator, shape=shape, **classes, **d_text)
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
    regularizer = build_node("loss.regularizer.fn", cfg.loss.regularizer.fn) if cfg.loss.regularizer.fn else None
    augment = _augment(cfg, shape, discriminator)
    parts = dict(
        generator=generator,
        discriminator=discriminator,
        g_optimizer=build_node("model.g_optimizer", cfg.model.g_optimizer),
        d_optimizer=build_node("model.d_optimizer", cfg.model.d_optimizer) if cfg.model.d_optimizer else None,
        g_scheduler=build_node("model.g_scheduler", cfg.model.g_scheduler) if cfg.model.g_scheduler else None,
        d_scheduler=build_node("model.d_scheduler", cfg.model.d_scheduler) if cfg.model.d_scheduler else None,
        objective=build_node("loss.objective", cfg.loss.objective),
        regularizer=regularizer,
        reg_every=cfg.loss.regularizer.every,
        n_critic=cfg.loss.n_critic,
        **classes,
    )
    if augment is not None:  # not passed otherwise: a family built elsewhere need not know the argument
        parts["augment"] = augment
    if cfg.model.get("captions"):
        parts.update(num_classes=datamodule.num_classes, max_words=datamodule.max_words,
                     vocabulary=sorted(datamodule.vocab, key=datamodule.vocab.get), text_encoder=text)
    module = build_node("model.module", cfg.model.module, objects=parts)
    _dry_run(cfg, module, shape)
    return datamodule, module


def _augment(cfg: DictConfig, shape: tuple[int, ...], discriminator: Any) -> Any:
    """The ``augment`` group built, after checking that the model's D sees images it can transform."""
    node = cfg.get("augment")
    if node is None or node.get("fn") is None:
        return None
    name = node.get("name", "?")
    module_class = _target_class(cfg.model.module)
    if discriminator is None or len(shape) != 3 or not getattr(module_class, "augmentable", True):
        what = ("has no discriminator" if discriminator is None else
                f"trains on {tuple(shape)} points, not images" if len(shape) != 3 else
                "does not pass D images of the data it could transform")
        raise ConfigError(f"augment={name}: model={cfg.model.name} {what}; use augment=none, or a model that makes "
                          "images from noise, labels or captions (dcgan, sngan, biggan, stylegan2, ...).")
    return build_node("augment.fn", node.fn)


def _target_class(node: Any) -> Any:
    """The class a node's ``_target_`` names (gansuite's own, checked by the allow-list before), or None."""
    from hydra.utils import get_class

    try:
        return get_class(node._target_)
    except Exception:
        return None


def _text_encoder(cfg: DictConfig, datamodule: L.LightningDataModule) -> Any:
    """The ``text_encoder`` group built and handed to the captioned data; None for a config stored before the group
    existed (its D holds the word-GRU options, and the data serves word ids)."""
    node = cfg.get("text_encoder")
    stored_before = any(key in (cfg.model.discriminator or {}) for key in ("word_dim", "hidden", "word_dropout"))
    if node is None or stored_before:
        return None
    encoder = build_node("text_encoder", node)
    datamodule.text_encoder = encoder
    return encoder


def _text_options(text: Any, datamodule: L.LightningDataModule) -> tuple[dict[str, Any], dict[str, Any]]:
    """What G and D take from the text side: with fixed embeddings their size (``text_dim``) and no vocabulary,
    else the vocabulary's size and the word-GRU encoder's options."""
    if getattr(text, "fixed", False):
        options = text.network_options()
        return {"text_dim": options["text_dim"]}, options
    return {}, {"vocab_size": len(datamodule.vocab), **(text.network_options() if text is not None else {})}


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
    regularizer_state = ({k: v.clone() for k, v in module.regularizer.state_dict().items()}
                         if isinstance(module.regularizer, torch.nn.Module) else None)
    try:
        with torch.no_grad():
            scores = module.score(made, inputs)
        for key, check in (
            ("loss.objective", lambda: (module.objective.d_loss(scores, scores), module.objective.generator(scores, scores))),
            ("loss.regularizer.fn",
             lambda: module.regularizer and module.regularizer(lambda x: module.score(x, inputs), made, made)),
        ):
            try:
                check()
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{key}: {err}; fix the options of {key} (see `gansuite-train --cfg job`).") from None
    finally:
        module.discriminator.train()
        if isinstance(module.regularizer, torch.nn.Module):  # a regularizer with running statistics (LeCam)
            module.regularizer.load_state_dict(regularizer_state)
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
