"""Data parallelism (gansuite/training/distributed.py), the rank-aware data stream, mixed precision and speed options."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gansuite.data.base import InfiniteSampler
from gansuite.training.distributed import GANSyncBatchNorm, SyncBatchNorm
from gansuite.training.precision import PerOptimizerMixedPrecision
from gansuite.training.run import train
from tests.conftest import make_cfg

WORKER = Path(__file__).resolve().parent / "ddp_equivalence.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# ------------------------------------------------------------------------------ data stream
def test_ranks_share_one_stream_like_one_process_with_the_whole_batch():
    def batches(sampler, size, n):
        it = iter(sampler)
        return [[next(it) for _ in range(size)] for _ in range(n)]

    one = batches(InfiniteSampler(50, seed=3), 8, 12)  # past the end of a pass (50 samples)
    ranks = [batches(InfiniteSampler(50, seed=3, rank=r, world=2), 4, 12) for r in range(2)]
    for k in range(12):
        assert sorted(ranks[0][k] + ranks[1][k]) == sorted(one[k])
        assert not set(ranks[0][k]) & set(ranks[1][k])
    # A run that stopped after 5 global batches of 8 resumes on 4 ranks where the stream stopped.
    flat = [i for batch in one for i in batch]
    resumed = [batches(InfiniteSampler(50, seed=3, start=40, rank=r, world=4), 2, 3) for r in range(4)]
    for k in range(3):
        assert sorted(i for r in range(4) for i in resumed[r][k]) == sorted(flat[40 + 8 * k: 48 + 8 * k])


# ------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("loss", ["nonsaturating", "wgan_gp"])
def test_two_processes_end_where_one_process_with_twice_the_batch_ends(tmp_path, loss):
    """DCGAN (batch norm, synchronised) and WGAN-GP (double backward, n_critic 2): 2 x b == 1 x 2b after 4 steps."""
    _run([sys.executable, str(WORKER), "--out", str(tmp_path / "one.pt"), "--batch", "8", "--loss", loss], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
          str(WORKER), "--out", str(tmp_path / "two.pt"), "--batch", "4", "--loss", loss, "--devices", "2"], tmp_path)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["final"].keys() == two["final"].keys()
    moved = max((one["final"][k] - one["initial"][k]).abs().max().item()
                for k in one["final"] if one["final"][k].is_floating_point())
    assert moved > 1e-4  # both runs trained: equal final states are not just the shared initial state
    for key, value in one["final"].items():
        torch.testing.assert_close(two["final"][key], value, atol=1e-5, rtol=0, msg=key)

    # No module is wrapped in DDP, and each optimizer step reduces its own network's gradients only:
    # D's numel on every D update, G's on every G update (n_critic D updates, then one G update).
    assert two["wrapped"] != "DistributedDataParallel"
    d, g = two["sizes"]["discriminator"], two["sizes"]["generator"]
    n_critic = 2 if loss == "wgan_gp" else 1
    assert two["reduced"] == ([d] * n_critic + [g]) * 4


def test_trainer_ddp_runs_two_cpu_processes_and_resumes_on_one(tmp_path):
    """trainer=ddp from the command line: 2 processes, no unused-parameter error, then resumed on 1 device."""
    common = ["model=dcgan", "data=mnist_offline", "data.batch_size=8", "model.latent_dim=8",
              "model.generator.width=4", "model.discriminator.width=4", "callbacks=none", "eval=none",
              "logger=none"]
    first = tmp_path / "first"
    result = _run([sys.executable, "-m", "gansuite.cli.train", *common, "trainer=ddp", "trainer.accelerator=cpu",
                   "trainer.devices=2", "trainer.max_steps=3", "trainer.checkpoint_every=3",
                   f"hydra.run.dir={first}"], tmp_path)
    assert "find_unused_parameters" not in result.stderr + result.stdout
    checkpoint = torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["gansuite_step"] == 3
    assert checkpoint["gansuite_samples"] == 3 * 8 * 2  # 3 batches of 8 on each of 2 processes

    second = tmp_path / "second"
    _run([sys.executable, "-m", "gansuite.cli.train", *common, "trainer=cpu", "trainer.max_steps=5",
          "trainer.checkpoint_every=5", f"resume={first}", f"hydra.run.dir={second}"], tmp_path)
    checkpoint = torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["gansuite_step"] == 5
    assert checkpoint["gansuite_samples"] == 48 + 2 * 8  # then 2 batches of 8 on one process


def test_a_multirun_with_ddp_runs_each_trial_on_both_ranks(tmp_path):
    """Lightning restarts rank 1 with the command line, which under -m is the whole sweep; gansuite's launcher
    gives it this trial's overrides and directory instead, and the second trial starts a fresh process group."""
    sweep = tmp_path / "sweep"
    _run([sys.executable, "-m", "gansuite.cli.train", "-m", "model=dcgan", "data=mnist_offline", "data.batch_size=8",
          "model.latent_dim=8", "model.generator.width=4", "model.discriminator.width=4", "callbacks=none",
          "eval=none", "logger=none", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
          "trainer.max_steps=2", "trainer.checkpoint_every=2", "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]  # no sweep of rank 1's own
    for trial, seed in (("0", 0), ("1", 1)):
        rank1_log = (sweep / trial / "train_ddp_process_1.log").read_text()
        assert f"outputs in {sweep / trial}" in rank1_log  # rank 1 trained this trial, in this directory
        checkpoint = torch.load(sweep / trial / "checkpoints" / "last.ckpt", weights_only=False)
        assert checkpoint["gansuite_samples"] == 2 * 8 * 2  # both ranks took part
        assert checkpoint["gansuite_config"]["seed"] == seed


# ------------------------------------------------------------------------------ batch norm
def test_sync_batchnorm_plugin_swaps_layers_in_place_and_back():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)))
    weight, mean = net[1].weight, net[2][1].running_mean
    plugin = GANSyncBatchNorm()
    plugin.apply(net)
    assert isinstance(net[1], SyncBatchNorm) and isinstance(net[2][1], SyncBatchNorm)
    assert net[1].weight is weight and net[2][1].running_mean is mean  # optimizers keep their tensors
    x = torch.randn(6, 4)
    reference = nn.BatchNorm1d(4)
    reference.load_state_dict(net[1].state_dict())
    torch.testing.assert_close(net[1](x), reference(x), atol=1e-6, rtol=0)  # one process: plain batch norm
    plugin.revert(net)
    assert type(net[1]) is nn.BatchNorm1d and type(net[2][1]) is nn.BatchNorm2d
    assert net[1].weight is weight


# ------------------------------------------------------------------------------ precision
def test_bf16_mixed_run_on_the_cpu_stays_finite(tmp_path):
    result = train(make_cfg(tmp_path, "trainer.precision=bf16-mixed", "trainer.max_steps=3"))
    module = result["module"]
    assert result["step"] == 3
    for name, value in module.state_dict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name
    logged = result["trainer"].callback_metrics
    assert torch.isfinite(logged["train/d_loss"]) and torch.isfinite(logged["train/g_loss"])


def test_16_mixed_gives_each_optimizer_its_own_scaler(tmp_path):
    result = train(make_cfg(tmp_path, "trainer.precision=16-mixed", "trainer.max_steps=3"))
    plugin = result["trainer"].precision_plugin
    assert isinstance(plugin, PerOptimizerMixedPrecision)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert len(state["PerOptimizerMixedPrecision"]["scalers"]) == 2  # D's and G's


def test_an_overflow_in_one_optimizer_halves_only_its_own_scale():
    plugin = PerOptimizerMixedPrecision(device="cpu", init_scale=1024.0)
    d_param, g_param = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt_d, opt_g = torch.optim.SGD([d_param], lr=0.1), torch.optim.SGD([g_param], lr=0.1)

    class Module:  # what the plugin's optimizer_step asks of a LightningModule
        automatic_optimization = False
        trainer = None

    def update(opt, param, loss_scale):
        plugin.use_scaler_of(opt)
        opt.zero_grad()
        plugin.scaler.scale((param * loss_scale).sum()).backward()
        plugin.optimizer_step(opt, model=Module(), closure=lambda: None)

    from unittest import mock

    with mock.patch.object(PerOptimizerMixedPrecision, "_after_closure"):
        update(opt_d, d_param, float("inf"))  # D's gradients overflow: its step is skipped
        update(opt_g, g_param, 1.0)
    torch.testing.assert_close(d_param.detach(), torch.ones(3), atol=0, rtol=0)
    torch.testing.assert_close(g_param.detach(), torch.full((3,), 0.9), atol=1e-6, rtol=0)
    plugin.use_scaler_of(opt_d)
    assert plugin.scaler.get_scale() == 512.0
    plugin.use_scaler_of(opt_g)
    assert plugin.scaler.get_scale() == 1024.0
    saved = plugin.state_dict()["scalers"]
    assert [s["scale"] for s in saved] == [512.0, 1024.0]


# ------------------------------------------------------------------------------ speed options
def test_channels_last_and_compile_options_train(tmp_path):
    result = train(make_cfg(tmp_path, "trainer.channels_last=true", "trainer.compile={backend: eager}",
                            "trainer.max_steps=2"))
    module = result["module"]
    assert result["step"] == 2
    conv = next(m for m in module.discriminator.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert module.generator._compiled_call_impl is not None  # nn.Module.compile() in place
    assert any(k.startswith("generator.") for k in module.state_dict())  # checkpoint names unchanged


# ------------------------------------------------------------------------------ evaluation across ranks
class _Extractor(nn.Module):
    """A fixed random embedding standing in for Inception: features and logits of flattened images."""

    name, weights_sha256, feature_layer, logits_layer, resize = "test-extractor", "0" * 64, "f", "l", "none"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Linear(16, 6)
        self.logits = nn.Linear(16, 5)

    def forward(self, x):
        flat = x.flatten(1)
        return {"features": self.features(flat), "logits": self.logits(flat)}


class _Module:
    """make_inputs / sample: what the evaluator asks of a GAN module."""

    def __init__(self) -> None:
        self.net = nn.Linear(4, 16)

    def make_inputs(self, n, generator):
        return torch.randn(n, 4, generator=generator)

    def sample(self, z, ema=True):
        return torch.tanh(self.net(z)).view(-1, 1, 4, 4)


def _evaluator_and_module():
    from gansuite.metrics.evaluator import Evaluator
    from gansuite.metrics.fidelity import Reference, gaussian_stats

    torch.manual_seed(0)
    extractor, module = _Extractor(), _Module()
    real = extractor(torch.rand(12, 1, 4, 4) * 2 - 1)
    mu, sigma = gaussian_stats(real["features"].detach())
    reference = Reference(key={"dataset": "test", "split": "train"}, features=real["features"].detach(),
                          logits=real["logits"].detach(), labels=None, mu=mu, sigma=sigma)
    # 10 samples in batches of 3: batches of 3, 3, 3 and 1, so 3 ranks hold 2, 1 and 1 batches.
    evaluator = Evaluator(extractor=extractor, reference=reference, metrics=["fid", "is", "kid", "prc"],
                          num_samples=10, batch_size=3)
    return evaluator, module


def _evaluate_on_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        evaluator, module = _evaluator_and_module()
        result = evaluator.evaluate(module, rank=rank, world=world)
        assert (result is None) == (rank != 0)
        if rank == 0:
            torch.save(result.values, out)
    finally:
        dist.destroy_process_group()


def test_evaluation_over_three_uneven_ranks_equals_one_process(tmp_path):
    evaluator, module = _evaluator_and_module()
    one = evaluator.evaluate(module).values
    torch.multiprocessing.spawn(_evaluate_on_rank, args=(3, _free_port(), str(tmp_path / "three.pt")), nprocs=3)
    three = torch.load(tmp_path / "three.pt")
    assert set(three) == set(one) == {"fid_10", "is_10", "is_std_10", "kid_10", "kid_std_10", "precision_10",
                                      "recall_10"}
    for key, value in one.items():
        torch.testing.assert_close(three[key], value, atol=1e-9, rtol=1e-9, msg=key)


def test_ada_under_ddp_adapts_p_from_both_ranks_scores(tmp_path):
    """augment=ada on 2 processes: r_t is reduced over the ranks every interval, and p moves by the global batch."""
    common = ["model=dcgan", "data=mnist_offline", "data.batch_size=8", "model.latent_dim=8",
              "model.generator.width=4", "model.discriminator.width=4", "callbacks=none", "eval=none",
              "logger=none", "augment=ada", "augment.fn.interval=1", "augment.fn.speed_kimg=0.16",
              "augment.fn.initial_p=0.5"]
    run = tmp_path / "ddp"
    _run([sys.executable, "-m", "gansuite.cli.train", *common, "trainer=ddp", "trainer.accelerator=cpu",
          "trainer.devices=2", "trainer.max_steps=3", "trainer.checkpoint_every=3", f"hydra.run.dir={run}"],
         tmp_path)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    # Each update moves p by +-(8 images x 2 ranks) / 160 = 0.1 from 0.5 (never down to 0): after 3 updates
    # 0.2, 0.4, 0.6 or 0.8. Counting one rank's 8 images would move it by 0.05 (0.35 ... 0.65).
    p = float(state["augment.p"])
    assert min(abs(p - v) for v in (0.2, 0.4, 0.6, 0.8)) < 1e-5, p
    # r_t of the last update: signs of 16 scores (both ranks), so a multiple of 1/16 in [-1, 1].
    rt = float(state["augment.last_rt"])
    assert -1.0 <= rt <= 1.0 and (rt * 16) == round(rt * 16)
