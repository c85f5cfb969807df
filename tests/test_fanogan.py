"""f-AnoGAN: the izi_f loss and score against hand values, the two phases (what trains in each, chaining by
resume), exact resume across the phase change, and the anomaly callback waiting for a trained encoder."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.models.fanogan import izif_terms
from gansuite.nets.fanogan import GeneratorWithEncoder
from gansuite.training.run import train

from .conftest import assert_resume_is_bit_exact, build_tiny, make_cfg

COMMON = ("model=fanogan", "data=mnist_anomaly", "loss=wgan_gp", "callbacks=none")


def test_the_izif_loss_matches_hand_computation():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.stack([torch.full((1, 2, 2), 1.0), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])])
    features = lambda t: torch.cat([t.flatten(1).sum(1, keepdim=True), t.flatten(1)[:, :1]], 1)  # noqa: E731
    per_image = izif_terms(x, x_hat, features, kappa=2.0, reduce=False)
    # image 0: pixels all 1 -> mean 1; features (4, 1) against (0, 0) -> (16 + 1) / 2 = 8.5
    # image 1: one pixel of 4 -> 1/4; features (1, 1) -> (1 + 1) / 2 = 1
    assert_close(per_image["image"], torch.tensor([1.0, 0.25]))
    assert_close(per_image["feature"], torch.tensor([8.5, 1.0]))
    assert_close(per_image["loss"], torch.tensor([1.0 + 2 * 8.5, 0.25 + 2 * 1.0]))
    assert_close(izif_terms(x, x_hat, features, kappa=2.0)["loss"], torch.tensor((18.0 + 2.25) / 2))


def test_the_feature_target_is_fixed():
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    x_hat = torch.zeros(1, 1, 2, 2, requires_grad=True)
    izif_terms(x, x_hat, lambda t: t.flatten(1), kappa=1.0)["loss"].backward()
    # With f the identity both terms are mean((x_hat - x)^2) (4 elements): x_hat gets 2 * 2 (x_hat - x) / 4 = -1,
    # x only the image term's -2 (x_hat - x) / 4 = 0.5 (1.0 if f(x) were not detached).
    assert_close(x_hat.grad, torch.full((1, 1, 2, 2), -1.0))
    assert_close(x.grad, torch.full((1, 1, 2, 2), 0.5))


def test_the_generator_draws_from_codes_and_reconstructs_images():
    g = GeneratorWithEncoder(shape=(1, 32, 32), latent_dim=6, width=4)
    assert g(torch.randn(3, 6)).shape == (3, 1, 32, 32)
    assert g.encoder(torch.randn(3, 1, 32, 32)).shape == (3, 6)
    assert g.reconstruct(torch.randn(3, 1, 32, 32)).shape == (3, 1, 32, 32)


def test_the_anomaly_score_is_the_izif_loss_of_each_image_in_eval_mode(tmp_path):
    _, datamodule, module = build_tiny(tmp_path, *COMMON, "model.module.kappa=0.5")
    x, _ = datamodule.heldout(5)
    module.train()
    score = module.anomaly_score(x, ema=False)
    assert module.generator.training and module.discriminator.training  # left as they were
    module.eval()
    with torch.no_grad():
        x_hat = module.generator.decoder(module.generator.encoder(x))
        expected = ((x_hat - x) ** 2).flatten(1).mean(1) + 0.5 * (
            (module.discriminator.features(x_hat) - module.discriminator.features(x)) ** 2).flatten(1).mean(1)
    assert_close(score, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("option", "key"), [("model.module.gan_steps=-1", "gan_steps"),
                                             ("model.module.gan_steps=2.5", "gan_steps"),
                                             ("model.module.gan_steps=true", "gan_steps"),
                                             ("model.module.kappa=-1", "kappa"),
                                             ("model.module.ema_decay=0.999", "ema_decay")])
def test_a_bad_option_is_one_sentence_naming_the_key(tmp_path, option, key):
    with pytest.raises(ConfigError, match=rf"model\.module\.{key}"):
        build_tiny(tmp_path, *COMMON, option)


def test_the_encoder_phase_runs_under_mixed_precision(tmp_path):
    # D's optimizer steps without gradients in the encoder phase; its gradient scaler must let it.
    result = train(make_cfg(tmp_path, *COMMON, "model.module.gan_steps=1", "trainer.max_steps=2",
                            "trainer.precision=16-mixed"))
    assert result["step"] == 2


def _split(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    encoder = {k: v for k, v in state.items() if k.startswith("generator.encoder.")}
    rest = {k: v for k, v in state.items() if k not in encoder}
    return encoder, rest


@pytest.mark.parametrize("loss", ["wgan_gp", "nonsaturating"])  # D with layer norm; D with batch norm
def test_the_gan_trains_first_then_the_encoder_alone_when_the_gan_run_is_resumed(tmp_path, loss):
    common = [*COMMON, f"loss={loss}"]
    gan = train(make_cfg(tmp_path / "gan", *common, "model.module.gan_steps=2", "trainer.max_steps=2"))
    encoder_before, gan_weights = _split({k: v.clone() for k, v in gan["module"].state_dict().items()})
    resumed = train(make_cfg(tmp_path / "enc", *common, "model.module.gan_steps=2", "trainer.max_steps=3",
                             f"resume={tmp_path / 'gan'}"))
    module = resumed["module"]
    # n_critic batches and n_critic + 1 optimizer steps a step, in both phases (wgan_gp: 5 critic steps)
    assert module.n_critic == (5 if loss == "wgan_gp" else 1)
    assert resumed["step"] == 3 and resumed["trainer"].global_step == 3 * (module.n_critic + 1)
    assert module.batches_consumed == 3 * module.n_critic
    encoder_after, gan_after = _split(module.state_dict())
    for key, value in gan_weights.items():  # G and D, batch-norm statistics included (D's too), fixed
        assert torch.equal(gan_after[key], value), key
    assert any(not torch.equal(encoder_after[k], v) for k, v in encoder_before.items())


def test_the_gan_phase_leaves_the_encoder_untouched(tmp_path):
    gan = train(make_cfg(tmp_path, *COMMON, "model.module.gan_steps=2", "trainer.max_steps=2"))
    module, opt_g = gan["module"], gan["trainer"].optimizers[0]
    # Adam keeps a state for every parameter it has updated: the decoder's, none of the encoder's.
    assert all(opt_g.state.get(p) for p in module.generator.decoder.parameters())
    assert not any(opt_g.state.get(p) for p in module.generator.encoder.parameters())


def test_resume_across_the_phase_change_is_bit_exact(tmp_path):
    common = [*COMMON, "model.module.gan_steps=1", "trainer.checkpoint_every=2"]
    assert_resume_is_bit_exact(tmp_path, *common)


def test_the_anomaly_callback_waits_for_a_trained_encoder(tmp_path):
    train(make_cfg(tmp_path, *COMMON[:-1], "callbacks=default", "callbacks.progress_bar=null",
                   "callbacks.anomaly_metrics.every_n_steps=1", "model.module.gan_steps=2", "trainer.max_steps=3"))
    measured = sorted(p.name for p in (tmp_path / "eval").glob("anomaly_step_*.json"))
    assert measured == ["anomaly_step_000003.json"]  # not at steps 1 and 2 (GAN phase) nor at 0
    assert (tmp_path / "samples" / "anomaly_step_000003.png").exists()
