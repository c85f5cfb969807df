"""The BigGAN family: one D and one G update, orthogonal regularisation in G's loss, the late EMA, exact resume."""

import pytest
import torch
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.nets.biggan import orthogonal_penalty
from tests.conftest import assert_resume_is_bit_exact, build_tiny, trains

BIGGAN = ("model=biggan", "data.resolution=32", "loss=hinge")


@pytest.mark.parametrize("model", ["biggan", "biggan_unconditional"])
def test_one_step_of_each_biggan(tmp_path, model):
    result = trains(tmp_path, f"model={model}", "data.resolution=32", "loss=hinge", "loss.n_critic=2",
                    extra=("train/g_ortho",))
    assert result["module"].step == 2


def test_g_loss_adds_the_orthogonal_penalty_times_its_weight(tmp_path):
    _, _, module = build_tiny(tmp_path, *BIGGAN, "model.module.ortho_weight=0.5")
    real, y = torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 3])
    fake = module.generate((real, y))
    module.discriminator.eval()  # spectral norm's power iteration would move between the two calls
    terms = module.generator_loss((real, y), fake)
    adversarial = -module.discriminator(fake[0], y).mean()  # hinge G loss
    assert_close(terms["ortho"], orthogonal_penalty(module.generator), rtol=1e-6, atol=1e-6)
    assert_close(terms["loss"], adversarial + 0.5 * terms["ortho"], rtol=1e-5, atol=1e-5)


def test_no_orthogonal_term_when_its_weight_is_0(tmp_path):
    _, _, module = build_tiny(tmp_path, *BIGGAN, "model.module.ortho_weight=0")
    real, y = torch.rand(2, 1, 32, 32), torch.tensor([0, 1])
    assert "ortho" not in module.generator_loss((real, y), module.generate((real, y)))


@pytest.mark.parametrize("start, follows", [(1000, True), (0, False)])
def test_the_ema_follows_g_exactly_until_ema_start(tmp_path, start, follows):
    module = trains(tmp_path, *BIGGAN, f"model.module.ema_start={start}", "model.module.ema_decay=0.9",
                    steps=2)["module"]
    pairs = list(zip(module.generator_ema.parameters(), module.generator.parameters(), strict=True))
    assert all(torch.equal(e, g) for e, g in pairs) == follows


def test_bad_ema_start_names_its_key(tmp_path):
    with pytest.raises(ConfigError, match="model.module.ema_start"):
        build_tiny(tmp_path, *BIGGAN, "model.module.ema_start=-1")


def test_resume_is_bit_exact(tmp_path):
    assert_resume_is_bit_exact(tmp_path, *BIGGAN, "model.module.ema_start=1", "augment=diffaugment",
                               "trainer.checkpoint_every=2", "callbacks=none")
