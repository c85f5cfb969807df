"""The evaluation callback and gansuite-eval: same numbers, protocol recorded, best kept, fails at start-up."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torchvision.utils import save_image

from gansuite.cli import evaluate
from gansuite.data.base import denormalize
from gansuite.metrics.eval_callback import EvalCallback
from gansuite.metrics.inception import file_sha256
from gansuite.metrics.results import EvalResult, is_better, short_name
from gansuite.training.run import train
from tests.conftest import make_cfg

# Random-weight Inception on 8 generated and 8 real images: the whole pipeline, in as few
# 299x299 Inception passes as possible (each costs about 0.3 s on a CPU core).
EVAL = ["eval=default", "eval.extractor=inception", "eval.num_samples=8", "eval.num_real=8",
        "eval.batch_size=4", "eval.every_n_steps=2", "eval.metrics=[fid,is,kid,prc]"]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, inception_weights, gansuite_cache):
    tmp = tmp_path_factory.mktemp("evaluated")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse environment is not set yet
        mp.setenv("GANSUITE_CACHE", str(gansuite_cache))
        mp.setenv("TORCH_HOME", str(tmp / "torch-home"))
        cfg = make_cfg(tmp, *EVAL, f"eval.inception_weights={inception_weights}", "logger=csv",
                       "trainer.max_steps=3", "trainer.checkpoint_every=3")
        return cfg, train(cfg)


def _csv_rows(output_dir: Path) -> list[dict[str, str]]:
    (metrics,) = output_dir.rglob("metrics.csv")
    with open(metrics) as f:
        return list(csv.DictReader(f))


def test_callback_logs_keys_with_the_sample_count_and_writes_the_protocol(evaluated_run, inception_weights):
    cfg, result = evaluated_run
    out = Path(result["output_dir"])
    # An evaluation at step 2 and the final one at step 3.
    files = sorted(p.name for p in (out / "checkpoints").glob("eval_step_*.json"))
    assert files == ["eval_step_000002.json", "eval_step_000003.json"]
    data = json.loads((out / "checkpoints" / "eval_step_000003.json").read_text())
    assert set(data["values"]) == {"fid_8", "is_8", "is_std_8", "kid_8", "kid_std_8", "precision_8", "recall_8"}
    p = data["protocol"]
    assert p["feature_extractor"] == "inception-v3-compat"
    assert p["feature_extractor_sha256"] == file_sha256(inception_weights)
    assert p["num_generated"] == 8 and p["num_real"] == 8
    assert p["reference"]["dataset"] == "mnist_offline-28px" and p["reference"]["split"] == "train"
    assert len(p["reference"]["sha256"]) == 64 and p["implementation"].startswith("torch-fidelity ")
    assert p["resize"].startswith("torch-fidelity TF1-compatible bilinear")
    rows = _csv_rows(out)
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"val/fid_8", "val/is_8", "val/kid_8", "val/precision_8", "best/fid_8", "best/fid_8_step"} <= logged
    # The monitored key (keep_best=fid) is one that is logged.
    callback = next(c for c in result["trainer"].callbacks if isinstance(c, EvalCallback))
    assert callback.monitor == "fid_8" and f"val/{callback.monitor}" in logged


def test_best_checkpoint_follows_the_best_fid(evaluated_run):
    cfg, result = evaluated_run
    out = Path(result["output_dir"]) / "checkpoints"
    fids = {s: json.loads((out / f"eval_step_{s:06d}.json").read_text())["values"]["fid_8"] for s in (2, 3)}
    best_step = min(fids, key=fids.get)
    best = json.loads((out / "best.json").read_text())
    assert best["step"] == best_step and best["values"]["fid_8"] == fids[best_step]
    checkpoint = torch.load(out / "best.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["gansuite_step"] == best_step
    callback = next(c for c in result["trainer"].callbacks if isinstance(c, EvalCallback))
    assert callback.best["fid_8"] == {"value": fids[best_step], "step": best_step}
    # The best values travel in every checkpoint, so a resume keeps them.
    last = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("EvalCallback")]
    assert state["best"]["fid_8"]["step"] == best_step


def test_gansuite_eval_on_the_checkpoint_gives_the_callbacks_number(evaluated_run, capsys):
    cfg, result = evaluated_run
    out = Path(result["output_dir"])
    evaluate.main([str(out)])  # a run directory: its checkpoints/last.ckpt, at step 3
    printed = capsys.readouterr().out
    assert "fid_8" in printed
    from_callback = json.loads((out / "checkpoints" / "eval_step_000003.json").read_text())
    from_cli = json.loads((out / "checkpoints" / "last.eval.json").read_text())
    assert from_cli["step"] == 3
    assert from_cli["protocol"] == from_callback["protocol"]
    for key, value in from_callback["values"].items():
        assert_close(from_cli["values"][key], value, rtol=1e-9, atol=1e-12)


def test_gansuite_eval_raw_writes_its_own_file_and_says_which_generator(evaluated_run, tmp_path, capsys):
    cfg, result = evaluated_run
    ckpt = Path(result["output_dir"]) / "checkpoints" / "last.ckpt"
    run = tmp_path / "run" / "checkpoints"  # a copy, so the other tests' last.eval.json is not touched
    run.mkdir(parents=True)
    (run / "last.ckpt").write_bytes(ckpt.read_bytes())
    evaluate.main([str(run / "last.ckpt")])
    ema = json.loads((run / "last.eval.json").read_text())
    evaluate.main([str(run / "last.ckpt"), "--raw"])
    raw = json.loads((run / "last.raw.eval.json").read_text())
    assert json.loads((run / "last.eval.json").read_text()) == ema  # --raw left the EMA's result as it was
    assert result["module"].generator_ema is not None
    assert (ema["generator"], raw["generator"]) == ("ema", "raw")  # the EMA file would say "raw" if overwritten
    assert ema["protocol"] == raw["protocol"] and ema["step"] == raw["step"] == 3


def test_a_folder_of_the_same_samples_gives_the_same_numbers(evaluated_run, tmp_path, capsys):
    cfg, result = evaluated_run
    module = result["module"]
    evaluator = next(c for c in result["trainer"].callbacks if isinstance(c, EvalCallback)).evaluator
    folder = tmp_path / "samples"
    folder.mkdir()
    i = 0
    for inputs in evaluator.inputs(module):
        for image in module.sample(inputs):
            save_image(denormalize(image), folder / f"{i:05d}.png")
            i += 1
    overrides = EVAL + [f"eval.inception_weights={cfg.eval.inception_weights}"]
    evaluate.main([str(folder), *overrides, "--json", str(tmp_path / "folder.json")])
    from_folder = EvalResult.read_json(tmp_path / "folder.json")
    from_module = evaluator.evaluate(module)
    assert from_folder.protocol == from_module.protocol
    for key, value in from_module.values.items():
        assert_close(from_folder.values[key], value, rtol=1e-6, atol=1e-9)


def test_compare_refuses_results_whose_protocols_differ(tmp_path, capsys):
    protocol = {"feature_extractor": "inception-v3-compat", "num_generated": 10000, "num_real": 50000}
    EvalResult({"fid_10k": 10.0}, protocol).write_json(tmp_path / "a.json")
    EvalResult({"fid_10k": 8.5}, dict(protocol, seed=1)).write_json(tmp_path / "b.json")
    EvalResult({"fid_10k": 7.0}, dict(protocol, num_real=10000)).write_json(tmp_path / "c.json")
    assert evaluate.compare(str(tmp_path / "a.json"), str(tmp_path / "b.json")) == 0
    assert "-1.5" in capsys.readouterr().out
    assert evaluate.compare(str(tmp_path / "a.json"), str(tmp_path / "c.json")) == 1
    out = capsys.readouterr().out
    assert "not comparable" in out and "num_real: 50000 vs 10000" in out and "-3" not in out


def test_training_needing_weights_it_cannot_have_fails_at_start_up(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights-here"))
    from hydra import compose, initialize_config_dir

    from gansuite.cli.train import main
    from gansuite.config.keys import CONF_DIR

    overrides = ["trainer=debug", "logger=none", "eval.extractor=inception", "eval.download=false",
                 f"hydra.run.dir={tmp_path / 'run'}"]

    def no_training(*args, **kwargs):
        raise AssertionError("training started although the weights were missing")

    monkeypatch.setattr("lightning.Trainer.fit", no_training)
    with pytest.raises(SystemExit) as exit_info:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name="train", overrides=overrides)  # composes fine: the failure is the weights
        import sys

        monkeypatch.setattr(sys, "argv", ["gansuite-train", *overrides])
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gansuite-fetch-weights" in err and "eval.inception_weights" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_direction_of_better():
    assert short_name("fid_clf_10k") == "fid" and short_name("kid_std_10k") == "kid_std"
    assert is_better("fid_10k", 3.0, 4.0) and not is_better("fid_10k", 5.0, 4.0)
    assert is_better("is_10k", 5.0, 4.0) and is_better("cond_acc_clf_10k", 0.9, 0.8)
    assert is_better("fid_10k", 3.0, None) and not is_better("fid_10k", float("nan"), None)


def test_keep_best_must_name_a_computed_metric(evaluated_run):
    from gansuite.errors import ConfigError

    callback = next(c for c in evaluated_run[1]["trainer"].callbacks if isinstance(c, EvalCallback))
    with pytest.raises(ConfigError, match="eval.keep_best: 'lpips' is not computed"):
        EvalCallback(callback.evaluator, keep_best="lpips")


def test_fetch_weights_fills_the_cache_or_says_what_to_do(tmp_path, monkeypatch, capsys):
    from unittest import mock

    from gansuite.metrics.inception import INCEPTION_FILE, INCEPTION_URL

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    fetched = []

    def fake_download(url, dst, progress=True):
        fetched.append(url)
        Path(dst).write_bytes(b"weights")

    with mock.patch("torch.hub.download_url_to_file", fake_download):
        evaluate.fetch_main([])
        evaluate.fetch_main([])  # already there: no second download
        evaluate.fetch_main(["--dest", str(tmp_path / "shared")])
    assert fetched == [INCEPTION_URL, INCEPTION_URL]
    assert (tmp_path / "home" / "hub" / "checkpoints" / INCEPTION_FILE).read_bytes() == b"weights"
    assert (tmp_path / "shared" / INCEPTION_FILE).is_file()
    capsys.readouterr()

    def offline(url, dst, progress=True):
        raise OSError("no route to host")

    with mock.patch("torch.hub.download_url_to_file", offline), pytest.raises(SystemExit) as exit_info:
        evaluate.fetch_main(["--dest", str(tmp_path / "elsewhere")])
    assert exit_info.value.code == 2
    assert "eval.inception_weights" in capsys.readouterr().err


# ----------------------------------------------------------------------------- domain classifier
@pytest.fixture(scope="module")
def mnist_evaluator(gansuite_cache):
    """The default evaluation of the offline MNIST (its classifier is trained once per session)."""
    from gansuite.data.digits import OfflineMNIST
    from gansuite.metrics.eval_callback import make_evaluator

    datamodule = OfflineMNIST()
    evaluator = make_evaluator(datamodule, num_samples=1000, batch_size=250, cache_dir=gansuite_cache,
                               log=lambda m: None)
    return datamodule, evaluator


@pytest.mark.slow  # trains the offline MNIST classifier once per session (about a minute)
def test_offline_mnist_is_measured_by_its_domain_classifier(mnist_evaluator):
    datamodule, evaluator = mnist_evaluator
    p = evaluator.protocol
    assert p["feature_extractor"] == "classifier:mnist_offline-28px"
    assert p["classifier_heldout_accuracy"] >= 0.97 and p["num_real"] == 4000
    real = evaluator.evaluate_images(datamodule.heldout()[0].split(250))
    assert set(real.values) == {f"{m}_clf_1k" for m in ("fid", "is", "is_std", "kid", "kid_std", "precision",
                                                           "recall", "classes_covered", "class_kl")}
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fake = evaluator.evaluate_images(noise.split(250))
    # Held-out digits against the train digits: every class, the right proportions, FID far below noise's.
    assert real.values["classes_covered_clf_1k"] == 10
    assert real.values["class_kl_clf_1k"] < 0.01
    assert real.values["fid_clf_1k"] < 0.05 * fake.values["fid_clf_1k"]
    # k = 3 neighbourhoods of 4,000 train digits hold about 9 in 10 held-out digits: 0.896 with the shipped
    # classifier, the same on 1 and 2 threads (a classifier trained per machine gave 0.895 or 0.901 by thread count).
    assert real.values["precision_clf_1k"] > 0.85 and fake.values["precision_clf_1k"] < 0.1


class _Conditional(torch.nn.Module):
    """A stand-in class-conditional module: asked for class k, it returns a real held-out digit of class k+shift."""

    def __init__(self, digits: torch.Tensor, labels: torch.Tensor, shift: int) -> None:
        super().__init__()
        self.by_class = [digits[labels == k] for k in range(10)]
        self.shift = shift
        self.device = torch.device("cpu")

    def make_inputs(self, n, generator):
        return torch.randn(n, 4, generator=generator), torch.randint(10, (n,), generator=generator)

    def sample(self, inputs, ema=True):
        z, labels = inputs
        return torch.stack([self.by_class[(int(k) + self.shift) % 10][i % 100] for i, k in enumerate(labels)])


@pytest.mark.slow  # trains the offline MNIST classifier once per session (about a minute)
def test_conditional_accuracy_counts_samples_of_the_requested_class(mnist_evaluator):
    datamodule, evaluator = mnist_evaluator
    digits, labels = datamodule.heldout()
    right = evaluator.evaluate(_Conditional(digits, labels, shift=0)).values["cond_acc_clf_1k"]
    wrong = evaluator.evaluate(_Conditional(digits, labels, shift=1)).values["cond_acc_clf_1k"]
    assert right >= 0.97 and wrong <= 0.03


@pytest.mark.slow  # trains the offline MNIST classifier once per session (about a minute)
def test_stacked_mnist_modes_and_kl(gansuite_cache):
    import math

    from gansuite.data.digits import StackedMNIST
    from gansuite.metrics.eval_callback import make_evaluator

    datamodule = StackedMNIST(heldout_size=2000)
    evaluator = make_evaluator(datamodule, num_samples=2000, cache_dir=gansuite_cache, log=lambda m: None)
    assert evaluator.extractor is None and evaluator.protocol["classifier_dataset"] == "mnist_offline-28px"
    real = evaluator.evaluate_images(datamodule.heldout()[0].split(500)).values
    # 2,000 uniform draws over 1,000 modes hit 1000 (1 - 0.999^2000) = 865 of them in expectation.
    assert 800 <= real["stacked_modes_2k"] <= 920
    collapsed = datamodule.heldout(1)[0].expand(2000, -1, -1, -1)
    values = evaluator.evaluate_images(collapsed.split(500)).values
    assert values["stacked_modes_2k"] == 1
    assert_close(values["stacked_kl_2k"], math.log(1000), rtol=1e-9, atol=0)


@pytest.mark.slow  # trains the offline MNIST classifier once per session (about a minute)
def test_a_stacked_mnist_run_reports_its_modes(tmp_path):
    cfg = make_cfg(tmp_path, "data=stacked_mnist", "data.num_samples=64", "data.heldout_size=16", "eval=default",
                   "eval.num_samples=100", "eval.every_n_steps=2", "trainer.max_steps=2", "logger=csv")
    train(cfg)
    result = json.loads((tmp_path / "checkpoints" / "eval_step_000002.json").read_text())
    assert set(result["values"]) == {"stacked_modes_100", "stacked_kl_100"}
    assert 1 <= result["values"]["stacked_modes_100"] <= 100
    assert result["protocol"]["classifier_dataset"] == "mnist_offline-28px"
    rows = _csv_rows(tmp_path)
    assert any(row.get("best/stacked_modes_100") for row in rows)


def test_resumed_best_values_are_dropped_when_the_protocol_changed(evaluated_run):
    callback = next(c for c in evaluated_run[1]["trainer"].callbacks if isinstance(c, EvalCallback))
    state = callback.state_dict()
    fresh = EvalCallback(callback.evaluator, keep_best="fid")
    fresh.load_state_dict(state)
    assert fresh.best == callback.best and fresh.best
    other = dict(state, protocol=dict(state["protocol"], num_real=50000))
    fresh.load_state_dict(other)
    assert fresh.best == {}


def test_keep_best_auto_picks_fid_when_there_is_one(evaluated_run):
    callback = next(c for c in evaluated_run[1]["trainer"].callbacks if isinstance(c, EvalCallback))
    assert EvalCallback(callback.evaluator, keep_best="auto").monitor == "fid_8"
    assert EvalCallback(callback.evaluator, keep_best=None).monitor is None


# ----------------------------------------------------------------------------- FID at the device's pace
class _TinyExtractor(torch.nn.Module):
    """A fixed random embedding standing in for Inception: features and logits of flattened 1x4x4 images."""

    name, weights_sha256, feature_layer, logits_layer, resize, precision = "tiny", "0" * 64, "f", "l", "none", "exact"

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Linear(16, 6)
        self.logits = torch.nn.Linear(16, 5)

    def forward(self, x):
        flat = x.flatten(1)
        return {"features": self.features(flat), "logits": self.logits(flat)}


class _TinyModule:
    """make_inputs / sample, what the evaluator asks of a GAN module; batch ``nan_batch`` comes out NaN."""

    def __init__(self, nan_batch: int | None = None) -> None:
        self.net = torch.nn.Linear(4, 16)
        self.nan_batch, self.batches = nan_batch, 0

    def make_inputs(self, n, generator):
        return torch.randn(n, 4, generator=generator)

    def sample(self, z, ema=True):
        x = torch.tanh(self.net(z)).view(-1, 1, 4, 4)
        self.batches += 1
        return x * float("nan") if self.batches - 1 == self.nan_batch else x


def _tiny_evaluator(metrics, num_samples=50, batch_size=8):
    from gansuite.metrics.evaluator import Evaluator
    from gansuite.metrics.fidelity import Reference, gaussian_stats

    torch.manual_seed(0)
    extractor = _TinyExtractor()
    real = extractor(torch.rand(40, 1, 4, 4) * 2 - 1)
    features = real["features"].detach()
    mu, sigma = gaussian_stats(features)
    reference = Reference(key={"dataset": "test", "split": "train"}, features=features,
                          logits=real["logits"].detach(), labels=None, mu=mu, sigma=sigma)
    return Evaluator(extractor=extractor, reference=reference, metrics=metrics, num_samples=num_samples,
                     batch_size=batch_size)


def test_fid_from_streamed_statistics_equals_fid_of_the_concatenated_features():
    from gansuite.metrics.fidelity import frechet_distance, gaussian_stats

    evaluator = _tiny_evaluator(["fid"])
    assert evaluator._keep == set()  # FID alone holds no per-sample features
    module = _TinyModule()
    fid = evaluator.evaluate(module).values["fid_50"]
    # What the evaluation did before: every batch's features on the CPU, concatenated, float64 numpy.
    with torch.no_grad():
        feats = torch.cat([evaluator.extractor(module.sample(z))["features"] for z in evaluator.inputs(module)])
    mu, sigma = gaussian_stats(feats)
    ref = evaluator.reference
    expected = frechet_distance(mu, sigma, ref.mu, ref.sigma)
    assert expected > 0.01
    assert_close(fid, expected, rtol=1e-9, atol=0)
    # FID does not depend on which other metrics are asked for.
    everything = _tiny_evaluator(["fid", "is", "kid", "prc"])
    assert everything._keep == {"features", "logits"}
    assert_close(everything.evaluate(_TinyModule()).values["fid_50"], fid, rtol=0, atol=0)


def test_a_non_finite_sample_still_stops_the_evaluation():
    from gansuite.errors import NonFiniteLossError

    for metrics in (["fid"], ["fid", "is", "kid", "prc"]):
        evaluator = _tiny_evaluator(metrics)
        with pytest.raises(NonFiniteLossError, match="non-finite samples"):
            evaluator.evaluate(_TinyModule(nan_batch=3))
        images = [torch.rand(8, 1, 4, 4) for _ in range(7)]
        images[6][0, 0, 0, 0] = float("inf")  # the last batch: the check runs after the last one
        with pytest.raises(NonFiniteLossError, match="non-finite samples"):
            evaluator.evaluate_images(images)
        assert math.isfinite(evaluator.evaluate(_TinyModule()).values["fid_50"])  # the evaluator still works


def test_tf32_features_are_recorded_and_get_a_reference_of_their_own(tmp_path, inception_weights):
    from gansuite.data.digits import OfflineMNIST
    from gansuite.errors import ConfigError
    from gansuite.metrics.eval_callback import make_evaluator
    from gansuite.metrics.fidelity import protocol_differences

    options = dict(extractor="inception", metrics=["fid"], num_samples=4, num_real=4, batch_size=4,
                   inception_weights=str(inception_weights), cache_dir=tmp_path, log=lambda m: None)
    exact = make_evaluator(OfflineMNIST(), **options)
    fast = make_evaluator(OfflineMNIST(), precision="tf32", **options)
    assert exact.protocol["feature_precision"] == "exact" and fast.extractor.precision == "tf32"
    assert "feature_precision: 'exact' vs 'tf32'" in protocol_differences(exact.protocol, fast.protocol)
    assert fast.reference.key["precision"] == "tf32" and "precision" not in exact.reference.key
    assert len(list((tmp_path / "reference").glob("*.pt"))) == 2
    with pytest.raises(ConfigError, match="eval.precision: 'fp16' is unknown"):
        make_evaluator(OfflineMNIST(), precision="fp16", **options)


def test_eval_precision_from_the_config_reaches_the_evaluator(tmp_path, inception_weights):
    from gansuite.config.build import build_node
    from gansuite.training.run import make_evaluator

    cfg = make_cfg(tmp_path, *EVAL, f"eval.inception_weights={inception_weights}", "eval.precision=tf32",
                   "eval.metrics=[fid]", "eval.num_samples=4", "eval.num_real=4")
    assert cfg.eval.precision == "tf32"
    evaluator = make_evaluator(cfg, build_node("data", cfg.data), device="cpu")
    assert evaluator.protocol["feature_precision"] == "tf32"
