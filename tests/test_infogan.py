"""InfoGAN: codes in one generator input, a Q head on D's body, the L_I term, code sweeps."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from PIL import Image

from gansuite.config.build import build
from gansuite.errors import ConfigError
from gansuite.losses import Objective, bce_d, nonsaturating_g
from gansuite.models import infogan
from gansuite.nets import infogan as nets_infogan
from gansuite.training.run import train

from .conftest import assert_trained, make_cfg

SHAPE = (1, 28, 28)
TINY_INFOGAN = ["model=infogan"]  # conftest.TINY_WIDTH shrinks the networks


def _module(categorical=(10,), continuous=2, cont_std=1.0, **kwargs) -> infogan.InfoGAN:
    torch.manual_seed(0)
    codes = {"categorical": list(categorical), "continuous": continuous}
    return infogan.InfoGAN(
        generator=nets_infogan.Generator(shape=SHAPE, latent_dim=8, width=4, hidden=16, **codes),
        discriminator=nets_infogan.Discriminator(shape=SHAPE, width=4, hidden=16, q_hidden=8, cont_std=cont_std, **codes),
        g_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
        d_optimizer=lambda p: torch.optim.Adam(p, lr=2e-4),
        objective=Objective(bce_d, nonsaturating_g),
        latent_dim=8, cont_std=cont_std, **codes, **kwargs,
    )


def test_shapes_of_inputs_samples_scores_and_q():
    module = _module(categorical=(10, 3), continuous=2, cont_std=None)
    inputs = module.make_inputs(5, torch.Generator().manual_seed(0))
    assert inputs.shape == (5, 8 + 10 + 3 + 2)
    # Each categorical block is one-hot; continuous codes lie in the prior's support.
    assert torch.equal(inputs[:, 8:18].sum(1), torch.ones(5)) and torch.equal(inputs[:, 18:21].sum(1), torch.ones(5))
    assert ((inputs[:, 21:] >= -1) & (inputs[:, 21:] <= 1)).all()
    samples = module.sample(inputs, ema=False)
    assert samples.shape == (5, *SHAPE)
    assert module.score(samples, inputs).shape == (5,)
    score, q = module.discriminator.features_and_q(samples)
    assert score.shape == (5,) and q.shape == (5, 10 + 3 + 2 * 2)  # logits, means, log-variances
    fake, cat, cont = module.generate((torch.zeros(6, *SHAPE), torch.zeros(6)))
    assert fake.shape == (6, *SHAPE) and cat.shape == (6, 2) and cont.shape == (6, 2)
    assert module.code_names == ["cat0", "cat1", "cont0", "cont1"]


def test_info_nll_of_a_q_that_outputs_the_true_code_matches_the_hand_computation():
    categorical, cat, cont = [10], torch.tensor([[3], [7]]), torch.tensor([[0.5, -0.25], [-1.0, 0.75]])
    logits = torch.zeros(2, 10)
    logits[0, 3] = logits[1, 7] = 3.0  # Q's largest logit on the true category
    q = torch.cat([logits, cont], 1)  # and its means exactly on the true continuous codes

    cat_nll, cont_nll = infogan.info_nll(q, cat, cont, categorical, cont_std=1.0)
    # CE = -log(e^3 / (e^3 + 9)); each of the 2 Gaussian codes at its mean with std 1: 0.5 log(2 pi).
    torch.testing.assert_close(cat_nll, torch.tensor(math.log(1 + 9 * math.exp(-3))), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cont_nll, torch.tensor(2 * 0.5 * math.log(2 * math.pi)), rtol=1e-6, atol=1e-6)

    # Fixed std 0.5 and a mean off by 0.5 on every code: 0.5 log(2 pi 0.25) + 0.5^2 / (2 * 0.25) per code.
    _, off = infogan.info_nll(torch.cat([logits, cont + 0.5], 1), cat, cont, categorical, cont_std=0.5)
    torch.testing.assert_close(off, torch.tensor(2 * (0.5 * math.log(2 * math.pi * 0.25) + 0.5)), rtol=1e-6, atol=1e-6)

    # A learned variance: Q outputs log-variance log(0.25) at the true mean.
    learned = torch.cat([logits, cont, torch.full((2, 2), math.log(0.25))], 1)
    _, nll = infogan.info_nll(learned, cat, cont, categorical, cont_std=None)
    torch.testing.assert_close(nll, torch.tensor(2 * 0.5 * math.log(2 * math.pi * 0.25)), rtol=1e-6, atol=1e-6)


def test_the_weighted_info_term_and_the_categorical_mi_bound():
    module = _module(lambda_cat=2.0, lambda_cont=0.5)
    cat, cont = torch.tensor([[4]]), torch.tensor([[0.1, 0.2]])
    q = torch.cat([torch.zeros(1, 10), cont], 1)  # uniform categorical guess: CE = log 10
    terms = module.info_terms(q, cat, cont)
    gauss = 2 * 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(terms["info"], torch.tensor(2.0 * math.log(10) + 0.5 * gauss), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(terms["mi_cat"], torch.tensor(0.0), rtol=0, atol=1e-6)  # a guess carries no information


def test_q_shares_the_discriminator_body_in_one_pass():
    disc = _module().discriminator
    calls = []
    disc.body.register_forward_hook(lambda *args: calls.append(1))
    disc.eval()
    x = torch.randn(4, *SHAPE)
    score, q = disc.features_and_q(x)
    assert len(calls) == 1  # one body pass gives both heads
    torch.testing.assert_close(score, disc(x), rtol=0, atol=0)
    # Q's gradient reaches the body's weights: the body is shared, not copied.
    q.sum().backward()
    first_conv = disc.body[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert disc.score_head.weight.grad is None
    assert {id(p) for p in disc.q_head.parameters()} <= {id(p) for p in disc.parameters()}


def test_the_info_term_is_in_both_losses_and_reaches_g_through_d():
    module = _module()
    batch = (torch.randn(6, *SHAPE), torch.zeros(6))
    fake = module.generate(batch)
    d_terms = module.discriminator_loss(batch, fake, regularize=False)
    torch.testing.assert_close(d_terms["loss"], d_terms["adv"] + d_terms["info"], rtol=1e-6, atol=1e-6)
    g_terms = module.generator_loss(batch, fake)
    torch.testing.assert_close(g_terms["loss"], g_terms["adv"] + g_terms["info"], rtol=1e-6, atol=1e-6)
    module.zero_grad()
    g_terms["info"].backward()
    grads = [p.grad for p in module.generator.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("code", range(3), ids=["cat0", "cont0", "cont1"])
def test_code_sweep_varies_exactly_one_code_block_along_each_row(code):
    module = _module()
    rows, steps = 4, 5
    inputs = module.code_sweep_inputs(code, steps, rows, torch.Generator().manual_seed(0))
    columns = 10 if code == 0 else steps
    assert inputs.shape == (rows * columns, 8 + 10 + 2)
    grid = inputs.view(rows, columns, -1)
    swept = module.code_slices()[code]
    others = torch.ones(inputs.shape[1], dtype=torch.bool)
    others[swept] = False
    # Everything but the swept block is the same across a row ...
    assert torch.equal(grid[:, :, others], grid[:, :1, others].expand(-1, columns, -1))
    # ... the rows differ in their noise ...
    assert (torch.cdist(grid[:, 0, :8], grid[:, 0, :8]) + torch.eye(rows) > 0).all()
    # ... and the swept block takes the sweep's values, column by column, in every row.
    expected = torch.eye(10) if code == 0 else torch.linspace(-2, 2, steps)[:, None]
    assert torch.equal(grid[:, :, swept], expected.expand(rows, -1, -1))


def test_bad_codes_and_weights_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.categorical"):
        nets_infogan.Generator(shape=SHAPE, categorical=[1], continuous=2)
    with pytest.raises(ConfigError, match="model.continuous"):
        nets_infogan.Discriminator(shape=SHAPE, categorical=[10], continuous=-1)
    with pytest.raises(ConfigError, match="no code to learn"):
        nets_infogan.Generator(shape=SHAPE, categorical=[], continuous=0)
    with pytest.raises(ConfigError, match="model.module.lambda_cont"):
        _module(lambda_cont=-1.0)
    with pytest.raises(ConfigError, match="model.cont_std"):
        _module(cont_std=0.0)
    # A generator built for other codes than the module's is caught at build time.
    with pytest.raises(ConfigError, match="model.generator takes inputs of size 28"):
        build(make_cfg(tmp_path, *TINY_INFOGAN, "model.generator.continuous=10"))


def test_one_training_step_logs_the_info_term_and_updates_q_with_d(tmp_path):
    cfg = make_cfg(tmp_path, *TINY_INFOGAN, "trainer.max_steps=1", "callbacks=none")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    _, before = build(cfg)  # train() seeds the same way, so this is its initial state
    result = train(cfg)
    assert_trained(result, 1, "train/d_info", "train/g_info", "train/d_mi_cat", "train/g_info_cont", "train/d_q_acc")
    metrics = result["trainer"].callback_metrics
    assert metrics["train/d_info"] > 0 and metrics["train/g_info"] > 0

    module = result["module"]
    opt_g, opt_d = result["trainer"].optimizers
    in_d = {id(p) for group in opt_d.param_groups for p in group["params"]}
    in_g = {id(p) for group in opt_g.param_groups for p in group["params"]}
    q_params = list(module.discriminator.q_head.parameters())
    assert {id(p) for p in q_params} <= in_d and not {id(p) for p in q_params} & in_g
    start = dict(before.discriminator.q_head.named_parameters())
    for name, p in module.discriminator.q_head.named_parameters():
        assert not torch.equal(p, start[name]), f"Q head's {name} was not updated"


def test_gansuite_sample_writes_one_grid_per_infogan_code(tmp_path):
    from gansuite.sampling import save_code_grids

    paths = save_code_grids(_module(), tmp_path / "codes", rows=3, steps=6, seed=1)
    assert [p.name for p in paths] == ["cat0.png", "cont0.png", "cont1.png"]
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == ["cat0.png", "cont0.png", "cont1.png"]
    with Image.open(paths[0]) as cat, Image.open(paths[1]) as cont:
        # save_image pads by 2 px: 10 categories x 3 rows, 6 steps x 3 rows of 28 px digits.
        assert cat.size == (2 + 10 * 30, 2 + 3 * 30)
        assert cont.size == (2 + 6 * 30, 2 + 3 * 30)


def test_cluster_accuracy_reads_each_cluster_as_its_majority_label():
    predicted = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([5, 5, 3, 7, 7, 1])
    assert infogan.cluster_accuracy(predicted, labels) == pytest.approx(5 / 6)
