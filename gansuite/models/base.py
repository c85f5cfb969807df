"""The adversarial schedule shared by every GAN family, and the unconditional z -> x GAN.

What counts as a step: one gansuite **step** is one generator update. Each
training batch drives one discriminator update, and every ``n_critic``-th batch
also drives a generator update, so a step is ``n_critic`` batches and
``n_critic + 1`` optimizer steps. Lightning's ``global_step`` counts optimizer
steps; ``gansuite-train`` multiplies ``trainer.max_steps`` by ``n_critic + 1``
so that ``trainer.max_steps`` in the config counts gansuite steps.

A family subclasses :class:`AdversarialModule` and says what one step computes:

- ``generate(batch)``: the generator's outputs for this batch (any structure);
- ``discriminator_loss(batch, fake, regularize)``: terms for D's update;
- ``generator_loss(batch, fake)``: terms for G's update;
- ``make_inputs(n, generator)`` and ``sample(inputs, ema)`` for grids and metrics.

Unconditional (z -> x), class-conditional ((z, y) -> x), image-conditioned
(x_a -> x_b) and two-generator cycle models differ only in those methods; the
base owns the optimizers, the schedule, regularizer cadence, clipping, EMA,
schedulers, the NaN guard and what goes into a checkpoint for exact resume.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from gansuite.errors import ConfigError, NonFiniteLossError
from gansuite.logging import record, run_folder
from gansuite.losses import Objective

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
_NAN_FIX = ("model.module.grad_clip=1.0, or start again with lower model.g_optimizer.lr and model.d_optimizer.lr "
            "(a resumed run keeps the learning rates stored in its checkpoint).")
Regularizer = Callable[[Callable[[Tensor], Tensor], Tensor, Tensor], Tensor]


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``ema``'s parameters towards ``model``'s; copy buffers (batch-norm statistics) as they are.

    Not ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``: it either leaves buffers at
    their initial values (``use_buffers=False``) or averages them (``True``), where the GAN papers' EMA
    copies them; its decay is fixed, not ramped by the step; and its wrapper renames every EMA weight in
    the checkpoints (``generator_ema.module.*``), so no existing checkpoint would load. The update itself
    is the same single fused lerp it does.
    """
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


class AdversarialModule(L.LightningModule):
    """Owns the adversarial schedule; subclasses define the losses of one step.

    Args:
        generator, discriminator: built networks (a family with two of each passes ``nn.ModuleDict``s).
            ``discriminator=None`` trains G alone on its own loss (SRResNet, the first stage of
            SRGAN): every batch is one G update and no D optimizer is made.
        g_optimizer, d_optimizer: partials that take parameters and return an optimizer.
        objective: the adversarial loss pair (``gansuite.losses.Objective``).
        regularizer: D regularizer ``(critic, real, fake) -> penalty``, or None.
        reg_every: run the regularizer on every k-th D update, scaled by k (lazy regularization).
        n_critic: D updates per G update.
        ema_decay: decay of the generator's exponential moving average, or None for no EMA.
        grad_clip: clip each network's gradient norm to this value before its update.
        g_scheduler, d_scheduler: optional partials ``optimizer -> LR scheduler``; both step once per step.
        loss_limit: training stops, as for a NaN, when a loss summed between two checks passes this magnitude:
            no GAN loss of the suite gets near 1e10 unless training diverged, and such a run would otherwise
            go on to its last step and exit 0.
    """

    def __init__(
        self,
        *,
        generator: nn.Module,
        discriminator: nn.Module | None,
        g_optimizer: OptimizerFactory,
        d_optimizer: OptimizerFactory,
        objective: Objective,
        regularizer: Regularizer | None = None,
        reg_every: int = 1,
        n_critic: int = 1,
        ema_decay: float | None = 0.999,
        grad_clip: float | None = None,
        g_scheduler: SchedulerFactory | None = None,
        d_scheduler: SchedulerFactory | None = None,
        loss_limit: float = 1e10,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.generator_ema = None
        if ema_decay is not None:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False).eval()
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.g_scheduler = g_scheduler
        self.d_scheduler = d_scheduler
        self.objective = objective
        self.regularizer = regularizer
        self.reg_every = reg_every
        self.n_critic = n_critic
        self.ema_decay = ema_decay
        self.grad_clip = grad_clip
        self.loss_limit = float(loss_limit)
        self._rng_to_restore: dict[str, Any] | None = None
        self._resumed_at = (0, 0)  # (batches, samples) consumed when this run resumed
        self._log_now = True  # whether this batch's metrics reach the loggers (set per batch)
        # The NaN guard without a host sync per update: each optimized loss is added on the device into
        # its own sum, which is finite exactly when every loss since the last check was (up to overflow,
        # which needs losses near 1e38 anyway). The sums are read on logged batches and before every
        # checkpoint, together with the logged values: one transfer to the host.
        self._loss_sums: dict[str, Tensor] = {}
        self._unchecked_from = 0  # the first step whose losses have not been checked yet
        self._pending: dict[str, Tensor] = {}  # this batch's values for the loggers (logged batches only)
        self.progress_metrics: dict[str, float] = {}  # the latest logged losses, as floats, for the progress bar

    # ----------------------------------------------------------------- counters
    @property
    def optimizer_steps_per_step(self) -> int:
        return self.n_critic + 1 if self.discriminator is not None else 1

    @property
    def step(self) -> int:
        """Generator updates done so far: what ``trainer.max_steps`` counts in gansuite."""
        return self.trainer.global_step // self.optimizer_steps_per_step if self._trainer else 0

    @property
    def batches_consumed(self) -> int:
        """Training batches used so far: where the data stream resumes."""
        return self._batches_at(self.trainer.global_step) if self._trainer else 0

    @property
    def samples_consumed(self) -> int:
        """Training samples used so far over all ranks: where the data stream resumes, on any number of devices."""
        batches, samples = self._resumed_at
        world = self.trainer.world_size if self._trainer else 1
        return samples + (self.batches_consumed - batches) * self._batch_size() * world

    def _batch_size(self) -> int:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        return getattr(datamodule, "batch_size", 0) or 0

    def _batches_at(self, global_step: int) -> int:
        if self.discriminator is None:  # one batch per G update
            return global_step
        # One batch per D update, and every optimizer step that is not a G update is a D update.
        return global_step - global_step // self.optimizer_steps_per_step

    def total_batches(self, trainer: L.Trainer) -> int | None:
        """Batches a run of ``trainer.max_steps`` optimizer steps takes (for the progress bar)."""
        if trainer.max_steps is None or trainer.max_steps < 0:
            return None
        if self.discriminator is None:
            return trainer.max_steps
        return trainer.max_steps // self.optimizer_steps_per_step * self.n_critic

    # ------------------------------------------------------------ family hooks
    def generate(self, batch: Any) -> Any:
        raise NotImplementedError

    def discriminator_loss(self, batch: Any, fake: Any, regularize: bool) -> dict[str, Tensor]:
        """Terms of D's update: ``loss`` is minimised, ``reg`` (when ``regularize``) is added times reg_every."""
        raise NotImplementedError

    def generator_loss(self, batch: Any, fake: Any) -> dict[str, Tensor]:
        """Terms of G's update: ``loss`` is minimised, the rest are logged."""
        raise NotImplementedError

    def make_inputs(self, n: int, generator: torch.Generator) -> Any:
        """Generator inputs for n samples drawn from ``generator`` (a seeded CPU generator)."""
        raise NotImplementedError

    def forward(self, inputs: Any) -> Tensor:
        return self.run_generator(self.generator, inputs)

    def run_generator(self, net: nn.Module, inputs: Any) -> Tensor:
        """``net`` (the generator or its EMA copy) applied to inputs from :meth:`make_inputs`."""
        return net(inputs)

    def score(self, samples: Tensor, inputs: Any) -> Tensor:
        """D's raw scores for ``samples`` made from ``inputs`` (a conditional D also sees the labels)."""
        return self.discriminator(samples)

    @torch.no_grad()
    def sample(self, inputs: Any, ema: bool = True) -> Tensor:
        """Samples in data space from the EMA generator (or the raw one), in eval mode."""
        net = self.generator_ema if ema and self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return self.run_generator(net, inputs)
        finally:
            net.train(was_training)

    # ---------------------------------------------------------------- schedule
    def configure_optimizers(self):
        opt_g = self.g_optimizer(self.generator.parameters())
        if self.discriminator is None:
            return [opt_g], [self.g_scheduler(opt_g)] if self.g_scheduler else []
        opt_d = self.d_optimizer(self.discriminator.parameters())
        schedulers = [make(opt) for make, opt in ((self.g_scheduler, opt_g), (self.d_scheduler, opt_d)) if make]
        return [opt_g, opt_d], schedulers

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self._log_now = self._logs_this_batch()
        step = self.step  # the step this batch belongs to
        if self.discriminator is None:
            self._generator_step(self.optimizers(), batch, self.generate(batch))
        else:
            self._adversarial_batch(batch)
        if self._log_now:
            self._check_and_log(step)

    def _adversarial_batch(self, batch: Any) -> None:
        opt_g, opt_d = self.optimizers()
        d_updates = self.batches_consumed  # D updates before this batch
        g_update_now = (d_updates + 1) % self.n_critic == 0

        # Generate once; the G update reuses these samples, so keep the graph only when it comes.
        with torch.set_grad_enabled(g_update_now):
            fake = self.generate(batch)

        # --- discriminator update
        self.toggle_optimizer(opt_d)
        terms = self.discriminator_loss(batch, fake, regularize=self.regularizer is not None
                                        and d_updates % self.reg_every == 0)
        loss = terms["loss"] + self.reg_every * terms["reg"] if "reg" in terms else terms["loss"]
        self._update(opt_d, loss, "train/d_loss")
        if self.objective.weight_clip is not None:
            with torch.no_grad():
                for p in self.discriminator.parameters():
                    p.clamp_(-self.objective.weight_clip, self.objective.weight_clip)
        self.untoggle_optimizer(opt_d)
        self._log_terms("d", terms)

        if g_update_now:
            self._generator_step(opt_g, batch, fake)

    def _generator_step(self, opt_g, batch: Any, fake: Any) -> None:
        self.toggle_optimizer(opt_g)
        terms = self.generator_loss(batch, fake)
        self._update(opt_g, terms["loss"], "train/g_loss")
        self.untoggle_optimizer(opt_g)
        self._log_terms("g", terms)

        if self.generator_ema is not None:
            # Ramp the decay up so short runs are not dominated by the random initial weights.
            step = self.step
            decay = min(self.ema_decay, (1 + step) / (10 + step))
            ema_update(self.generator_ema, self.generator, decay)
        schedulers = self.lr_schedulers() or []  # Lightning returns None, one scheduler, or a list
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def _d_terms(self, critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                 regularize: bool) -> dict[str, Tensor]:
        """D's loss on ``critic``'s scores of real and (detached) fake samples, their means, and the
        regularizer on the same critic when ``regularize``: the D step every single-D family shares."""
        real_out, fake_out = critic(real), critic(fake)
        terms = {
            "loss": self.objective.d_loss(real_out, fake_out),
            "real_score": real_out.mean(),
            "fake_score": fake_out.mean(),
        }
        if regularize:
            terms["reg"] = self.regularizer(critic, real, fake)
        return terms

    def _logs_this_batch(self) -> bool:
        """Whether this batch's values go to the loggers (every ``log_every_n_steps`` batches, as Lightning counts
        them), or it is the last batch. Only these batches read values on the host (and check for NaN); the
        progress bar's losses change when the logs do."""
        trainer = self._trainer
        loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
        if loop is None:
            return True
        # Lightning's own rule (should_update_logs) without its "or should_stop": a Ctrl-C reaches each rank at
        # its own moment, and the NaN check on logged batches is a collective that every rank must join.
        every = trainer.log_every_n_steps
        total = self.total_batches(trainer)
        last = total is not None and self.batches_consumed + 1 >= total
        return (every > 0 and (loop._batches_that_stepped + 1) % every == 0) or last

    def _log_terms(self, net: str, terms: dict[str, Tensor]) -> None:
        # Keys are train/d_loss, train/d_reg, train/g_loss, ...; they stay on the device until _check_and_log.
        if self._log_now:
            for name, value in terms.items():
                self._pending[f"train/{net}_{name}"] = value.detach()

    def _host_values(self, extra: list[Tensor] = ()) -> tuple[dict[str, float], dict[str, float], list[float]]:
        """The pending logged values, the loss sums and ``extra`` (0-dim tensors) read in one transfer."""
        logged, sums = list(self._pending.items()), list(self._loss_sums.items())
        tensors = [v.reshape(()).float() for _, v in logged] + [v for _, v in sums] + [t.float() for t in extra]
        if not tensors:
            return {}, {}, []
        device = tensors[0].device
        values = torch.stack([t.to(device) for t in tensors]).tolist()
        n, m = len(logged), len(sums)
        return ({k: x for (k, _), x in zip(logged, values[:n], strict=True)},
                {k: x for (k, _), x in zip(sums, values[n:n + m], strict=True)}, values[n + m:])

    def _raise_if_non_finite(self, sums: dict[str, float], step: int) -> None:
        """Stop every rank together when a loss summed since the last check is not finite."""
        bad = next(((key, value) for key, value in sums.items() if not np.isfinite(value)), None)
        if bad is None:
            huge = next(((key, value) for key, value in sums.items() if abs(value) > self.loss_limit), None)
            if huge is not None:
                bad = (huge[0], f"{huge[1]:.3g} in sum, beyond model.module.loss_limit={self.loss_limit:g} (diverged)")
        if self._trainer is not None and self.trainer.world_size > 1:
            # Every rank stops together, rather than one raising while the others wait in an all-reduce.
            if self.trainer.strategy.reduce_boolean_decision(bad is None, all=True):
                return
            bad = bad or ("a loss", "non-finite on another rank")
        if bad is None:
            return
        when = f"at step {step}" if step <= self._unchecked_from else f"between steps {self._unchecked_from} and {step}"
        raise NonFiniteLossError(f"{bad[0]} became {bad[1]} {when}; {self._nan_advice()}")

    def _nan_advice(self) -> str:
        """What to do after a non-finite loss, naming the checkpoint to resume from, if there is one."""
        trainer = self._trainer
        folder = getattr(getattr(trainer, "checkpoint_callback", None), "dirpath", None)
        last = Path(folder) / "last.ckpt" if folder else None
        if last is not None and last.is_file():
            return f"training stopped and the last good checkpoint, {last}, was kept: resume from it with {_NAN_FIX}"
        if trainer is not None and trainer.ckpt_path:
            return (f"training stopped before writing a checkpoint since {trainer.ckpt_path}: resume from that with "
                    f"{_NAN_FIX}")
        return f"training stopped before writing any checkpoint: start again with {_NAN_FIX}"

    def _check_and_log(self, step: int) -> None:
        """On a logged batch: check the losses since the last check and send this batch's values to the loggers,
        with one device-to-host transfer for all of them."""
        logged, sums, _ = self._host_values()
        self._pending = {}
        self._raise_if_non_finite(sums, step)
        for total in self._loss_sums.values():
            total.zero_()
        self._unchecked_from = self.step
        # train/d_loss and train/g_loss: the terms named "loss" (not, say, train/g_cycle_loss).
        self.progress_metrics = {k: v for k, v in logged.items() if k.split("/", 1)[-1].split("_", 1)[-1] == "loss"}
        trainer = self._trainer
        if trainer is None or not logged:
            return
        # Lightning's own callback_metrics, as CPU tensors, for callbacks that monitor a training value.
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in logged.items()})
        connector = getattr(trainer, "_logger_connector", None)
        if trainer.is_global_zero:
            record(step, logged, run_folder(self))  # train.log and history.csv
        if trainer.loggers and connector is not None and trainer.is_global_zero:
            # "step" as the x-axis of every logger (W&B shows it as trainer/global_step): gansuite steps, the unit
            # of max_steps, checkpoint names and sample grids.
            connector.log_metrics(logged, step=step)

    def _update(self, optimizer, loss: Tensor, key: str) -> None:
        total = self._loss_sums.get(key)
        if total is None:
            # float32 at least: a float16 sum would overflow long before the losses do.
            total = self._loss_sums[key] = torch.zeros((), device=loss.device,
                                                       dtype=torch.promote_types(loss.dtype, torch.float32))
        total.add_(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        plugin = self.trainer.precision_plugin if self._trainer is not None else None
        if hasattr(plugin, "use_scaler_of"):  # 16-mixed: one gradient scaler per optimizer
            plugin.use_scaler_of(optimizer)
        self.manual_backward(loss)
        optimizer.step()

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning calls this after un-scaling mixed-precision gradients, so the clip sees true norms.
        if self.grad_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    # ----------------------------------------------------------- exact resume
    def on_train_start(self) -> None:
        self._unchecked_from = self.step  # a resumed run checks from where it resumed

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # RNG states are restored at the first batch after a resume, not at load time: loading,
        # data-loader start-up and callbacks may draw random numbers in between.
        if self._rng_to_restore is not None:
            state, self._rng_to_restore = self._rng_to_restore, None
            torch.set_rng_state(state["torch"])
            if torch.cuda.is_available() and state.get("cuda"):
                torch.cuda.set_rng_state_all(state["cuda"])
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(state["python"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Never write weights after a non-finite loss, nor after a finite loss followed by an overflowing
        # update: the losses since the last check and every weight tensor's finiteness in one transfer.
        weights = [(name, v) for name, v in checkpoint["state_dict"].items() if v.is_floating_point()]
        _, sums, finite = self._host_values([torch.isfinite(v).all() for _, v in weights])
        self._raise_if_non_finite(sums, self.step)
        bad = next((name for (name, _), ok in zip(weights, finite, strict=True) if not ok), None)
        if bad is not None:
            raise NonFiniteLossError(f"weights {bad} became non-finite at step {self.step}; {self._nan_advice()}")
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # numpy's key array as a tensor keeps the checkpoint loadable with weights_only=True.
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": random.getstate(),
        }
        checkpoint["gansuite_step"] = self.step
        checkpoint["gansuite_samples"] = self.samples_consumed

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")
        # Continue the data stream where the run stopped; this runs before the train iterator exists.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        batches = self._batches_at(checkpoint.get("global_step", 0))
        samples = checkpoint.get("gansuite_samples")
        if samples is None:  # written before gansuite counted samples: one process
            samples = batches * self._batch_size()
        self._resumed_at = (batches, samples)
        if datamodule is not None and hasattr(datamodule, "skip_samples"):
            datamodule.skip_samples(samples)


class UnconditionalGAN(AdversarialModule):
    """z -> x: the vanilla GAN, DCGAN and every unconditional family.

    Args:
        latent_dim: size of the noise vector z ~ N(0, I).
        (the rest: see :class:`AdversarialModule`)
    """

    def __init__(self, *, latent_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim

    def make_inputs(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device, self.dtype)

    def generate(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        real = batch[0]
        z = torch.randn(real.shape[0], self.latent_dim, device=real.device, dtype=real.dtype)
        return self.generator(z)

    def discriminator_loss(self, batch, fake: Tensor, regularize: bool) -> dict[str, Tensor]:
        return self._d_terms(self.discriminator, batch[0], fake.detach(), regularize)

    def generator_loss(self, batch, fake: Tensor) -> dict[str, Tensor]:
        return {"loss": self.objective.g_loss(self.discriminator(fake))}


class ConditionalGAN(AdversarialModule):
    """(z, y) -> x: class-conditional families whose D also sees the label (cGAN, projection cGAN).

    The generator is called as ``generator(z, y)`` and the discriminator as ``discriminator(x, y)``
    with integer labels ``y`` (B,). Fakes of a batch are made for that batch's real labels, so the
    fake class histogram follows the data's and each real sample has a fake of its own class (the
    gradient penalty interpolates between same-class pairs). Grids and metrics ask for classes
    ``0, 1, ..., K-1, 0, 1, ...`` in turn, so a grid with K columns has one class per column.

    Args:
        latent_dim: size of the noise vector z ~ N(0, I).
        num_classes: K, from the data (``gansuite-train`` passes it in).
        (the rest: see :class:`AdversarialModule`)
    """

    def __init__(self, *, latent_dim: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.num_classes = num_classes

    def make_inputs(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.device, self.dtype)
        return z, torch.arange(n, device=self.device) % self.num_classes

    def run_generator(self, net: nn.Module, inputs: tuple[Tensor, Tensor]) -> Tensor:
        z, y = inputs
        return net(z, y)

    def score(self, samples: Tensor, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return self.discriminator(samples, inputs[1])

    def generate(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        real, y = batch
        z = torch.randn(real.shape[0], self.latent_dim, device=real.device, dtype=real.dtype)
        return self.generator(z, y), y

    def discriminator_loss(self, batch, fake: tuple[Tensor, Tensor], regularize: bool) -> dict[str, Tensor]:
        real, y = batch
        return self._d_terms(lambda x: self.discriminator(x, y), real, fake[0].detach(), regularize)

    def generator_loss(self, batch, fake: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        fake_x, y = fake
        return {"loss": self.objective.g_loss(self.discriminator(fake_x, y))}


def draw_indices(size: int, n: int, generator: torch.Generator) -> Tensor:
    """``n`` indices into ``size`` held-out examples: distinct when there are enough; a seeded generator
    gives the same ones in every run."""
    if n <= size:
        return torch.randperm(size, generator=generator)[:n]
    return torch.randint(size, (n,), generator=generator)


class PairedTranslationGAN(AdversarialModule):
    """x_a -> x_b learned from aligned pairs: pix2pix, SRResNet and SRGAN. Batches are ``(a, b)``.

    G's loss is ``content_weight * content_loss(G(a), b) + adversarial_weight * objective.g_loss``;
    with ``discriminator=None`` it is the content term alone. A conditional D judges the pair
    ``discriminator(a, b)`` (pix2pix); otherwise ``discriminator(b)`` (SRGAN).

    Grids, the dry run and evaluation draw their inputs from ``examples``, held-out pairs that
    the data module hands over (kept with the module, not in checkpoints). ``make_inputs``
    returns ``(a, b)``, so a grid can show the target beside the output.

    Args:
        examples: ``(a, b)`` held-out source and target images.
        content_loss: ``(output, target) -> scalar``, e.g. ``torch.nn.L1Loss()``; None for none.
        content_weight, adversarial_weight: the weights of G's two terms.
        conditional_d: D sees the source image as well as the (real or generated) target.
        (the rest: see :class:`AdversarialModule`)
    """

    def __init__(self, *, examples: tuple[Tensor, Tensor], content_loss: Callable[[Tensor, Tensor], Tensor] | None,
                 content_weight: float = 1.0, adversarial_weight: float = 1.0, conditional_d: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.discriminator is None and content_loss is None:
            raise ConfigError("model.module.content_loss is null and there is no discriminator, so G has no loss; "
                              "set model.module.content_loss or model.discriminator.")
        if self.discriminator is None and (self.regularizer is not None or self.n_critic != 1):
            raise ConfigError("loss: a model without a discriminator (SRResNet) has no D to regularize or update "
                              "n_critic times; use loss=nonsaturating (its regularizer none, n_critic 1).")
        a, b = examples
        if len(a) != len(b) or len(a) == 0:
            raise ValueError(f"PairedTranslationGAN: examples must be non-empty aligned pairs, got {len(a)} and {len(b)}")
        self.register_buffer("examples_a", a, persistent=False)
        self.register_buffer("examples_b", b, persistent=False)
        self.content_loss = content_loss
        self.content_weight = content_weight
        self.adversarial_weight = adversarial_weight
        self.conditional_d = conditional_d

    def make_inputs(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = draw_indices(len(self.examples_a), n, generator).to(self.examples_a.device)
        return self.examples_a[idx], self.examples_b[idx]

    def run_generator(self, net: nn.Module, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return net(inputs[0])

    def _judge(self, source: Tensor, target: Tensor) -> Tensor:
        return self.discriminator(source, target) if self.conditional_d else self.discriminator(target)

    def score(self, samples: Tensor, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return self._judge(inputs[0], samples)

    def generate(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        return self.generator(batch[0])

    def discriminator_loss(self, batch, fake: Tensor, regularize: bool) -> dict[str, Tensor]:
        source, real = batch
        return self._d_terms(lambda x: self._judge(source, x), real, fake.detach(), regularize)

    def generator_loss(self, batch, fake: Tensor) -> dict[str, Tensor]:
        source, real = batch
        terms: dict[str, Tensor] = {}
        loss = fake.new_zeros(())
        if self.content_loss is not None:
            terms["content"] = self.content_loss(fake, real)
            loss = loss + self.content_weight * terms["content"]
        if self.discriminator is not None:
            terms["adversarial"] = self.objective.g_loss(self._judge(source, fake))
            loss = loss + self.adversarial_weight * terms["adversarial"]
        terms["loss"] = loss
        return terms
