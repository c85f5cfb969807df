"""CycleGAN: network shapes, loss terms against hand values, the image pool, the LR schedule, training."""

from __future__ import annotations

from collections import Counter
from functools import partial

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from gansuite.errors import ConfigError
from gansuite.losses import Objective, lsgan_d, lsgan_g
from gansuite.models.cyclegan import CycleGAN, ImagePool, linear_decay, linear_decay_over
from gansuite.nets.cyclegan import Discriminators, Generators, ResnetGenerator

from .conftest import assert_finite, make_cfg

SHAPE_A, SHAPE_B = (3, 16, 16), (3, 16, 16)
TINY_NETS = {"width": 4, "n_blocks": 1}
TINY_D = {"width": 4, "n_layers": 2}


def _images(n, shape, seed):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def tiny_cyclegan(shape_a=SHAPE_A, shape_b=SHAPE_B, generator=None, discriminator=None, **kwargs) -> CycleGAN:
    torch.manual_seed(0)
    defaults = dict(
        generator=generator or Generators(shape=shape_b, source_shape=shape_a, **TINY_NETS),
        discriminator=discriminator or Discriminators(shape=shape_b, source_shape=shape_a, **TINY_D),
        g_optimizer=partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
        d_optimizer=partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
        objective=Objective(d_loss=lsgan_d, g_loss=lsgan_g),
        examples=(_images(5, shape_a, 1), _images(3, shape_b, 2)),
        ema_decay=None,
    )
    return CycleGAN(**{**defaults, **kwargs})


# ----------------------------------------------------------------------------- networks
def test_generators_translate_between_domains_of_different_channels_at_32_px():
    g = Generators(shape=(3, 32, 32), source_shape=(1, 32, 32), **TINY_NETS)
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    fake_b, fake_a = g["a2b"](a), g["b2a"](b)
    assert fake_b.shape == (2, 3, 32, 32) and fake_a.shape == (2, 1, 32, 32)
    assert fake_b.abs().max() <= 1  # tanh
    d = Discriminators(shape=(3, 32, 32), source_shape=(1, 32, 32), width=4)
    assert d["b"](fake_b).shape == (2, 1, 2, 2) and d["a"](fake_a).shape == (2, 1, 2, 2)


def test_generator_takes_non_square_images_and_is_initialised_as_the_paper():
    torch.manual_seed(0)
    g = ResnetGenerator(shape=(3, 24, 40), width=8, n_blocks=2)
    assert g(torch.zeros(1, 3, 24, 40)).shape == (1, 3, 24, 40)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert_close(weights.std(), torch.tensor(0.02), rtol=0.05, atol=0)  # about 19k draws: well within 5%
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in convs)


@pytest.mark.parametrize(("shape", "source_shape"), [((3, 30, 30), (3, 30, 30)), ((3, 4, 4), (3, 4, 4)),
                                                     ((3, 32, 32), (3, 64, 64))])
def test_image_sizes_the_generator_cannot_keep_name_the_data_resolution(shape, source_shape):
    with pytest.raises(ConfigError, match=r"^model\.generator: .*data\.resolution"):
        Generators(shape=shape, source_shape=source_shape, **TINY_NETS)


def test_single_domain_data_is_refused_with_a_sentence():
    with pytest.raises(ConfigError, match=r"^model\.generator: .*unpaired"):
        Generators(shape=(3, 32, 32), **TINY_NETS)


# ----------------------------------------------------------------------------- losses
class Shift(nn.Module):
    """x + c: a generator whose cycle and identity errors are known in closed form."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x):
        return x + self.c


class Constant(nn.Module):
    """A discriminator that scores every image c on a 2x2 patch map."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x):
        return x.new_full((len(x), 1, 2, 2), self.c)


def _loss_terms(module, seed=3):
    batch = _images(4, SHAPE_A, seed), _images(4, SHAPE_B, seed + 1)
    return module.generator_loss(batch, module.generate(batch))


def test_cycle_and_identity_terms_are_zero_for_identity_generators():
    module = tiny_cyclegan(generator=nn.ModuleDict({"a2b": nn.Identity(), "b2a": nn.Identity()}))
    terms = _loss_terms(module)
    zero = torch.tensor(0.0)
    assert_close(terms["cycle"], zero, rtol=0, atol=0)
    assert_close(terms["identity"], zero, rtol=0, atol=0)


def test_g_loss_is_the_papers_for_a_known_pair_under_lsgan():
    # G(x) = x + 0.1 and F = identity: F(G(a)) - a = 0.1 and G(F(b)) - b = 0.1, so cycle = 0.2;
    # F(a) - a = 0 and G(b) - b = 0.1, so identity = 0.1. Both Ds score 0.3 everywhere, so the paper's
    # adversarial terms are (0.3 - 1)^2 = 0.49 each.
    module = tiny_cyclegan(generator=nn.ModuleDict({"a2b": Shift(0.1), "b2a": nn.Identity()}),
                           discriminator=nn.ModuleDict({"a": Constant(0.3), "b": Constant(0.3)}))
    terms = _loss_terms(module)
    assert_close(terms["cycle"], torch.tensor(0.2), rtol=0, atol=1e-6)
    assert_close(terms["identity"], torch.tensor(0.1), rtol=0, atol=1e-6)
    assert_close(terms["adversarial"], torch.tensor(2 * 0.5 * 0.49), rtol=0, atol=1e-6)  # lsgan_g halves it
    paper = 0.49 + 0.49 + 10 * 0.2 + 5 * 0.1
    assert_close(terms["loss"], torch.tensor(paper), rtol=0, atol=1e-5)


def test_identity_terms_need_domains_with_equal_channels():
    with pytest.raises(ConfigError, match=r"^model\.module\.identity_weight=0\.5 .*identity_weight=0"):
        tiny_cyclegan(shape_a=(1, 16, 16))
    module = tiny_cyclegan(shape_a=(1, 16, 16), identity_weight=0.0)
    batch = _images(2, (1, 16, 16), 0), _images(2, SHAPE_B, 1)
    terms = module.generator_loss(batch, module.generate(batch))
    assert "identity" not in terms and torch.isfinite(terms["loss"])


def test_a_discriminator_regularizer_is_refused_with_a_sentence():
    with pytest.raises(ConfigError, match=r"^loss\.regularizer: .*loss/regularizer=none\.$"):
        tiny_cyclegan(regularizer=lambda critic, real, fake: real.sum())


def test_grids_translate_examples_from_a_to_b_and_d_b_scores_them():
    module = tiny_cyclegan()
    a, b = module.make_inputs(4, torch.Generator().manual_seed(0))
    assert a.shape == (4, *SHAPE_A) and b.shape == (4, *SHAPE_B)  # 3 examples of B: drawn with repeats
    again = module.make_inputs(4, torch.Generator().manual_seed(0))
    assert torch.equal(a, again[0]) and torch.equal(b, again[1])
    samples = module.sample((a, b), ema=False)
    assert_close(samples, module.generator["a2b"](a))
    assert_close(module.translate(b, "b2a"), module.generator["b2a"](b))
    assert module.score(samples, (a, b)).shape == (4, 1, 2, 2)
    with pytest.raises(ValueError, match="a2b or b2a"):
        module.translate(a, "a2a")


def test_translate_uses_the_ema_copy_of_the_generators_when_there_is_one():
    module = tiny_cyclegan(ema_decay=0.999)
    with torch.no_grad():
        module.generator_ema["b2a"].net[-2].bias.add_(0.5)  # the last conv, before tanh
    b = _images(2, SHAPE_B, 0)
    assert_close(module.translate(b, "b2a", ema=False), module.generator["b2a"](b))
    assert_close(module.translate(b, "b2a"), module.generator_ema["b2a"](b))
    assert not torch.allclose(module.translate(b, "b2a"), module.translate(b, "b2a", ema=False))


# ----------------------------------------------------------------------------- image pool
def _ids(images):
    return [int(x) for x in images[:, 0, 0, 0].tolist()]


def _tagged(ids):
    """Images (n, 1, 2, 2) filled with their id, so a returned image tells where it came from."""
    return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def test_pool_returns_new_images_until_it_is_full():
    pool = ImagePool(5)
    first = _tagged([1, 2, 3])
    assert torch.equal(pool(first), first) and _ids(pool.images) == [1, 2, 3]
    second = _tagged([4, 5, 6, 7])
    out = pool(second)
    assert torch.equal(out[:2], second[:2])  # the two that filled it come back as they are
    assert len(pool) == 5
    assert set(_ids(out[2:])) <= {1, 2, 3, 4, 5, 6, 7}


def test_full_pool_swaps_about_half_and_never_loses_or_duplicates_an_image():
    torch.manual_seed(0)
    pool, next_id, swapped, total = ImagePool(10), 0, 0, 0
    pool(_tagged(list(range(10))))
    next_id = 10
    for _ in range(200):
        new = list(range(next_id, next_id + 5))
        next_id += 5
        before = _ids(pool.images)
        out = _ids(pool(_tagged(new)))
        # Everything that went in comes out exactly once: returned or still stored.
        assert Counter(before + new) == Counter(out + _ids(pool.images))
        for i, image in enumerate(out):
            assert image == new[i] or image in before or image in new[:i]
            swapped += image != new[i]
            total += 1
    # 1000 fair coin flips: 0.5 +- 0.016; the bound is 6 sigma, and the seed is fixed anyway.
    assert 0.4 < swapped / total < 0.6


def test_pool_of_size_zero_passes_images_through():
    pool = ImagePool(0)
    images = torch.rand(3, 1, 2, 2)
    assert torch.equal(pool(images), images) and len(pool) == 0


def test_pool_size_must_be_a_non_negative_integer():
    with pytest.raises(ConfigError, match=r"^model\.module\.pool_size "):
        ImagePool(-1)


def test_pools_survive_a_checkpoint_round_trip(tmp_path):
    module = tiny_cyclegan(pool_size=4)
    module.pools["a"](_tagged([1, 2, 3]))
    module.pools["b"](_tagged([7, 8, 9, 10, 11]))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("pools.") for k in checkpoint["state_dict"])  # shapes stay fixed for resume
    torch.save(checkpoint, tmp_path / "c.ckpt")
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)  # as gansuite reads checkpoints
    fresh = tiny_cyclegan(pool_size=4)
    fresh.on_load_checkpoint(loaded)
    assert _ids(fresh.pools["a"].images) == [1, 2, 3]
    assert torch.equal(fresh.pools["b"].images, module.pools["b"].images)


# ----------------------------------------------------------------------------- LR schedule
def _lrs(scheduler_factory, steps):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = scheduler_factory(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_decay_is_constant_then_falls_linearly_to_zero():
    lrs = _lrs(partial(linear_decay, constant_steps=2, decay_steps=3), 7)
    assert_close(torch.tensor(lrs), torch.tensor([1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]), rtol=0, atol=1e-12)
    # Over a 5-step run: constant for the first half (rounded down), 0 once the run is over.
    assert _lrs(partial(linear_decay_over, total_steps=5), 6) == lrs[:6]
    with pytest.raises(ValueError, match="decay_steps"):
        linear_decay(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), constant_steps=2, decay_steps=0)


# ----------------------------------------------------------------------------- training
def _loader(n=8, batch_size=2, same=False):
    a, b = _images(n, SHAPE_A, 10), _images(n, SHAPE_B, 11)
    if same:  # every batch alike: a resumed run sees the data an uninterrupted one does
        a, b = a[:1].expand(n, -1, -1, -1).clone(), b[:1].expand(n, -1, -1, -1).clone()
    return DataLoader(TensorDataset(a, b), batch_size=batch_size)


def _fit(module, steps, ckpt_path=None):
    trainer = L.Trainer(max_steps=steps * module.optimizer_steps_per_step, max_epochs=-1, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, _loader(same=True), ckpt_path=ckpt_path)
    return trainer


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def test_one_step_updates_both_discriminators_and_both_generators():
    module = tiny_cyclegan(pool_size=3)
    before = {name: _params(net) for name, net in [*module.generator.items(), *module.discriminator.items()]}
    trainer = _fit(module, steps=1)
    assert trainer.global_step == 2 and module.step == 1
    for name, net in [*module.generator.items(), *module.discriminator.items()]:
        assert any(not torch.equal(p, q) for p, q in zip(before[name], net.parameters(), strict=True)), name
    metrics = trainer.callback_metrics
    assert_finite(metrics, *(f"train/{key}" for key in ("d_loss", "d_loss_a", "d_loss_b", "g_loss", "g_adversarial",
                                                         "g_cycle", "g_identity")))
    assert_close(metrics["train/d_loss"], metrics["train/d_loss_a"] + metrics["train/d_loss_b"])
    assert len(module.pools["a"]) == len(module.pools["b"]) == 2


def test_resume_continues_exactly_with_the_pools_and_lr_schedule(tmp_path):
    def make():
        return tiny_cyclegan(pool_size=3, g_scheduler=partial(linear_decay, constant_steps=1, decay_steps=3),
                             d_scheduler=partial(linear_decay, constant_steps=1, decay_steps=3))

    torch.manual_seed(1)
    straight = make()
    _fit(straight, steps=3)

    torch.manual_seed(1)
    first = make()
    trainer = _fit(first, steps=2)
    assert len(first.pools["a"]) == 3  # full: step 3 swaps some fakes, so the pool's content matters
    trainer.save_checkpoint(tmp_path / "step2.ckpt")
    resumed = make()
    _fit(resumed, steps=3, ckpt_path=tmp_path / "step2.ckpt")
    for (key, value), other in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert_close(other, value, rtol=0, atol=0, msg=key)
    assert torch.equal(resumed.pools["a"].images, straight.pools["a"].images)


# ----------------------------------------------------------------------------- the config
def test_config_builds_a_cyclegan_with_the_papers_settings(tmp_path):
    cfg = make_cfg(tmp_path, "model=cyclegan", "loss=lsgan", "trainer=debug", "logger=none", "eval=none",
                   "model.generator.width=4", "model.generator.n_blocks=1", "model.discriminator.width=4",
                   tiny=False)
    shapes = {"shape": (3, 32, 32), "source_shape": (1, 32, 32)}
    assert cfg.model.data_kind == "unpaired"
    module = instantiate(
        cfg.model.module, generator=instantiate(cfg.model.generator, **shapes),
        discriminator=instantiate(cfg.model.discriminator, **shapes),
        g_optimizer=instantiate(cfg.model.g_optimizer), d_optimizer=instantiate(cfg.model.d_optimizer),
        g_scheduler=instantiate(cfg.model.g_scheduler), d_scheduler=instantiate(cfg.model.d_scheduler),
        objective=instantiate(cfg.loss.objective), regularizer=None, reg_every=1, n_critic=cfg.loss.n_critic,
        examples=(_images(2, (1, 32, 32), 0), _images(2, (3, 32, 32), 1)), identity_weight=0.0,
    )
    assert (module.cycle_weight, module.adversarial_weight, module.pools["a"].size) == (10.0, 2.0, 50)
    assert module.generator_ema is None
    optimizers, schedulers = module.configure_optimizers()
    assert len(module.generator["a2b"].net) == 4 + 2 * 3 + 1 + 2 * 3 + 3  # c7s1, d, d, 1 block, u, u, c7s1
    # trainer=debug runs 5 steps: the LR is constant for 2, then falls towards 0 at step 5.
    factors = [schedulers[0].lr_lambdas[0](k) for k in range(6)]
    assert_close(torch.tensor(factors), torch.tensor([1.0, 1.0, 0.75, 0.5, 0.25, 0.0]), rtol=0, atol=1e-12)
    assert optimizers[0].param_groups[0]["lr"] == 2e-4
