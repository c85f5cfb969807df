"""The adversarial schedule shared by every GAN family.

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
schedulers, the NaN guard (mixed in from :mod:`gansuite.models.losswatch`) and what goes into a
checkpoint for exact resume (:mod:`gansuite.models.exact_resume`).

Augmentation (``augment=diffaugment|ada``, :mod:`gansuite.augment.pipeline`) is a forward pre-hook on D,
active only inside a training step: every D call a family makes there (reals, fakes, the regularizer's
inputs, G's fakes) sees augmented images, without the family saying so. A family whose D does not take the
image first, or whose images are not pictures of the data (LAPGAN's bands, image-to-image pairs), sets
``augmentable = False`` and is refused. A family reports D's outputs on the reals of each D update through
:meth:`AdversarialModule._observe_real` (ADA adapts p from them).

:class:`AdversarialModule` is longer than the suite's other classes (about 240 lines) on purpose: the
family interface, what counts as a step and the schedule that uses both read best side by side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from gansuite.losses import Objective
from gansuite.models.exact_resume import ExactResume
from gansuite.models.losswatch import LossWatch

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
Regularizer = Callable[[Callable[[Tensor], Tensor], Tensor, Tensor], Tensor]


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode for the block; its mode is restored after."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


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


class AdversarialModule(LossWatch, ExactResume, L.LightningModule):
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
        augment: what D's inputs go through in training (:class:`gansuite.augment.pipeline.Augment`), or None.
    """

    # Whether D's first argument is an image of the data, which augment= may transform (see the module docstring).
    augmentable = True

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
        augment: nn.Module | None = None,
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
        self.augment = augment
        self._augmenting = False  # inside a training step: D's pre-hook augments its first argument
        if augment is not None and discriminator is not None:
            discriminator.register_forward_pre_hook(self._augment_hook)
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

    def sampling_generator(self, ema: bool = True) -> nn.Module:
        """The generator that samples: the EMA copy when asked for and the run keeps one, else the trained one."""
        return self.generator_ema if ema and self.generator_ema is not None else self.generator

    @contextmanager
    def evaluating(self, ema: bool = True) -> Iterator[nn.Module]:
        """:meth:`sampling_generator` in eval mode for the block; its mode is restored after."""
        with eval_mode(self.sampling_generator(ema)) as net:
            yield net

    @torch.no_grad()
    def sample(self, inputs: Any, ema: bool = True) -> Tensor:
        """Samples in data space from the EMA generator (or the raw one), in eval mode."""
        with self.evaluating(ema) as net:
            return self.run_generator(net, inputs)

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
            self._augmenting = self.augment is not None
            try:
                self._adversarial_batch(batch)
            finally:
                self._augmenting = False
        if self._log_now:
            self._check_and_log(step)

    def _augment_hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """D's forward pre-hook: inside a training step its first argument (the images) goes through augment."""
        if not self._augmenting:
            return None
        return (self.augment(args[0]), *args[1:])

    def _observe_real(self, scores: Tensor) -> None:
        """D's raw outputs on the reals of this D update, for an augmentation that adapts to them (ADA)."""
        if self.augment is not None:
            self.augment.observe_real(scores)

    def _sum_over_ranks(self, t: Tensor) -> Tensor:
        """``t`` summed over the processes of a distributed run (a collective every rank joins); ``t`` alone."""
        if self._trainer is None or self.trainer.world_size == 1:
            return t
        return self.trainer.strategy.reduce(t, reduce_op="sum")

    def _real_scores(self, critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor | None:
        """D's outputs on the reals for a relativistic G loss (``objective.g_uses_real``), else None. No graph:
        D is frozen in G's update and the reals do not depend on G."""
        if not self.objective.g_uses_real:
            return None
        with torch.no_grad():
            return critic(real)

    def _adversarial_batch(self, batch: Any) -> None:
        opt_g, opt_d = self.optimizers()
        d_updates = self.batches_consumed  # D updates before this batch
        g_update_now = (d_updates + 1) % self.n_critic == 0

        # Generate once; the G update reuses these samples, so keep the graph only when it comes.
        with torch.set_grad_enabled(g_update_now):
            fake = self.generate(batch)

        # --- discriminator update
        if self.augment is not None:
            self.augment.new_update()
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
        if self.augment is not None:  # the reals of this update over all ranks, as samples_consumed counts them
            world = self.trainer.world_size if self._trainer else 1
            images = self._batch_size() * world
            self._log_terms("augment", self.augment.after_d_update(d_updates + 1, images, self._sum_over_ranks))

        if g_update_now:
            self._generator_step(opt_g, batch, fake)

    def _generator_step(self, opt_g, batch: Any, fake: Any) -> None:
        if self.augment is not None:
            self.augment.new_update()
        self.toggle_optimizer(opt_g)
        terms = self.generator_loss(batch, fake)
        self._update(opt_g, terms["loss"], "train/g_loss")
        self.untoggle_optimizer(opt_g)
        self._log_terms("g", terms)

        if self.generator_ema is not None:
            ema_update(self.generator_ema, self.generator, self.ema_decay_now(self.step))
        schedulers = self.lr_schedulers() or []  # Lightning returns None, one scheduler, or a list
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def ema_decay_now(self, step: int) -> float:
        """The EMA's decay after G's ``step``-th update (counted from 0): ``ema_decay``, ramped up from 0.1 so
        that short runs are not dominated by the random initial weights. BigGAN and StyleGAN2 have their own."""
        return min(self.ema_decay, (1 + step) / (10 + step))

    def _d_terms(self, critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                 regularize: bool) -> dict[str, Tensor]:
        """D's loss on ``critic``'s scores of real and (detached) fake samples, their means, and the
        regularizer on the same critic when ``regularize``: the D step every single-D family shares."""
        real_out, fake_out = critic(real), critic(fake)
        self._observe_real(real_out)
        terms = {
            "loss": self.objective.d_loss(real_out, fake_out),
            "real_score": real_out.mean(),
            "fake_score": fake_out.mean(),
        }
        if regularize:
            terms["reg"] = self._regularize(critic, real, fake, real_out, fake_out)
        return terms

    def _regularize(self, critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                    real_out: Tensor, fake_out: Tensor) -> Tensor:
        """The regularizer on this D update: from the scores at hand when it reads scores (LeCam), else from
        ``critic`` and the inputs (gradient penalties)."""
        from_scores = getattr(self.regularizer, "from_scores", None)
        return from_scores(real_out, fake_out) if from_scores else self.regularizer(critic, real, fake)

    def _g_adversarial(self, critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
        """G's adversarial loss on ``critic``'s scores of its fakes (and of the reals, for a relativistic loss)."""
        return self.objective.generator(critic(fake), self._real_scores(critic, real))

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
