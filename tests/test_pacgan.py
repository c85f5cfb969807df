"""The PacGAN 2D benchmark: the paper's layers, the presets, eval/modes.json and gansuite-aggregate."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.testing import assert_close

from gansuite.cli.aggregate import main as aggregate_main
from gansuite.config.keys import CONF_DIR
from gansuite.errors import ConfigError
from gansuite.metrics.summary import summarize
from gansuite.nets.mlp import Discriminator, Generator, MaxoutLinear
from gansuite.training.callbacks import Scatter2D
from gansuite.training.run import train

from .conftest import make_cfg

PRESETS = ["pacgan_ring8", "pacgan_grid25"]


# ---------------------------------------------------------------- layers


def test_maxout_keeps_the_largest_of_each_units_pieces():
    layer = MaxoutLinear(2, 2, pieces=3)
    with torch.no_grad():
        # Rows 0-2 are unit 0's pieces, rows 3-5 unit 1's (Blocks' LinearMaxout layout).
        layer.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0],
                                                [2.0, 0.0], [0.0, -2.0], [1.0, 1.0]]))
        layer.linear.bias.copy_(torch.tensor([0.0, 0.5, 0.0, -1.0, 0.0, 0.0]))
    x = torch.tensor([[1.0, 2.0], [-3.0, 1.0]])
    # Pieces for x0: unit 0 (1, 2.5, -3), unit 1 (1, -4, 3); for x1: unit 0 (-3, 1.5, 2), unit 1 (-7, -2, -2).
    assert_close(layer(x), torch.tensor([[2.5, 3.0], [2.0, -2.0]]))


def test_maxout_shapes():
    layer = MaxoutLinear(4, 200, pieces=5)
    assert layer.linear.weight.shape == (1000, 4)
    assert layer(torch.randn(7, 4)).shape == (7, 200)
    assert layer(torch.randn(3, 5, 4)).shape == (3, 5, 200)


def test_pacgan_generator_is_four_batch_normed_relu_layers_from_a_2d_latent():
    g = Generator(shape=(2,), latent_dim=2, width=400, depth=4, activation="relu", batch_norm=True, init_std=0.02)
    linears = [m for m in g.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in g.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [tuple(m.weight.shape) for m in linears] == [(400, 2), (400, 400), (400, 400), (400, 400), (2, 400)]
    assert [m.bias is None for m in linears] == [True] * 4 + [False]  # the norm's shift replaces the bias
    assert len(norms) == 4 and all(n.momentum == 0.05 and n.eps == 1e-4 for n in norms)
    assert sum(isinstance(m, nn.ReLU) for m in g.net) == 4
    weights = torch.cat([m.weight.flatten() for m in linears[1:4]])
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert torch.count_nonzero(linears[-1].bias) == 0
    assert g(torch.randn(10, 2)).shape == (10, 2)
    g.eval()
    assert g(torch.randn(1, 2)).shape == (1, 2)  # population statistics: one sample is fine


def test_pacgan_discriminator_is_three_maxout_layers_over_the_packed_input():
    d = Discriminator(shape=(2,), width=200, depth=3, maxout_pieces=5, init_std=0.02, pack=4)
    maxouts = [m for m in d.modules() if isinstance(m, MaxoutLinear)]
    assert [tuple(m.linear.weight.shape) for m in maxouts] == [(1000, 8), (1000, 200), (1000, 200)]
    assert not any(isinstance(m, nn.LeakyReLU) for m in d.modules())
    # 3 maxout layers (in*1000 + 1000 each) and the 200 -> 1 head.
    assert sum(p.numel() for p in d.parameters()) == (8 + 200 + 200) * 1000 + 3 * 1000 + 201
    assert d(torch.randn(12, 2)).shape == (3,)


def test_default_networks_are_unchanged():
    assert not any(isinstance(m, (MaxoutLinear, nn.BatchNorm1d)) for m in Discriminator(shape=(2,)).modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in Generator(shape=(2,)).modules())
    assert sum(isinstance(m, nn.LeakyReLU) for m in Generator(shape=(2,)).net) == 3


def test_maxout_with_spectral_norm_and_dropout_builds():
    d = Discriminator(shape=(2,), width=8, depth=2, maxout_pieces=2, spectral_norm=True, dropout=0.5, init_std=0.02)
    assert d(torch.randn(5, 2)).shape == (5,)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_maxout_pieces_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="maxout_pieces"):
        Discriminator(shape=(2,), maxout_pieces=bad)


def test_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="activation"):
        Generator(shape=(2,), activation="tanh")


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("pack", [1, 3])
def test_preset_has_the_papers_settings(preset, pack):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={preset}", f"model.discriminator.pack={pack}"])
    assert cfg.data.batch_size == 100 * pack  # 100 packed groups per batch
    assert cfg.data.modes == preset.split("_")[1]
    assert cfg.model.latent_dim == 2 and cfg.model.module.ema_decay is None
    for opt in (cfg.model.g_optimizer, cfg.model.d_optimizer):
        assert opt.lr == 1e-4 and list(opt.betas) == [0.8, 0.999]
    assert cfg.loss.name == "nonsaturating"
    assert cfg.trainer.max_steps == 400_000  # 400 epochs x 1,000 batches
    assert cfg.callbacks.scatter_2d.every_n_steps == cfg.trainer.max_steps
    assert cfg.callbacks.scatter_2d.num_samples == 2500


@pytest.mark.parametrize(("preset", "pack", "num_modes"), [("pacgan_ring8", 2, 8), ("pacgan_grid25", 4, 25)])
def test_preset_trains_and_writes_its_final_mode_metrics(tmp_path, preset, pack, num_modes):
    # Tiny widths and batch (tests/conftest.py TINY), the preset's everything else; seed 3 to see it recorded.
    result = train(make_cfg(tmp_path, f"experiment={preset}", f"model.discriminator.pack={pack}", "seed=3",
                            "trainer.max_steps=2", "logger=none"))
    assert result["step"] == 2
    # Only the end of training is plotted, once, although the callback also runs at on_train_end.
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["step_000002.png"]
    (scatter,) = [c for c in result["trainer"].callbacks if isinstance(c, Scatter2D)]
    stats = scatter.last_stats
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["modes.json"]  # no temporary file left
    record = json.loads((tmp_path / "eval" / "modes.json").read_text())
    assert record == {
        "protocol": "veegan-pacgan-modes",
        "step": 2,
        "modes": stats.modes,
        "high_quality": stats.high_quality,
        "reverse_kl": stats.reverse_kl if math.isfinite(stats.reverse_kl) else None,
        "num_modes": num_modes,
        "num_samples": 2500,
        "threshold": 3.0,
        "sample_seed": 1234,
        "ema": False,
        "data": {"modes": preset.split("_")[1], "std": 0.01 if num_modes == 8 else 0.05},
        "pack": pack,
        "seed": 3,
    }


def test_modes_json_holds_the_latest_evaluation(tmp_path):
    result = train(make_cfg(tmp_path, "model=gan", "data=ring8", "trainer.max_steps=3",
                            "callbacks.scatter_2d.every_n_steps=2"))
    assert len(list((tmp_path / "samples").glob("*.png"))) == 2  # step 2, then step 3 at the end
    record = json.loads((tmp_path / "eval" / "modes.json").read_text())
    (scatter,) = [c for c in result["trainer"].callbacks if isinstance(c, Scatter2D)]
    assert record["step"] == 3 and record["modes"] == scatter.last_stats.modes
    assert record["pack"] == 1 and record["ema"] is True


# ---------------------------------------------------------------- gansuite-aggregate


def _fake_run(root, name, *, data="ring8", pack=1, seed=0, modes=8, hq=0.9, rkl=0.1, step=400_000, hydra=True):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "modes.json").write_text(json.dumps({
        "protocol": "veegan-pacgan-modes", "step": step, "modes": modes, "high_quality": hq, "reverse_kl": rkl,
        "num_modes": 8 if data == "ring8" else 25, "num_samples": 2500, "threshold": 3.0,
        "data": {"modes": data, "std": 0.01}, "pack": pack, "seed": seed,
    }))
    if hydra:
        (run / ".hydra").mkdir()
        # As Hydra writes it: unresolved, with interpolations that only resolve inside a Hydra run.
        (run / ".hydra" / "config.yaml").write_text(
            f"paths:\n  output_dir: ${{hydra:runtime.output_dir}}\n"
            f"data:\n  modes: {data}\n  seed: ${{seed}}\n  batch_size: ${{oc.decode:'${{model.discriminator.pack}}00'}}\n"
            f"model:\n  discriminator:\n    pack: {pack}\nseed: {seed}\n"
        )
    return run


def test_summarize_is_the_mean_and_standard_error():
    s = summarize([6.0, 7.0, 8.0])
    assert s.mean == 7.0 and s.sem == pytest.approx(1 / math.sqrt(3))
    assert summarize([5.0]).sem is None
    assert summarize([0.1, math.inf]).mean == math.inf


def test_aggregate_groups_runs_into_rows_beside_the_paper(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    # GAN on the ring, 3 seeds: modes 6, 7, 8 -> 7.0 ± 1/sqrt(3); HQ 0.97, 0.98, 0.99 -> 98.0 ± 0.6 %.
    for seed, (modes, hq, rkl) in enumerate([(6, 0.97, 0.5), (7, 0.98, 0.3), (8, 0.99, 0.1)]):
        _fake_run(sweep, str(seed), seed=seed, modes=modes, hq=hq, rkl=rkl)
    _fake_run(sweep, "3", pack=2, seed=0, modes=8, hq=0.95, rkl=0.05)  # one run: no ± term
    _fake_run(sweep, "4", data="grid25", pack=3, seed=0, modes=24, hq=0.9, rkl=None, hydra=False)  # not in Table 1
    (sweep / "5").mkdir()  # a run that never finished: skipped
    aggregate_main([str(sweep), "--json", str(tmp_path / "table.json")])
    lines = capsys.readouterr().out.splitlines()
    gan = next(line for line in lines if line.startswith("ring8") and " GAN " in line)
    assert gan.split()[:4] == ["ring8", "GAN", "3", "400000"]
    assert "7.0 ± 0.6" in gan and "98.0 ± 0.6" in gan and "0.30 ± 0.12" in gan
    assert gan.split()[-3:] == ["6.3", "98.2", "0.45"]
    pac2 = next(line for line in lines if "PacGAN2" in line)
    assert "8.0" in pac2 and "±" not in pac2 and pac2.split()[-3:] == ["7.9", "95.6", "0.07"]
    pac3 = next(line for line in lines if "PacGAN3" in line)
    assert pac3.startswith("grid25") and "inf" in pac3 and pac3.split()[-3:] == ["—", "—", "—"]

    table = json.loads((tmp_path / "table.json").read_text())
    rows = {(r["data"], r["pack"]): r for r in table["rows"]}
    assert list(rows) == [("ring8", 1), ("ring8", 2), ("grid25", 3)]
    gan = rows[("ring8", 1)]
    assert gan["n"] == 3 and gan["seeds"] == [0, 1, 2]
    assert gan["modes"]["mean"] == pytest.approx(7.0)
    assert gan["modes"]["sem"] == pytest.approx(1 / math.sqrt(3))
    assert gan["high_quality"]["mean"] == pytest.approx(0.98)
    assert gan["high_quality"]["sem"] == pytest.approx(0.01 / math.sqrt(3))
    assert gan["reverse_kl"]["sem"] == pytest.approx(0.2 / math.sqrt(3))
    assert gan["paper"] == {"modes": 6.3, "high_quality": pytest.approx(0.982), "reverse_kl": 0.45}
    assert rows[("ring8", 2)]["modes"] == {"mean": 8.0, "sem": None}
    assert rows[("grid25", 3)]["reverse_kl"] == {"mean": None, "sem": None} and rows[("grid25", 3)]["paper"] is None


def test_aggregate_takes_run_directories_and_their_own_json(tmp_path, capsys):
    a = _fake_run(tmp_path, "a", data="grid25", pack=4, seed=1, modes=25, hydra=False)
    b = _fake_run(tmp_path, "b", data="grid25", pack=4, seed=2, modes=23, hydra=False)
    aggregate_main([str(a), str(b / "eval" / "modes.json")])
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("grid25")]
    assert row.split()[:3] == ["grid25", "PacGAN4", "2"] and "24.0 ± 1.0" in row
    assert row.split()[-3:] == ["24.8", "93.6", "0.04"]


def test_aggregate_without_runs_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for args in ([str(tmp_path / "empty")], [str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as exit_info:
            aggregate_main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("gansuite-aggregate: error: ") and err.count("\n") == 1
