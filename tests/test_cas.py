"""Classification accuracy score and augmentation gain (gansuite.metrics.augmentation): hand-computed values,
balanced and seeded samples, real-digit stand-ins for a generator, and the metrics through training's
evaluation and gansuite-eval. Classifiers train a few steps on a few images, so each test takes seconds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from gansuite.cli import evaluate
from gansuite.data.digits import OfflineMNIST
from gansuite.errors import ConfigError
from gansuite.metrics import augmentation as aug
from gansuite.metrics.inception import quantize
from gansuite.training.run import train
from tests.conftest import OFFLINE_DATA, build_tiny, make_cfg, trains

# Two generated images per class and one real one per class for the gain: every classifier trains 8 steps.
CAS = ["eval=default", "eval.metrics=[cas,aug_gain]", "eval.cas_per_class=2", "eval.aug_real_per_class=[1]",
       "eval.num_samples=20", "eval.batch_size=10"]


@pytest.fixture(scope="module")
def digits():
    datamodule = OfflineMNIST()
    return datamodule, datamodule.train_split()


class _Lookup(torch.nn.Module):
    """Reads the class written in an image's first pixel (as a uint8 value)."""

    def forward(self, x):
        return F.one_hot(((x[:, 0, 0, 0] + 1) * 127.5).round().long(), 10).float()


class _RealDigits(torch.nn.Module):
    """A stand-in conditional generator: asked for class k, it returns a real training digit of class k + shift."""

    def __init__(self, digits, labels, shift: int = 0) -> None:
        super().__init__()
        self.by_class = [digits[labels == k][100:] for k in range(10)]  # not the real images cas_real trains on
        self.shift = shift

    def make_inputs(self, n, generator):
        return torch.randn(n, 4, generator=generator), torch.arange(n) % 10

    def sample(self, inputs, ema=True):
        z, labels = inputs
        pick = (z[:, 0].abs() * 1000).long() % 300
        return torch.stack([self.by_class[(int(k) + self.shift) % 10][int(i)] for i, k in zip(pick, labels, strict=True)])


class _RealDigitsByCode(_RealDigits):
    """An InfoGAN stand-in: code value v draws real digits of class ``perm[v]``."""

    categorical = [10]

    def __init__(self, digits, labels, perm) -> None:
        super().__init__(digits, labels)
        self.perm = perm

    def make_code_inputs(self, n, generator):
        values = torch.arange(n) % 10
        return (torch.randn(n, 4, generator=generator), self.perm[values]), values


# ----------------------------------------------------------------------------- hand-computed values
def test_accuracy_is_the_fraction_put_in_their_class():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([0, 1, 2, 3])  # _Lookup predicts 0, 1, 2, 3
    assert aug.accuracy(_Lookup(), images, torch.tensor([0, 1, 2, 0])) == 3 / 4
    assert aug.accuracy(_Lookup(), images.float().div(127.5).sub(1), torch.tensor([1, 1, 1, 1])) == 1 / 4


def test_first_per_class_keeps_the_given_order():
    labels = torch.tensor([2, 2, 0, 1, 0, 1, 1])
    assert aug.first_per_class(labels, 1, 3).tolist() == [0, 2, 3]
    assert aug.first_per_class(labels, 2, 3).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="smallest has 2"):
        aug.first_per_class(labels, 3, 3)


def test_codes_are_matched_to_classes_by_the_best_assignment():
    # counts[code, class] = [[3, 2], [2, 0]]: the largest count first (0->0, then 1->1) agrees on 3 of 7
    # samples; the best one-to-one map (0->1, 1->0) on 2 + 2 = 4 of 7.
    codes = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    predicted = torch.tensor([0, 0, 0, 1, 1, 0, 0])
    mapping, agreement = aug.match_codes(codes, predicted, 2)
    assert mapping.tolist() == [1, 0] and agreement == 4 / 7
    # Three codes: 0 -> 2 (2 of 2), 2 -> 1 (2 of 2), so 1 -> 0 (1 of 2).
    mapping, agreement = aug.match_codes(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([2, 2, 0, 1, 1, 1]), 3)
    assert mapping.tolist() == [2, 0, 1] and agreement == 5 / 6


def test_every_classifier_trains_the_recipes_epochs_over_the_generated_set():
    assert aug.classifier_steps(4000) == 8 * 31  # N = 400 per class on the offline MNIST: 248 steps
    assert aug.classifier_steps(20) == 8  # smaller than a batch: one step per epoch
    assert aug.classifier_steps(256, epochs=1) == 2


def test_the_gain_is_the_mixed_accuracy_minus_the_real_only_one():
    real = {"cas_real": 0.9, "aug_acc_real_k10": 0.5, "aug_acc_real_k50": 0.75}
    generated = {"cas": 0.8, "aug_acc_mixed_k10": 0.625, "aug_acc_mixed_k50": 0.5}
    values = aug.combine(real, generated, [10, 50])
    assert list(values) == ["cas", "cas_real", "aug_acc_real_k10", "aug_acc_mixed_k10", "aug_gain_k10",
                            "aug_acc_real_k50", "aug_acc_mixed_k50", "aug_gain_k50"]
    assert values["aug_gain_k10"] == 0.125 and values["aug_gain_k50"] == -0.25 and values["cas_real"] == 0.9


def test_the_accuracies_are_of_classifiers_trained_on_the_sets_the_protocol_names(digits):
    datamodule, (x, y) = digits
    held = datamodule.heldout()
    generated = (quantize(x[-20:]), y[-20:])
    real = aug.real_accuracies((x, y), held, num_classes=10, per_class=2, real_per_class=[1], steps=4, seed=3)
    mixed = aug.generated_accuracies(generated, (x, y), held, num_classes=10, real_per_class=[1], steps=4, seed=3)
    # The same, built by hand: the first 2 (and 1) training digits of each class, then those plus the generated.
    first = {k: [i for i in range(len(y)) if y[i] == k] for k in range(10)}
    two, one = sorted(i for k in range(10) for i in first[k][:2]), sorted(first[k][0] for k in range(10))

    def acc(images, labels):
        return aug.accuracy(aug.train_classifier(images, labels, num_classes=10, steps=4, seed=3), *held)

    assert real["cas_real"] == acc(x[two], y[two])
    assert real["aug_acc_real_k1"] == acc(x[one], y[one])
    assert mixed["cas"] == acc(*generated)
    assert mixed["aug_acc_mixed_k1"] == acc(torch.cat([x[one], generated[0].float() / 127.5 - 1]),
                                            torch.cat([y[one], generated[1]]))


# ----------------------------------------------------------------------------- generated samples
@pytest.mark.parametrize("model", ["cgan", "cgan_mlp", "acgan", "projection", "sngan_projection", "infogan"])
def test_every_conditional_family_gives_n_samples_of_each_class(tmp_path, model):
    _, datamodule, module = build_tiny(tmp_path, f"model={model}", *OFFLINE_DATA.get(model, []))
    images, labels = aug.generate_per_class(module, 3, 10, seed=5, batch_size=7)
    assert images.dtype == torch.uint8 and images.shape == (30, *datamodule.shape)
    assert labels.tolist() == [i % 10 for i in range(30)]
    # The samples of the inputs a private generator seeded with 5 draws, whatever the batch size (up to the
    # last bit of a batch-size-dependent kernel: one level of 255).
    # cgan_mlp's G keeps its dropout on when sampling: noise of its own, seeded per batch, so the same batches
    # give the same samples.
    assert torch.equal(images, aug.generate_per_class(module, 3, 10, seed=5, batch_size=7)[0])
    if model not in ("infogan", "cgan_mlp"):
        whole = aug.generate_per_class(module, 3, 10, seed=5, batch_size=30)[0]
        assert (whole.int() - images.int()).abs().max() <= 1
        inputs = module.make_inputs(30, torch.Generator().manual_seed(5))
        assert torch.equal(whole, quantize(module.sample(inputs)))


def test_infogan_asks_for_each_code_value_in_turn(tmp_path):
    _, _, module = build_tiny(tmp_path, "model=infogan")
    inputs, values = module.make_code_inputs(25, torch.Generator().manual_seed(0))
    assert values.tolist() == [i % 10 for i in range(25)]
    one_hot = inputs[:, module.latent_dim:module.latent_dim + 10]
    assert torch.equal(one_hot, F.one_hot(values, 10).to(one_hot.dtype))


def test_the_global_rng_is_untouched_and_a_seed_repeats_its_result(tmp_path, digits):
    datamodule, (x, y) = digits
    module = _RealDigits(x, y)
    metrics = aug.AugmentationMetrics(datamodule=datamodule, metrics=["cas", "aug_gain"], per_class=2,
                                      real_per_class=[1], cache_dir=tmp_path, log=lambda m: None)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, _ = metrics.measure(module)
    assert torch.equal(torch.get_rng_state(), state)
    # A fresh instance (the real-data accuracies from the disk cache; the rest trained again) repeats every value.
    again, _ = aug.AugmentationMetrics(datamodule=datamodule, metrics=["cas", "aug_gain"], per_class=2,
                                       real_per_class=[1], cache_dir=tmp_path, log=lambda m: None).measure(module)
    assert again == first
    assert set(first) == {"cas", "cas_real", "aug_acc_real_k1", "aug_acc_mixed_k1", "aug_gain_k1"}
    assert first["aug_gain_k1"] == first["aug_acc_mixed_k1"] - first["aug_acc_real_k1"]
    other_seed = aug.generate_per_class(module, 2, 10, seed=1)[0]
    assert not torch.equal(other_seed, aug.generate_per_class(module, 2, 10, seed=0)[0])


def test_real_digits_of_the_asked_class_score_high_and_of_the_next_class_near_zero(tmp_path, digits):
    datamodule, (x, y) = digits
    metrics = aug.AugmentationMetrics(datamodule=datamodule, metrics=["cas"], per_class=20, cache_dir=tmp_path,
                                      epochs=16, log=lambda m: None)
    right = metrics.measure(_RealDigits(x, y))[0]
    wrong = metrics.measure(_RealDigits(x, y, shift=1))[0]
    # 32 steps on 200 digits: about 0.6 held-out accuracy from real digits, generated or not.
    assert right["cas"] > 0.4 and right["cas_real"] > 0.4 and abs(right["cas"] - right["cas_real"]) < 0.2
    assert wrong["cas"] < 0.1


def test_infogan_codes_are_read_as_the_classes_the_domain_classifier_sees(tmp_path, digits):
    datamodule, (x, y) = digits
    perm = torch.tensor([3, 7, 0, 9, 1, 5, 2, 8, 4, 6])
    metrics = aug.AugmentationMetrics(datamodule=datamodule, metrics=["cas"], per_class=20, cache_dir=tmp_path,
                                      epochs=16, log=lambda m: None)
    values, extra = metrics.measure(_RealDigitsByCode(x, y, perm))
    assert extra["cas_code_to_class"] == perm.tolist() and extra["cas_code_agreement"] > 0.95
    assert values["cas"] > 0.4
    assert "Hungarian" in metrics.protocol["labels"] and len(metrics.protocol["labels_classifier_sha256"]) == 64


# ----------------------------------------------------------------------------- what is refused
def test_an_unconditional_model_is_refused_at_start_up(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.metrics: cas and aug_gain need a class-conditional model .* "
                                          r"UnconditionalGAN .* remove cas and aug_gain from eval.metrics"):
        train(make_cfg(tmp_path, "model=dcgan", *CAS, "callbacks=none"))
    assert not list(tmp_path.rglob("*.ckpt"))  # before the first step


def test_gansuite_eval_refuses_cas_for_an_unconditional_checkpoint(tmp_path, capsys):
    result = trains(tmp_path, "model=dcgan", steps=1)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(result["output_dir"]), *[o for o in CAS if "=" in o and "." in o.split("=")[0]]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "need a class-conditional model" in err and "eval.metrics" in err and len(err.strip().splitlines()) == 1


def test_an_infogan_whose_code_is_not_the_classes_is_refused(tmp_path):
    _, _, module = build_tiny(tmp_path, "model=infogan", "model.categorical=[5]")
    with pytest.raises(ConfigError, match=r"has 5 values for the data's 10 classes; set model.categorical=\[10\]"):
        aug.label_source(module, 10)


def test_unlabelled_images_and_image_folders_are_refused(tmp_path, gansuite_cache):
    from gansuite.data.folders import ImageFolder
    from gansuite.metrics.eval_callback import make_evaluator

    with pytest.raises(ConfigError, match="holds no labelled images; remove cas and aug_gain from eval.metrics"):
        make_evaluator(ImageFolder(root=str(tmp_path)), metrics=["fid", "cas"], cache_dir=tmp_path)
    # A folder of samples has no classes (gansuite-eval FOLDER eval.metrics=[cas]).
    evaluator = make_evaluator(OfflineMNIST(), metrics=["cas"], num_samples=4, cas_per_class=2,
                               cache_dir=gansuite_cache, log=lambda m: None)
    with pytest.raises(ConfigError, match="a folder of images does not hold; evaluate the checkpoint"):
        evaluator.evaluate_images([torch.zeros(4, 1, 28, 28)])
    with pytest.raises(ConfigError, match="eval.cas_per_class=401: cas_real trains on that many real training "
                                          "images per class and the smallest class of mnist_offline-28px has 400"):
        aug.AugmentationMetrics(datamodule=OfflineMNIST(), metrics=["cas"], per_class=401, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"eval.aug_real_per_class=\[0\] must be distinct integers from 1 to 400"):
        aug.AugmentationMetrics(datamodule=OfflineMNIST(), metrics=["aug_gain"], real_per_class=[0], cache_dir=tmp_path)


# ----------------------------------------------------------------------------- end to end
def test_training_logs_cas_and_gansuite_eval_repeats_it(tmp_path, capsys):
    result = train(make_cfg(tmp_path, "model=cgan", *CAS, "eval.every_n_steps=2", "trainer.max_steps=2",
                            "eval.keep_best=cas", "logger=csv", "callbacks=none"))
    out = Path(result["output_dir"])
    logged = json.loads((out / "checkpoints" / "eval_step_000002.json").read_text())
    values, protocol = logged["values"], logged["protocol"]["cas"]
    for key in ("cas", "cas_real", "aug_acc_real_k1", "aug_acc_mixed_k1"):
        assert 0.0 <= values[key] <= 1.0
    assert values["aug_gain_k1"] == values["aug_acc_mixed_k1"] - values["aug_acc_real_k1"]
    assert protocol["per_class"] == 2 and protocol["real_per_class"] == [1] and protocol["recipe"]["steps"] == 8
    assert protocol["seed"] == 0 and protocol["classifier"]["network"].endswith("DomainClassifier")
    assert protocol["test_split"]["size"] == 1000 and protocol["labels"].startswith("the class each sample")
    (metrics_csv,) = out.rglob("metrics.csv")
    with open(metrics_csv) as f:
        columns = {k for row in csv.DictReader(f) for k, v in row.items() if v}
    assert {"val/cas", "val/cas_real", "val/aug_gain_k1", "val/aug_acc_real_k1", "val/aug_acc_mixed_k1",
            "best/cas", "best/aug_gain_k1"} <= columns
    assert json.loads((out / "checkpoints" / "best.json").read_text())["values"]["cas"] == values["cas"]

    evaluate.main([str(out)])
    printed = capsys.readouterr().out
    assert "cas_real" in printed and "the ceiling" in printed
    again = json.loads((out / "checkpoints" / "last.eval.json").read_text())
    assert again["protocol"] == logged["protocol"]
    for key, value in values.items():
        assert_close(again["values"][key], value, rtol=0, atol=0)


def test_a_bad_list_of_ks_is_one_sentence_naming_the_key(tmp_path):
    from gansuite.config.validate import validate

    with pytest.raises(ConfigError, match=r"eval.aug_real_per_class must be a list of integers \(got \['a'\]\)"):
        validate(make_cfg(tmp_path, "eval=default", "eval.aug_real_per_class=[a]", tiny=False))
    with pytest.raises(ConfigError, match="eval.cas_per_class must be a positive integer"):
        validate(make_cfg(tmp_path, "eval=default", "eval.cas_per_class=0", tiny=False))
