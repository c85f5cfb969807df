"""Image-to-image data, SRResNet / SRGAN, and the image-to-image runs end to end (pix2pix, CycleGAN: their own files)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from gansuite.config.build import build
from gansuite.data.pairs import EdgesToDigits, PairedFolder, digit_edges
from gansuite.data.superres import SuperResolution
from gansuite.data.unpaired import DigitStyles, UnpairedFolders
from gansuite.errors import ConfigError
from gansuite.metrics.paired import bicubic_downsample
from gansuite.nets import srresnet as srgan
from gansuite.training.run import train
from gansuite.training.translation import measure_pairs

from .conftest import assert_trained, make_cfg


def _write_images(folder, sizes, channels=3, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        shape = (h, w, 3) if channels == 3 else (h, w)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i:03d}.png")


# ----------------------------------------------------------------------------- data
def test_sr_crops_are_downsampled_targets_and_repeat_exactly(tmp_path):
    _write_images(tmp_path / "photos", [(40, 48), (36, 36), (50, 40)])
    dm = SuperResolution(source="folder", root=str(tmp_path / "photos"), scale=4, crop=16, heldout_size=1,
                         crops_per_epoch=32, batch_size=4)
    dm.setup()
    assert dm.shape == (3, 16, 16) and dm.source_shape == (3, 4, 4)
    a, b = dm._train.__getitems__([0, 1, 2, 3])
    torch.testing.assert_close(a, bicubic_downsample(b, 4), rtol=0, atol=0)
    again = dm._train.__getitems__([2])[1]
    torch.testing.assert_close(again[0], b[2], rtol=0, atol=0)  # crop i depends on i alone
    assert not torch.equal(b[0], b[1])
    # The held-out image is measured whole, trimmed to a multiple of the scale.
    (pair,) = dm.heldout_pairs()
    assert pair[1].shape[-2] % 4 == 0 and pair[1].shape[-1] % 4 == 0
    assert pair[0].shape[-1] * 4 == pair[1].shape[-1]


def test_sr_data_names_the_key_for_bad_input(tmp_path):
    _write_images(tmp_path / "small", [(12, 12), (40, 40)])
    dm = SuperResolution(source="folder", root=str(tmp_path / "small"), crop=16, heldout_size=0)
    dm.check()
    with pytest.raises(ConfigError, match="data.crop: a training image is 12x12 px, smaller than data.crop=16"):
        dm.setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data.root: .* has no images"):
        SuperResolution(source="folder", root=str(tmp_path / "empty")).check()
    with pytest.raises(ConfigError, match="data.crop"):
        SuperResolution(source="folder", root=str(tmp_path / "small"), crop=18, scale=4)
    with pytest.raises(ConfigError, match="data.scale"):
        SuperResolution(scale=3)


def test_sr_mnist_pairs_are_the_heldout_digits_and_their_7px_versions():
    dm = SuperResolution(source="mnist_offline", scale=4)
    a, b = dm.examples()
    assert a.shape == (1000, 1, 7, 7) and b.shape == (1000, 1, 28, 28)
    torch.testing.assert_close(a, bicubic_downsample(b, 4), rtol=0, atol=0)
    assert sum(len(p[1]) for p in dm.heldout_pairs()) == 1000


def test_digit_edges_outline_strokes():
    x = -torch.ones(1, 1, 9, 9)
    x[..., 3:6, 3:6] = 1.0  # a 3x3 square of ink
    edges = digit_edges(x)
    ring = torch.zeros(9, 9, dtype=torch.bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # dilated (5x5) minus eroded (the centre)
    torch.testing.assert_close(edges[0, 0], torch.where(ring, 1.0, -1.0), rtol=0, atol=0)


def test_edges2digits_and_digit_styles_hold_real_digits():
    e = EdgesToDigits(batch_size=4)
    a, b = e.examples(10)
    torch.testing.assert_close(a, digit_edges(b), rtol=0, atol=0)
    assert e.labels[:10].tolist() == list(range(10))
    d = DigitStyles(batch_size=4)
    a, b = d.examples(10)
    assert a.shape == b.shape == (10, 1, 32, 32)
    # Held-out examples of both domains take the classes in turn, so row i shows one digit in both styles.
    assert d.labels_a[:10].tolist() == d.labels_b[:10].tolist() == list(range(10))
    xa, xb = next(iter(d.train_dataloader()))
    assert xa.shape == xb.shape == (4, 1, 32, 32)


def test_paired_folder_reads_side_by_side_and_named_pairs(tmp_path):
    left = np.zeros((8, 8, 3), np.uint8)
    right = np.full((8, 8, 3), 255, np.uint8)
    (tmp_path / "sbs").mkdir()
    for i in range(3):
        Image.fromarray(np.concatenate([left, right], axis=1)).save(tmp_path / "sbs" / f"{i}.png")
    dm = PairedFolder(root=str(tmp_path / "sbs"), resolution=8, heldout_size=1, flip=False)
    a, b = dm.examples()
    assert a.shape == b.shape == (1, 3, 8, 8)
    assert float(a.max()) == -1.0 and float(b.min()) == 1.0  # A is the left half, B the right
    swapped = PairedFolder(root=str(tmp_path / "sbs"), resolution=8, heldout_size=1, direction="BtoA").examples()
    assert float(swapped[0].min()) == 1.0

    for side in "AB":
        _write_images(tmp_path / "named" / side, [(8, 8)] * 2)
    (tmp_path / "named" / "B" / "001.png").rename(tmp_path / "named" / "B" / "other.png")
    with pytest.raises(ConfigError, match="data.root: .*001.png has no partner of the same name"):
        PairedFolder(root=str(tmp_path / "named"), layout="folders", heldout_size=0).check()

    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / "odd.png")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd.png").rename(tmp_path / "odd" / "x.png")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "odd" / "y.png")
    with pytest.raises(ConfigError, match="not two equal halves"):
        PairedFolder(root=str(tmp_path / "odd"), resolution=8, heldout_size=1).setup()


def test_unpaired_folders_fail_clearly_when_a_domain_is_empty(tmp_path):
    _write_images(tmp_path / "a", [(8, 8)] * 3)
    (tmp_path / "b").mkdir()
    with pytest.raises(ConfigError, match="data.root_b: .* has no images"):
        UnpairedFolders(root_a=str(tmp_path / "a"), root_b=str(tmp_path / "b"), resolution=8, heldout_size=1).check()


# ----------------------------------------------------------------------------- SRResNet / SRGAN
@pytest.mark.parametrize("scale", [2, 4])
def test_srresnet_upscales_by_the_data_scale(scale):
    net = srgan.SRResNet(shape=(3, 8 * scale, 8 * scale), source_shape=(3, 8, 8), width=4, blocks=1)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 3, 8 * scale, 8 * scale)
    assert len([m for m in net.upsample if isinstance(m, torch.nn.PixelShuffle)]) == {2: 1, 4: 2}[scale]
    with pytest.raises(ConfigError, match="not an x2, x4 or x8"):
        srgan.SRResNet(shape=(3, 24, 24), source_shape=(3, 8, 8))


def test_vgg_discriminator_sizes_its_dense_layer_from_the_data():
    d = srgan.VGGDiscriminator(shape=(1, 28, 28), width=2, hidden=8)
    assert d(torch.randn(3, 1, 28, 28)).shape == (3,)
    assert d.head[1].in_features == 16 * 2 * 2  # 28 -> 14 -> 7 -> 4 -> 2 px, 8 x width channels
    assert srgan.VGGDiscriminator(shape=(3, 96, 96), width=2, hidden=8).head[1].in_features == 16 * 6 * 6


def test_vgg_content_loss_uses_a_given_file_and_falls_back_to_mse_in_one_line(tmp_path, monkeypatch, caplog):
    from torchvision.models import vgg19

    torch.manual_seed(0)
    path = tmp_path / srgan.VGG19_FILE
    torch.save(vgg19().state_dict(), path)  # random weights: the file format, no download
    loss = srgan.content_loss("vgg", weights=str(path), layer="22")
    assert isinstance(loss, srgan.VGGLoss)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(loss(x, x), torch.tensor(0.0), rtol=0, atol=0)
    assert float(loss(x, -x)) > 0
    assert not list(loss.state_dict())  # VGG stays out of the GAN's checkpoints

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "no_hub"))
    with caplog.at_level(logging.WARNING, logger="gansuite"):
        fallback = srgan.content_loss("vgg")
    assert isinstance(fallback, torch.nn.MSELoss)
    assert len(caplog.records) == 1 and "pixel MSE" in caplog.records[0].getMessage()
    with pytest.raises(ConfigError, match="content_loss.weights: .* does not exist"):
        srgan.content_loss("vgg", weights=str(tmp_path / "missing.pth"))


# ----------------------------------------------------------------------------- runs
def test_srresnet_trains_g_alone_and_measures_beside_bicubic(tmp_path):
    cfg = make_cfg(tmp_path, "model=srresnet", "data=sr_mnist", "trainer.max_steps=3", "callbacks=default",
                   "callbacks.translation_metrics.every_n_steps=2", "callbacks.translation_grid.every_n_steps=2")
    result = train(cfg)
    assert_trained(result, 3)
    module = result["module"]
    assert module.discriminator is None and len(result["trainer"].optimizers) == 1
    assert result["trainer"].global_step == 3  # one optimizer step per gansuite step
    record = json.loads((tmp_path / "eval" / "translation_step_000003.json").read_text())
    assert record["protocol"]["baseline"] == "bicubic" and record["protocol"]["border"] == 4
    assert record["protocol"]["num_images"] == 1000
    assert set(record["values"]) == {"psnr", "ssim", "l1", "baseline_psnr", "baseline_ssim", "baseline_l1"}
    assert (tmp_path / "eval" / "translation_step_000002.json").is_file()
    with Image.open(tmp_path / "samples" / "pairs_step_000003.png") as im:
        # 8 rows of input | output | target, 28 px each with 2 px padding.
        assert im.size == (3 * 30 + 2, 8 * 30 + 2)


def test_measure_pairs_scores_a_perfect_model_above_its_baseline():
    class Perfect(torch.nn.Module):
        device = torch.device("cpu")
        generator_ema = None

        def sample(self, inputs, ema=True):
            return inputs[1]  # returns the target itself

    hr = torch.rand(4, 3, 24, 24) * 2 - 1  # 16 px left after the 4 px border: one whole SSIM window
    record = measure_pairs(Perfect(), [(bicubic_downsample(hr, 4), hr)])
    assert record["values"]["psnr"] == float("inf") and record["values"]["l1"] == 0.0
    assert record["values"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert 0 < record["values"]["baseline_psnr"] < 40
    assert record["protocol"] == {"y_channel": True, "border": 4, "baseline": "bicubic",
                                  "ssim": {"window": 11, "sigma": 1.5}, "num_images": 4, "per_image_mean": True}


def test_srgan_starts_from_an_srresnet_run(tmp_path):
    first = train(make_cfg(tmp_path / "srresnet", "model=srresnet", "data=sr_mnist", "trainer.max_steps=2"))
    cfg = make_cfg(tmp_path / "srgan", "model=srgan", "data=sr_mnist", "loss=nonsaturating", "trainer.max_steps=1",
                   "model.module.content_loss.kind=mse", f"model.init_generator={tmp_path / 'srresnet'}")
    datamodule, module = build(cfg)
    from gansuite.config.build import init_generator

    init_generator(module, str(tmp_path / "srresnet"))
    for name, p in first["module"].generator.state_dict().items():
        torch.testing.assert_close(module.generator.state_dict()[name], p, rtol=0, atol=0)
    result = train(cfg)
    assert_trained(result, 1)
    bad = make_cfg(tmp_path / "bad", "model=srgan", "data=sr_mnist", "model.generator.blocks=2",
                   "model.module.content_loss.kind=mse", f"model.init_generator={tmp_path / 'srresnet'}")
    with pytest.raises(ConfigError, match="model.init_generator: the generator in .* does not fit"):
        train(bad)


@pytest.mark.parametrize("model, data, loss", [("pix2pix", "edges2digits", "nonsaturating"),
                                               ("cyclegan", "digit_styles", "lsgan")])
def test_translation_models_train_from_the_command_line_config(tmp_path, model, data, loss):
    result = train(make_cfg(tmp_path, f"model={model}", f"data={data}", f"loss={loss}", "trainer.max_steps=2",
                            "callbacks=default", "callbacks.translation_grid.every_n_steps=1"))
    assert_trained(result, 2)
    assert (tmp_path / "samples" / "pairs_step_000002.png").is_file()
    # Paired data is measured against its targets; unpaired data by its held-out cycle error.
    record = json.loads((tmp_path / "eval" / "translation_step_000002.json").read_text())
    expected = {"psnr", "ssim", "l1", "baseline_psnr", "baseline_ssim", "baseline_l1"} if model == "pix2pix" \
        else {"cycle_l1_a", "cycle_l1_b"}
    assert set(record["values"]) == expected


@pytest.mark.parametrize("model, data, message", [
    ("dcgan", "sr_mnist", "model=dcgan makes images from noise but data=sr-mnist_offline-x4-28px-heldout1000 holds paired"),
    ("pix2pix", "mnist_offline", "model=pix2pix needs paired image pairs but data=mnist_offline-28px is not"),
    ("cyclegan", "edges2digits", "model=cyclegan needs unpaired image pairs but data=.* holds paired pairs"),
])
def test_models_and_data_of_the_wrong_kind_fail_in_one_sentence(tmp_path, model, data, message):
    with pytest.raises(ConfigError, match=message):
        build(make_cfg(tmp_path, f"model={model}", f"data={data}"))


def test_measure_cycle_of_identity_generators_is_zero_and_reads_classes(tmp_path):
    class Identity(torch.nn.Module):
        def translate(self, x, direction="a2b", ema=True):
            return x

    class FirstPixel(torch.nn.Module):  # a "classifier" that reads the class off the image's first pixel
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float() + self.w

    class Data:
        heldout_a = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 4, 4).clone()
        heldout_b = torch.zeros(3, 1, 4, 4)
        labels_a = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 0])  # 8 of 10 match the pixel

    from gansuite.training.translation import measure_cycle

    record = measure_cycle(Identity(), Data(), FirstPixel())
    assert record["values"]["cycle_l1_a"] == 0.0 and record["values"]["cycle_l1_b"] == 0.0
    assert record["values"]["class_kept_a2b"] == pytest.approx(0.8)
    assert record["values"]["baseline_class_kept_a2b"] == pytest.approx(0.8)

    class Relabel(Identity):  # A -> B writes each image's own label into it; B -> A is the identity
        def translate(self, x, direction="a2b", ema=True):
            if direction == "b2a" or len(x) != 10:
                return x
            return Data.labels_a.float().view(10, 1, 1, 1).expand_as(x).clone()

    record = measure_cycle(Relabel(), Data(), FirstPixel())
    assert record["values"]["class_kept_a2b"] == 1.0  # the translations, not the inputs, are classified
    assert record["values"]["baseline_class_kept_a2b"] == pytest.approx(0.8)
    # |F(G(a)) - a| = |label - pixel|: 0 for 8 images, |0 - 8| and |0 - 9| for the last two.
    assert record["values"]["cycle_l1_a"] == pytest.approx(17 / 10)


@pytest.mark.parametrize("model, data, extra", [
    ("pix2pix", "edges2digits", ["data.flip=true"]),  # G draws dropout noise, also in the grids
    ("srresnet", "sr_mnist", []),                        # G alone
])
def test_image_to_image_resume_is_bit_exact(tmp_path, model, data, extra):
    """3 steps, stop, resume, 3 more == 6 steps straight, with grids between (they must not touch the RNG)."""
    common = [f"model={model}", f"data={data}", *extra, "trainer.checkpoint_every=3", "callbacks=default",
              "callbacks.sample_grid.every_n_steps=2", "callbacks.translation_grid.every_n_steps=2",
              "callbacks.translation_metrics.every_n_steps=100"]
    straight = train(make_cfg(tmp_path / "straight", *common, "trainer.max_steps=6"))
    train(make_cfg(tmp_path / "first", *common, "trainer.max_steps=3"))
    resumed = train(make_cfg(tmp_path / "second", *common, "trainer.max_steps=6", f"resume={tmp_path / 'first'}"))
    assert resumed["step"] == straight["step"] == 6
    a, b = straight["module"].state_dict(), resumed["module"].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_paired_flips_show_every_pair_both_ways():
    from gansuite.data.pairs import _Pairs

    a = torch.arange(2 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    pairs = _Pairs(a, -a, flip=True)
    assert len(pairs) == 4
    x, y = pairs.__getitems__([0, 1, 2, 3])
    torch.testing.assert_close(x, torch.cat([a, a.flip(-1)]), rtol=0, atol=0)
    torch.testing.assert_close(y, -x, rtol=0, atol=0)  # both images of a pair mirrored together


def test_fid_of_translations_goes_through_the_evaluation(tmp_path, inception_weights):
    """eval.extractor=inception on image pairs: G's outputs for held-out sources against the target domain."""
    from gansuite.metrics.eval_callback import make_evaluator

    cfg = make_cfg(tmp_path, "model=pix2pix", "data=edges2digits", "data.heldout_size=20")
    datamodule, module = build(cfg)
    assert make_evaluator(datamodule, extractor="auto") is None  # image pairs: translation_metrics instead
    evaluator = make_evaluator(datamodule, extractor="inception", metrics=["fid"], num_samples=8, num_real=8,
                               reference_split="heldout", batch_size=4, inception_weights=str(inception_weights),
                               download=False, cache_dir=tmp_path / "cache")
    real_b = datamodule.heldout(8)[0]
    torch.testing.assert_close(real_b, datamodule.examples(8)[1], rtol=0, atol=0)  # the reference is targets
    result = evaluator.evaluate(module)
    assert np.isfinite(result.values["fid_8"])
