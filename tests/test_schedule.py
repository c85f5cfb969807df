"""The adversarial schedule of the shared base, on tiny MLPs and 2D data."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch.testing import assert_close

from gansuite.data.points import Mixture2D
from gansuite.errors import NonFiniteLossError
from gansuite.losses import Objective, bce_d, nonsaturating_g, wasserstein_d, wasserstein_g
from gansuite.models.gan import UnconditionalGAN
from gansuite.models.schedule import ema_update
from gansuite.nets import mlp as gan
from gansuite.regularizers import GradientPenalty


def tiny_gan(**kwargs) -> UnconditionalGAN:
    torch.manual_seed(0)
    defaults = dict(
        latent_dim=4,
        generator=gan.Generator(shape=(2,), latent_dim=4, width=8, depth=1),
        discriminator=gan.Discriminator(shape=(2,), width=8, depth=1),
        g_optimizer=partial(torch.optim.SGD, lr=0.05),
        d_optimizer=partial(torch.optim.SGD, lr=0.05),
        objective=Objective(d_loss=bce_d, g_loss=nonsaturating_g),
    )
    return UnconditionalGAN(**{**defaults, **kwargs})


def fit(module: UnconditionalGAN, steps: int, callbacks=()) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps * module.optimizer_steps_per_step,
        max_epochs=-1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule=Mixture2D(modes="ring8", num_samples=512, batch_size=16, seed=0))
    return trainer


class Updates(L.Callback):
    """Which network's weights changed in each batch."""

    def __init__(self):
        self.changed: list[tuple[bool, bool]] = []

    @staticmethod
    def _flat(net):
        return torch.cat([p.detach().flatten().clone() for p in net.parameters()])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = self._flat(pl_module.generator), self._flat(pl_module.discriminator)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        g, d = self._flat(pl_module.generator), self._flat(pl_module.discriminator)
        self.changed.append((not torch.equal(g, self.before[0]), not torch.equal(d, self.before[1])))


def test_n_critic_d_updates_per_g_update_and_step_counts_g_updates():
    module, updates = tiny_gan(n_critic=3), Updates()
    trainer = fit(module, steps=2, callbacks=[updates])
    assert module.step == 2
    assert trainer.global_step == 8  # 6 D updates + 2 G updates
    assert module.batches_consumed == 6
    # Every batch updates D; every third also updates G.
    assert updates.changed == [(False, True), (False, True), (True, True)] * 2


def test_only_the_network_being_updated_receives_gradients():
    module = tiny_gan(n_critic=2)
    seen: list[tuple[str, str]] = []
    phase = {"now": None}
    for net_name, net in (("G", module.generator), ("D", module.discriminator)):
        for p in net.parameters():
            p.register_hook(lambda grad, net_name=net_name: seen.append((phase["now"], net_name)))
    d_loss, g_loss = module.discriminator_loss, module.generator_loss

    def tracked_d(*args, **kwargs):
        phase["now"] = "d"
        return d_loss(*args, **kwargs)

    def tracked_g(*args, **kwargs):
        phase["now"] = "g"
        return g_loss(*args, **kwargs)

    module.discriminator_loss, module.generator_loss = tracked_d, tracked_g
    fit(module, steps=2)
    assert ("d", "D") in seen and ("g", "G") in seen
    assert ("d", "G") not in seen, "the D update back-propagated into G"
    assert ("g", "D") not in seen, "the G update computed gradients for D"


class CountingPenalty:
    def __init__(self):
        self.calls = 0

    def __call__(self, critic, real, fake):
        self.calls += 1
        return critic(real).mean() * 0.0


def test_lazy_regularizer_runs_every_k_d_updates():
    penalty = CountingPenalty()
    fit(tiny_gan(regularizer=penalty, reg_every=4), steps=9)  # D updates 0..8 -> at 0, 4, 8
    assert penalty.calls == 3


def test_weight_clipping_bounds_the_critic():
    module = tiny_gan(objective=Objective(d_loss=wasserstein_d, g_loss=wasserstein_g, weight_clip=0.01))
    fit(module, steps=3)
    for p in module.discriminator.parameters():
        assert p.abs().max() <= 0.01 + 1e-7


def test_gradient_clipping_bounds_the_update():
    norms: list[float] = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            if closure is not None:  # Lightning runs its hooks (and the clipping) inside the closure
                with torch.enable_grad():
                    closure()
            grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            return super().step()

    module = tiny_gan(g_optimizer=partial(RecordingSGD, lr=10.0), d_optimizer=partial(RecordingSGD, lr=10.0),
                      grad_clip=1e-3)
    fit(module, steps=3)
    assert len(norms) == 6
    assert max(norms) <= 1e-3 * (1 + 1e-4)


def test_schedulers_step_once_per_step():
    make_sched = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    module = tiny_gan(n_critic=2, g_scheduler=make_sched, d_scheduler=make_sched)
    trainer = fit(module, steps=3)
    for optimizer in trainer.optimizers:
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**3)


def test_ema_update_closed_form():
    model, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.weight.fill_(0.0)
        model.running_mean.fill_(5.0)
    ema_update(ema, model, decay=0.9)
    assert_close(ema.weight, torch.full((3,), 0.1), rtol=0, atol=1e-7)
    assert_close(ema.running_mean, torch.full((3,), 5.0), rtol=0, atol=0)  # buffers are copied


def test_ema_generator_follows_the_generator_and_is_used_for_samples():
    module = tiny_gan(ema_decay=0.5)
    fit(module, steps=4)
    g = torch.cat([p.flatten() for p in module.generator.parameters()])
    e = torch.cat([p.flatten() for p in module.generator_ema.parameters()])
    assert not torch.equal(g, e)
    z = module.make_inputs(5, torch.Generator().manual_seed(0))
    assert_close(module.sample(z, ema=True), module.generator_ema(z))
    assert_close(module.sample(z, ema=False), module.generator(z))


def test_non_finite_loss_stops_at_the_next_logged_batch():
    """The NaN guard reads its device-side sums only on logged batches: no host sync per update."""
    calls = {"n": 0}

    def nan_at_batch_1(real, fake):
        calls["n"] += 1
        loss = bce_d(real, fake)
        return loss * float("nan") if calls["n"] == 2 else loss

    module = tiny_gan(objective=Objective(d_loss=nan_at_batch_1, g_loss=nonsaturating_g))
    trainer = L.Trainer(max_steps=20, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        log_every_n_steps=4)
    with pytest.raises(NonFiniteLossError, match="train/d_loss became nan between steps 0 and 3; training stopped "
                                                 "before writing any checkpoint: start again with"):
        trainer.fit(module, datamodule=Mixture2D(modes="ring8", num_samples=512, batch_size=16, seed=0))
    assert calls["n"] == 4  # batch 3 is the first logged one (Lightning logs every 4th batch): it stopped there


def test_packed_discriminator_scores_groups_of_concatenated_samples():
    torch.manual_seed(0)
    packed = gan.Discriminator(shape=(2,), width=8, depth=1, pack=3)
    x = torch.randn(6, 2)
    scores = packed(x)
    assert scores.shape == (2,)
    # The first score depends on samples 0-2 only, in order: it is D applied to their concatenation.
    assert_close(scores[0], packed.net(x[:3].reshape(1, 6)).squeeze(), rtol=0, atol=1e-6)
    y = x.clone()
    y[4] += 1.0
    changed = packed(y)
    assert torch.equal(changed[0], scores[0]) and not torch.equal(changed[1], scores[1])


def test_packed_gan_trains_with_a_gradient_penalty():
    module = tiny_gan(discriminator=gan.Discriminator(shape=(2,), width=8, depth=1, pack=4),
                      regularizer=GradientPenalty())
    trainer = fit(module, steps=3)
    assert module.step == 3
    assert torch.isfinite(trainer.callback_metrics["train/d_reg"])


def test_a_training_step_reads_nothing_back_from_the_device_between_logged_batches():
    """No .item(), bool(t), float(t) or .tolist() inside training_step except on logged batches, and one
    transfer there: a GPU never waits for the host in between (benchmarks/host_syncs.py counts whole runs)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    module = tiny_gan()
    counts, tolists = [], []
    step, tolist = module.training_step, torch.Tensor.tolist

    def counted_step(batch, batch_idx):
        calls = []
        torch.Tensor.tolist = lambda self: calls.append(1) or tolist(self)
        try:
            with Count() as c:
                step(batch, batch_idx)
        finally:
            torch.Tensor.tolist = tolist
        counts.append(c.n)
        tolists.append(len(calls))

    module.training_step = counted_step
    trainer = L.Trainer(max_steps=20, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        log_every_n_steps=4)
    trainer.fit(module, datamodule=Mixture2D(modes="ring8", num_samples=512, batch_size=16, seed=0))
    assert len(counts) == 10 and counts == [0] * 10
    # Batches 3 and 7 are logged (every 4th), and batch 9 is the last: one transfer each, none elsewhere.
    assert tolists == [0, 0, 0, 1, 0, 0, 0, 1, 0, 1]
    assert set(trainer.callback_metrics) >= {"train/d_loss", "train/g_loss", "train/d_real_score"}
    assert set(module.progress_metrics) == {"train/d_loss", "train/g_loss"}


def test_with_n_critic_3_only_the_last_batch_of_the_run_is_logged_besides_the_regular_ones():
    """The last step is 3 batches; only its last (which holds G's update) is read and logged."""
    module = tiny_gan(n_critic=3)
    logged: list[tuple[int, set[str]]] = []
    trainer = L.Trainer(max_steps=4 * module.optimizer_steps_per_step, max_epochs=-1, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, log_every_n_steps=100)
    check = module._check_and_log
    module._check_and_log = lambda step: (logged.append((step, set(module._pending))), check(step))
    trainer.fit(module, datamodule=Mixture2D(modes="ring8", num_samples=512, batch_size=16, seed=0))
    assert logged == [(3, {"train/d_loss", "train/d_real_score", "train/d_fake_score", "train/g_loss"})]
