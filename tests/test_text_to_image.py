"""GAN-INT-CLS: the interpolation term against hand values, one training step with every term, exact resume,
and captions required of the data."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.models.text_to_image import interpolate, mode_seeking

from .conftest import assert_resume_is_bit_exact, build_tiny, make_cfg, trains
from .test_sample import _fails

COMMON = ("model=gan_int_cls", "data=captioned_digits")


def test_interpolation_mixes_each_caption_with_the_previous_one():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    assert_close(interpolate(text, 0.5), torch.tensor([[1.5, 1.0], [0.5, 0.5], [1.0, 1.5]]))
    assert_close(interpolate(text, 1.0), text)


def test_one_step_logs_every_term(tmp_path):
    result = trains(tmp_path, *COMMON, steps=1,
                    extra=("train/d_wrong_score", "train/d_joint", "train/g_matched", "train/g_interpolated"))
    module = result["module"]
    datamodule = result["trainer"].datamodule
    # an evaluation's (or --folder's) batches go on through the held-out captions where the last one stopped
    from gansuite.sampling import folder_inputs

    rows = torch.cat([tokens for _, tokens in folder_inputs(module, len(module.captions) + 10, seed=0, batch_size=250)])
    assert_close(rows, torch.cat([module.captions, module.captions[:10]]), rtol=0, atol=0)
    # grids and evaluations draw for the data's eval captions, in their order, with their texts
    assert_close(module.captions, datamodule.eval_captions()["tokens"], rtol=0, atol=0)
    assert module.caption_texts((None, module.captions[:3])) == datamodule.eval_captions()["texts"][:3]
    x = module.sample(module.make_inputs(4, torch.Generator().manual_seed(0)), ema=False)
    assert x.shape == (4, 1, 28, 28)


def test_the_discriminator_loss_is_the_matching_aware_one(tmp_path):
    _, datamodule, module = build_tiny(tmp_path, *COMMON, "model.module.joint_weight=0")
    datamodule.setup()
    x, y, tokens, wrong = datamodule._train.__getitems__(list(range(4)))
    module.discriminator.eval()  # no word dropout or batch statistics: the same scores twice
    made = {"fake": torch.zeros_like(x)}
    terms = module.discriminator_loss((x, y, tokens, wrong), made, regularize=False)
    d = module.discriminator
    real, wrong_s = d(x, d.embed_text(tokens)), d(x, d.embed_text(wrong))
    fake = d(made["fake"], d.embed_text(tokens))
    softplus = torch.nn.functional.softplus  # the configured objective: nonsaturating BCE
    expected = softplus(-real).mean() + 0.5 * (softplus(wrong_s).mean() + softplus(fake).mean())
    assert_close(terms["loss"], expected, rtol=1e-5, atol=1e-6)


def test_a_model_for_captions_refuses_data_without_them(tmp_path):
    with pytest.raises(ConfigError, match="draws images for captions"):
        build_tiny(tmp_path, "model=gan_int_cls", "data=mnist_offline")


def test_resume_is_bit_exact(tmp_path):
    common = [*COMMON, "callbacks=none", "trainer.checkpoint_every=2"]
    assert_resume_is_bit_exact(tmp_path, *common)


def test_rank_correlation_matches_hand_values_with_ties():
    from gansuite.metrics.captions import rank_correlation

    assert_close(rank_correlation(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([10.0, 20.0, 30.0])), 1.0)
    assert_close(rank_correlation(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 2.0, 1.0])), -1.0)
    # ranks (1.5, 1.5, 3) against (1, 2, 3): centred (-0.5, -0.5, 1) . (-1, 0, 1) = 1.5;
    # norms sqrt(1.5) and sqrt(2): rho = 1.5 / sqrt(3) = 0.8660
    assert_close(rank_correlation(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])), 3 ** 0.5 / 2,
                 rtol=0, atol=1e-12)
    assert rank_correlation(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0])) == 0.0


def test_percentiles_are_within_the_named_class():
    from gansuite.metrics.captions import percentile

    reference = torch.tensor([[1.0], [2.0], [3.0], [4.0], [10.0], [20.0]])
    reference_digits = torch.tensor([0, 0, 0, 0, 1, 1])
    values = torch.tensor([[2.5], [2.5], [15.0]])
    out = percentile(values, torch.tensor([0, 1, 1]), reference, reference_digits)
    assert_close(out, torch.tensor([[0.5], [0.0], [0.5]]))  # 2 of 4 below; none of (10, 20); 1 of 2


def test_the_caption_metrics_are_logged_with_their_protocol(tmp_path):
    import json

    trains(tmp_path, *COMMON, "callbacks=default", "callbacks.caption_metrics.every_n_steps=1",
           "callbacks.progress_bar=null", steps=1)
    record = json.loads((tmp_path / "eval" / "captions_step_000001.json").read_text())
    keys = {"digit_acc", "digit_acc_heldout_phrasing"} | {
        f"rank_corr_{a}{s}" for a in ("thickness", "slant", "size") for s in ("", "_heldout_phrasing")}
    assert set(record["values"]) == keys
    assert all(-1.0 <= v <= 1.0 for v in record["values"].values())
    assert f"1,val/digit_acc,{record['values']['digit_acc']!r}" in (tmp_path / "history.csv").read_text()


def test_the_joint_loss_pairs_digits_or_captions(tmp_path):
    from gansuite.nets.text import joint_embedding_loss

    for joint_classes in ("digit", "caption", "both"):
        _, datamodule, module = build_tiny(tmp_path / joint_classes, *COMMON, f"model.module.joint_classes={joint_classes}")
        datamodule.setup()
        # the first training digit of classes 0 to 7 (400 a class, in class order), each with its first phrasing
        x, y, tokens, wrong = datamodule._train.__getitems__([k * 400 * 8 for k in range(8)])
        assert y.tolist() == list(range(8))
        module.discriminator.eval()
        terms = module.discriminator_loss((x, y, tokens, wrong), {"fake": torch.zeros_like(x)}, regularize=False)
        d = module.discriminator
        image, text = d.embed_images(x), d.embed_text(tokens)
        by_digit = joint_embedding_loss(image, text, y, 10)
        by_caption = joint_embedding_loss(image, text, torch.arange(8), 8)  # eight different captions
        expected = {"digit": by_digit, "caption": by_caption, "both": by_digit + by_caption}[joint_classes]
        assert_close(terms["joint"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="model.module.joint_classes"):
        build_tiny(tmp_path / "bad", *COMMON, "model.module.joint_classes=word")


def test_identical_captions_are_one_class_in_the_caption_level_joint_loss():
    from gansuite.models.text_to_image import caption_classes

    tokens = torch.tensor([[5, 6, 0], [7, 6, 0], [5, 6, 0], [5, 6, 8], [7, 6, 0]])
    assert caption_classes(tokens).tolist() == [0, 1, 0, 3, 1]


# ----------------------------------------------------------------------------------------- vocabulary, --text
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny GAN-INT-CLS on captioned digits (word_gru), trained 2 steps with a checkpoint."""
    from gansuite.training.run import train

    tmp = tmp_path_factory.mktemp("gan_int_cls")
    train(make_cfg(tmp, *COMMON, "trainer.max_steps=2", "trainer.checkpoint_every=2", "callbacks=none"))
    return tmp


def test_the_checkpoint_records_the_vocabulary_and_the_held_out_captions_texts(digits_run):
    from gansuite.config.loading import load_module
    from gansuite.data.captions import vocabulary

    checkpoint = torch.load(digits_run / "checkpoints" / "last.ckpt", weights_only=True)
    vocab = vocabulary()
    assert checkpoint["gansuite_text"]["kind"] == "word_gru"
    assert checkpoint["gansuite_text"]["words"] == sorted(vocab, key=vocab.get)
    module, *_ = load_module(digits_run)
    inputs = module.make_inputs(10, torch.Generator().manual_seed(0))
    assert module.caption_texts(inputs) == checkpoint["gansuite_text"]["captions"][:10]  # every word known
    assert module.caption_texts(inputs)[0].split()[-1] in ("zero", "one", "two", "three", "four", "five", "six",
                                                           "seven", "eight", "nine")


def test_text_draws_n_images_of_one_caption_each_from_its_own_z(digits_run, tmp_path, capsys):
    from PIL import Image

    from gansuite.cli import sample as cli_sample
    from gansuite.config.loading import load_module
    from gansuite.sampling import text_inputs

    argv = [str(digits_run), "--text", "a thick slanted seven", "-n", "4", "--seed", "3"]
    cli_sample.main([*argv, "--grid", str(tmp_path / "a.png")])
    assert "4 samples of 'a thick slanted seven'" in capsys.readouterr().out
    cli_sample.main([*argv, "--grid", str(tmp_path / "b.png")])
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert a.size == b.size and a.tobytes() == b.tobytes()  # same seed, same images
    module, *_ = load_module(digits_run)
    z, tokens = text_inputs(module, "a thick slanted seven", 4, seed=3)
    assert len(set(map(tuple, z.tolist()))) == 4 and (tokens == tokens[:1]).all()  # four z, one caption
    assert module.caption_texts((z, tokens)) == ["a thick slanted seven"] * 4
    assert not torch.equal(z, text_inputs(module, "a thick slanted seven", 4, seed=4)[0])


def test_text_is_refused_in_one_sentence_where_it_cannot_be_drawn(digits_run, tmp_path, capsys):
    grid = ["--grid", str(tmp_path / "g.png")]
    _fails(capsys, [str(digits_run), "--text", "qwerty zzz", *grid], "--text: 'qwerty zzz' has no word the model",
           "'seven'")
    # Checked before any checkpoint is read: the source does not even exist.
    _fails(capsys, [str(tmp_path / "none"), "--text", "  ", *grid], "--text is empty")
    _fails(capsys, [str(tmp_path / "none"), "--text", "a seven", "--folder", str(tmp_path / "f")],
           "--text does not apply to --folder")
    _fails(capsys, [str(tmp_path / "none"), "--text", "a seven", "--classes", "7", *grid], "--text and --classes")
    _fails(capsys, [str(digits_run), "--classes", "7", *grid], "--classes: this checkpoint's model draws images for "
           "captions")


def test_text_on_a_model_that_is_not_text_to_image_is_one_sentence(tmp_path, capsys):
    trains(tmp_path / "gan", "model=gan", "trainer.checkpoint_every=1", steps=1)
    _fails(capsys, [str(tmp_path / "gan"), "--text", "a seven", "--grid", str(tmp_path / "g.png")],
           "--text: this checkpoint's model (model=gan) does not draw for captions")


def _folder_run(tmp_path, *overrides: str):
    from .test_captioned_folder import write_cub

    root = write_cub(tmp_path / "cub")
    run = tmp_path / "run"
    trains(run, "model=gan_int_cls", "data=captioned_folder", f"data.root={root}", "data.resolution=32",
           "data.batch_size=4", "trainer.checkpoint_every=1", *overrides, steps=1)
    return root, run


def test_a_checkpoint_whose_data_now_gives_another_vocabulary_is_refused(tmp_path, capsys):
    from gansuite.config.loading import load_module
    from gansuite.training.run import train

    root, run = _folder_run(tmp_path)
    load_module(run)  # the same data: loads
    # New words in a training caption shift the ids of the words after them (most frequent first).
    caption = next((root / "text_c10" / "001.Black_footed_Albatross").glob("*.txt"))
    caption.write_text(caption.read_text() + "orange orange orange orange orange orange orange orange\n")
    with pytest.raises(ConfigError, match=r"was trained with another vocabulary than the data gives now \(word id "
                                          r"\d+ was '.+' and is now 'orange'\)") as err:
        load_module(run)
    assert "\n" not in str(err.value)
    _fails(capsys, [str(run), "--grid", str(tmp_path / "g.png")], "another vocabulary")
    with pytest.raises(ConfigError, match="another vocabulary"):  # and a resumed run
        train(make_cfg(tmp_path / "resumed", "model=gan_int_cls", "data=captioned_folder", f"data.root={root}",
                       "data.resolution=32", "data.batch_size=4", "callbacks=none", "trainer.max_steps=2",
                       f"resume={run}"))


def test_text_with_precomputed_embeddings_is_refused_and_sentence_transformers_embed_it(tmp_path, monkeypatch,
                                                                                      capsys):
    import numpy as np

    from gansuite.cli import sample as cli_sample

    from .test_captioned_folder import _all_captions, write_cub
    from .test_text_sources import install_fake_sentence_transformers, model_dir

    root = write_cub(tmp_path / "cub")
    npz = tmp_path / "emb.npz"
    texts = _all_captions(root)
    np.savez(npz, texts=np.array(texts), embeddings=np.ones((len(texts), 4), dtype=np.float32))
    _, run = _folder_run(tmp_path / "pre", "text_encoder=precomputed", f"text_encoder.path={npz}")
    _fails(capsys, [str(run), "--text", "a red bird", "--grid", str(tmp_path / "g.png")],
           "--text: this model was trained with text_encoder=precomputed", "cannot embed new text")

    calls = install_fake_sentence_transformers(monkeypatch, dim=5)
    _, run = _folder_run(tmp_path / "st", "text_encoder=sentence_transformers", f"text_encoder.path={model_dir(tmp_path)}",
                         f"text_encoder.cache_dir={tmp_path / 'cache'}")
    calls.encoded.clear()
    cli_sample.main([str(run), "--text", "a tiny blue bird", "--grid", str(tmp_path / "st.png"), "-n", "4"])
    assert (tmp_path / "st.png").is_file() and calls.encoded[-1] == ["a tiny blue bird"]


def test_the_mode_seeking_term_matches_hand_values_and_enters_g_loss(tmp_path):
    a, b = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 1.0]])  # mean |a - b| = 1.5
    z_a, z_b = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[1.0, -2.0, 3.0]])  # mean |z_a - z_b| = 2
    assert_close(mode_seeking(a, b, z_a, z_b), torch.tensor(1 / (0.75 + 1e-5)), rtol=1e-6, atol=0)
    assert_close(mode_seeking(a, a, z_a, z_b), torch.tensor(1e5), rtol=1e-6, atol=0)  # identical images: 1 / eps
    _, datamodule, module = build_tiny(tmp_path, *COMMON, "model.module.mode_seeking_weight=0.5")
    datamodule.setup()
    batch = datamodule._train.__getitems__(list(range(0, 64, 8)))
    made = module.generate(batch)
    terms = module.generator_loss(batch, made)
    expected = mode_seeking(made["fake"], made["other_fake"], made["z"], made["z_other"])
    assert_close(terms["mode_seeking"], expected, rtol=0, atol=0)
    assert_close(terms["loss"], terms["matched"] + terms["interpolated"] + 0.5 * expected, rtol=1e-6, atol=1e-6)
    assert not torch.equal(made["z"], made["z_other"])
    with pytest.raises(ConfigError, match="model.module.mode_seeking_weight"):
        build_tiny(tmp_path / "bad", *COMMON, "model.module.mode_seeking_weight=-1")
