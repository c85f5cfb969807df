"""GANomaly and the one-class-out MNIST protocol: split rules, metrics and loss terms against hand values,
one training step, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from gansuite.data.anomaly import AnomalyMNIST
from gansuite.errors import ConfigError
from gansuite.metrics.anomaly import anomaly_metrics, auprc, auroc
from gansuite.models.ganomaly import ganomaly_terms
from gansuite.nets.ganomaly import EncoderDecoderEncoder, FeatureDiscriminator
from gansuite.training.run import train

from .conftest import assert_resume_is_bit_exact, build_tiny, make_cfg, trains


# ----------------------------------------------------------------------------- the protocol's splits
def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


def test_training_never_sees_the_anomalous_class_and_selection_never_sees_the_test_split():
    data = AnomalyMNIST(anomaly_class=3, validation_size=90, resolution=28)
    train_x, train_y = data.train_split()
    val_x, val_y = data.validation()
    test_x, test_y = data.heldout()
    assert (train_y != 3).all() and (val_y != 3).all()
    assert len(train_y) + len(val_y) == 4000 - 400  # the training split's 400 threes are gone
    assert len(val_y) == 90 and torch.bincount(val_y, minlength=10).tolist() == [10, 10, 10, 0, 10, 10, 10, 10, 10, 10]
    assert len(test_y) == 1000 and int(data.is_anomaly(test_y).sum()) == 100
    train_rows, val_rows, test_rows = _rows(train_x), _rows(val_x), _rows(test_x)
    assert not train_rows & val_rows and not train_rows & test_rows and not val_rows & test_rows
    assert data.protocol() == {"data": "mnist_anomaly3-28px-val90", "anomaly_class": 3, "train": 3510,
                               "validation": 90, "test": 1000, "test_anomalies": 100}


def test_the_splits_do_not_depend_on_the_seed():
    a = AnomalyMNIST(anomaly_class=0, seed=0)
    b = AnomalyMNIST(anomaly_class=0, seed=7)
    assert torch.equal(a.validation()[0], b.validation()[0]) and torch.equal(a.heldout()[0], b.heldout()[0])


@pytest.mark.parametrize("options", [{"anomaly_class": 10}, {"anomaly_class": True},
                                     {"anomaly_class": 0, "validation_size": -1}])
def test_bad_split_options_are_one_sentence_naming_the_key(options):
    with pytest.raises(ConfigError, match=r"data\.(anomaly_class|validation_size)"):
        AnomalyMNIST(**options)


# ----------------------------------------------------------------------------- metrics
def test_auroc_and_auprc_of_four_scores_match_hand_computation():
    scores, labels = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])
    # Pairs (anomaly, normal) ranked right: (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4); wrong: (0.35 < 0.4): 3/4.
    assert_close(auroc(scores, labels), 0.75, rtol=0, atol=1e-6)
    # Ranked by score: 0.8 (anomaly: precision 1/1), 0.4, 0.35 (anomaly: precision 2/3); mean over anomalies.
    assert_close(auprc(scores, labels), (1 + 2 / 3) / 2, rtol=0, atol=1e-6)
    assert_close(anomaly_metrics(scores, labels)["anomaly_share"], 0.5, rtol=0, atol=0)


def test_a_tie_counts_half_and_a_perfect_score_is_one():
    assert_close(auroc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])), 0.5, rtol=0, atol=1e-6)
    assert_close(auroc(torch.tensor([0.0, 0.1, 0.9]), torch.tensor([0, 0, 1])), 1.0, rtol=0, atol=1e-6)
    assert_close(auprc(torch.tensor([0.0, 0.1, 0.9]), torch.tensor([0, 0, 1])), 1.0, rtol=0, atol=1e-6)


def test_a_split_without_anomalies_is_refused():
    with pytest.raises(ConfigError, match="both normal and anomalous"):
        auroc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]))


# ----------------------------------------------------------------------------- networks and losses
def test_the_generator_reconstructs_and_encodes_twice_and_d_exposes_its_features():
    g = EncoderDecoderEncoder(shape=(1, 32, 32), latent_dim=6, width=4)
    d = FeatureDiscriminator(shape=(1, 32, 32), width=4)
    x = torch.randn(3, 1, 32, 32)
    x_hat, z, z_hat = g.codes(x)
    assert x_hat.shape == x.shape and z.shape == z_hat.shape == (3, 6)
    assert g(x).shape == x.shape and d(x).shape == (3,) and d.features(x).shape[0] == 3


def test_without_a_discriminator_the_loss_has_no_adversarial_term():
    x, x_hat, z = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5), torch.ones(1, 3)
    terms = ganomaly_terms(x, x_hat, z, z, None, {"adversarial": 1.0, "contextual": 1.0, "encoder": 0.0})
    assert "adversarial" not in terms
    assert_close(terms["loss"], torch.tensor(0.5))


def test_the_generator_loss_terms_match_hand_computation():
    x, x_hat = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    z, z_hat = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 3.0]])
    terms = ganomaly_terms(x, x_hat, z, z_hat, lambda t: 2 * t.flatten(1),
                           {"adversarial": 1.0, "contextual": 50.0, "encoder": 1.0})
    assert_close(terms["adversarial"], torch.tensor(4.0))  # mean((2 * 1 - 2 * 0)^2)
    assert_close(terms["contextual"], torch.tensor(1.0))  # mean |1 - 0|
    assert_close(terms["encoder"], torch.tensor(5.0))  # (1 + 9) / 2
    assert_close(terms["loss"], torch.tensor(4.0 + 50.0 + 5.0))


def test_the_anomaly_score_is_the_mean_squared_code_difference_in_eval_mode(tmp_path):
    _, datamodule, module = build_tiny(tmp_path, "model=ganomaly", "data=mnist_anomaly")
    x, _ = datamodule.heldout(5)
    module.generator.train()
    score = module.anomaly_score(x, ema=False)
    assert module.generator.training  # left as it was
    module.generator.eval()
    with torch.no_grad():
        _, z, z_hat = module.generator.codes(x)
    assert_close(score, ((z - z_hat) ** 2).mean(1), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- training
def test_one_step_logs_the_three_generator_terms(tmp_path):
    result = trains(tmp_path, "model=ganomaly", "data=mnist_anomaly", steps=1,
                    extra=("train/g_adversarial", "train/g_contextual", "train/g_encoder"))
    assert result["module"].examples.abs().sum() > 0  # held-out images to reconstruct in grids


def test_resume_is_bit_exact(tmp_path):
    common = ["model=ganomaly", "data=mnist_anomaly", "callbacks=none", "trainer.checkpoint_every=2"]
    assert_resume_is_bit_exact(tmp_path, *common)


def test_the_autoencoder_baseline_scores_by_reconstruction_error(tmp_path):
    _, datamodule, module = build_tiny(tmp_path, "model=conv_autoencoder", "data=mnist_anomaly")
    assert module.discriminator is None
    x, _ = datamodule.heldout(4)
    with torch.no_grad():
        module.generator.eval()
        x_hat = module.generator(x)
    assert_close(module.anomaly_score(x, ema=False), ((x - x_hat) ** 2).flatten(1).mean(1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model", ["ganomaly", "conv_autoencoder"])
def test_the_run_logs_test_auroc_and_auprc_with_their_protocol_and_a_picture(tmp_path, model):
    result = trains(tmp_path, f"model={model}", "data=mnist_anomaly", "data.anomaly_class=7", "callbacks=default",
                    "callbacks.anomaly_metrics.every_n_steps=2", "callbacks.anomaly_metrics.num_examples=4",
                    "callbacks.progress_bar=null", steps=2)
    record = json.loads((tmp_path / "eval" / "anomaly_step_000002.json").read_text())
    history = (tmp_path / "history.csv").read_text()
    assert f"2,val/auroc,{record['values']['auroc']!r}" in history and "2,val/auprc," in history
    # Test numbers: not where a checkpoint callback could select on them.
    assert "val/auroc" not in result["trainer"].callback_metrics
    assert 0.0 <= record["values"]["auroc"] <= 1.0 and 0.0 <= record["values"]["auprc"] <= 1.0
    assert record["protocol"]["anomaly_class"] == 7 and record["protocol"]["test"] == 1000
    assert record["protocol"]["test_anomalies"] == 100 and record["protocol"]["chance_auprc"] == pytest.approx(0.1)
    assert record["protocol"]["score"] == result["module"].score_definition
    with Image.open(tmp_path / "samples" / "anomaly_step_000002.png") as image:
        assert image.size == (4 * 34 + 2, 4 * 34 + 2)  # 4 columns; rows: high, reconstructions, low, reconstructions


def test_the_anomaly_callback_is_silent_for_other_families(tmp_path):
    trains(tmp_path, "model=dcgan", "callbacks=default", "callbacks.anomaly_metrics.every_n_steps=1",
           "callbacks.progress_bar=null", steps=1)
    assert not (tmp_path / "eval").exists() or not list((tmp_path / "eval").glob("anomaly_*"))


# ----------------------------------------------------------------------------- the one-class-out table
def _fake_run(root, name: str, model: str, anomaly_class: int, seed: int, auroc: float,
              data: str = "mnist_anomaly{k}-32px-val360") -> None:
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(f"model:\n  name: {model}\nseed: {seed}\n")
    record = {"step": 600, "values": {"auroc": auroc, "auprc": auroc / 2},
              "protocol": {"anomaly_class": anomaly_class, "data": data.format(k=anomaly_class)}}
    (run / "eval" / "anomaly_step_000300.json").write_text(json.dumps({**record, "step": 300, "values": {
        "auroc": 0.0, "auprc": 0.0}}))  # an earlier measurement: the last one counts
    (run / "eval" / "anomaly_step_000600.json").write_text(json.dumps(record))


def test_gansuite_aggregate_prints_the_one_class_out_table_with_hand_computed_means(tmp_path, capsys):
    from gansuite.cli import aggregate

    cells = {("ganomaly", 0): (0.9, 0.8), ("ganomaly", 1): (0.6, 0.7),
             ("conv_autoencoder", 0): (0.7, 0.7), ("conv_autoencoder", 1): (0.8, 0.8)}
    for i, ((model, k), values) in enumerate(cells.items()):
        for seed, value in enumerate(values):
            _fake_run(tmp_path, f"{i}-{seed}", model, k, seed, value)
    aggregate.main([str(tmp_path), "--json", str(tmp_path / "table.json")])
    out = capsys.readouterr().out
    assert "| anomaly class | ganomaly | conv_autoencoder |" in out
    assert "| 0 | 0.850 ± 0.050 | 0.700 ± 0.000 |" in out  # (0.9 + 0.8) / 2, std 0.0707 / sqrt(2)
    assert "| 1 | 0.650 ± 0.050 | 0.800 ± 0.000 |" in out
    assert "| mean | 0.750 ± 0.000 | 0.750 ± 0.000 |" in out  # per seed: (0.9 + 0.6) / 2 = (0.8 + 0.7) / 2
    assert "ganomaly above conv_autoencoder on 1 of 2 classes" in out
    table = json.loads((tmp_path / "table.json").read_text())
    assert_close(table["auprc"]["rows"][0]["ganomaly"]["mean"], 0.425, rtol=0, atol=1e-12)


def test_gansuite_aggregate_selected_reports_the_measurement_chosen_on_validation(tmp_path, capsys):
    from gansuite.cli import aggregate

    for seed, (last, chosen) in enumerate([(0.6, 0.9), (0.7, 0.8)]):
        _fake_run(tmp_path, f"f{seed}", "fanogan", 0, seed, last)
        _fake_run(tmp_path, f"g{seed}", "ganomaly", 0, seed, 0.5)
        for name, value in ((f"f{seed}", chosen), (f"g{seed}", 0.4)):
            (tmp_path / name / "eval" / "anomaly_selected.json").write_text(json.dumps(
                {"step": 300, "values": {"auroc": value, "auprc": 0.1}, "protocol": {"anomaly_class": 0}}))
    aggregate.main([str(tmp_path)])
    assert "| 0 | 0.500 ± 0.000 | 0.650 ± 0.050 |" in capsys.readouterr().out  # the last measurements
    aggregate.main([str(tmp_path), "--selected"])
    out = capsys.readouterr().out
    assert "| anomaly class | ganomaly | fanogan |" in out
    assert "| 0 | 0.400 ± 0.000 | 0.850 ± 0.050 |" in out  # (0.9 + 0.8) / 2, std 0.0707 / sqrt(2)
    (tmp_path / "f1" / "eval" / "anomaly_selected.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        aggregate.main([str(tmp_path), "--selected"])
    assert exit_info.value.code == 2 and "data.validation_anomalies" in capsys.readouterr().err


def test_with_validation_anomalies_the_run_selects_a_measurement_on_validation_alone(tmp_path):
    trains(tmp_path, "model=ganomaly", "data=mnist_anomaly", "data.validation_anomalies=6",
           "data.validation_size=18", "callbacks=default", "callbacks.anomaly_metrics.every_n_steps=1",
           "callbacks.progress_bar=null", steps=3)
    records = [json.loads((tmp_path / "eval" / f"anomaly_step_{s:06d}.json").read_text()) for s in (1, 2, 3)]
    for record in records:
        assert record["selection"]["normals"] == 18 and record["selection"]["anomalies"] == 6
        assert record["protocol"]["validation_anomalies"] == 6
    best = max(records, key=lambda r: (r["selection"]["auroc"], -r["step"]))  # the earliest of ties
    selected = json.loads((tmp_path / "eval" / "anomaly_selected.json").read_text())
    assert selected["step"] == best["step"] and selected["values"] == best["values"]
    history = (tmp_path / "history.csv").read_text()
    assert f"2,sel/auroc,{records[1]['selection']['auroc']!r}" in history


def test_without_validation_anomalies_nothing_is_selected(tmp_path):
    trains(tmp_path, "model=conv_autoencoder", "data=mnist_anomaly", "callbacks=default",
           "callbacks.anomaly_metrics.every_n_steps=1", "callbacks.progress_bar=null", steps=1)
    assert "selection" not in json.loads((tmp_path / "eval" / "anomaly_step_000001.json").read_text())
    assert not (tmp_path / "eval" / "anomaly_selected.json").exists()


def test_the_selection_survives_a_resume(tmp_path):
    common = ["model=ganomaly", "data=mnist_anomaly", "data.validation_anomalies=6", "data.validation_size=18",
              "callbacks=default", "callbacks.anomaly_metrics.every_n_steps=1", "callbacks.progress_bar=null",
              "trainer.checkpoint_every=2"]
    train(make_cfg(tmp_path / "first", *common, "trainer.max_steps=2"))
    result = train(make_cfg(tmp_path / "second", *common, "trainer.max_steps=3", f"resume={tmp_path / 'first'}"))
    callback = next(c for c in result["trainer"].callbacks if type(c).__name__ == "AnomalyMetrics")
    records = [json.loads(p.read_text()) for run in ("first", "second")
               for p in sorted((tmp_path / run / "eval").glob("anomaly_step_*.json"))]
    assert [r["step"] for r in records] == [1, 2, 3]
    best = max(records, key=lambda r: (r["selection"]["auroc"], -r["step"]))
    assert callback.selected["step"] == best["step"]
    # The resumed run's own folder holds the selection too, whichever run made it.
    assert json.loads((tmp_path / "second" / "eval" / "anomaly_selected.json").read_text())["step"] == best["step"]


def test_gansuite_aggregate_refuses_to_average_over_data_sets(tmp_path, capsys):
    from gansuite.cli import aggregate

    _fake_run(tmp_path, "mnist", "ganomaly", 0, 0, 0.9)
    _fake_run(tmp_path, "cifar", "ganomaly", 0, 1, 0.6, data="cifar10_anomaly{k}-32px-val4500")
    with pytest.raises(SystemExit) as exit_info:
        aggregate.main([str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "more than one data set" in err and "cifar10_anomaly-32px" in err
