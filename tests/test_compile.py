"""trainer.compile: which graphs a compiled run makes, and that it trains what an eager run trains.

The fast tests compile with ``backend: aot_eager``: Dynamo's guards and recompiles and AOTAutograd
(which refuses double backward) are the same as with Inductor, without minutes of C++ builds on a
CPU. One slow test runs Inductor itself.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from gansuite.training.run import _compile_for_training, train

from .conftest import make_cfg

AOT_EAGER = "trainer.compile={backend: aot_eager}"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Compiled code and counters of other tests would hide this test's compiles."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _frames() -> int:
    """Frames Dynamo has compiled: each network's first compile plus every recompile."""
    return counters["frames"]["total"]


def _weights(module) -> torch.Tensor:
    nets = (module.generator, module.discriminator, module.generator_ema)
    return torch.cat([p.detach().flatten() for net in nets for p in net.parameters()])


def test_compiled_dcgan_trains_like_eager_with_one_graph_per_grad_pattern(tmp_path):
    # The sample grid draws from the raw G (ema: false) every step: eval-mode calls, which must not compile.
    common = ("trainer.max_steps=3", "callbacks.sample_grid.every_n_steps=1", "callbacks.sample_grid.ema=false")
    eager = train(make_cfg(tmp_path / "eager", *common))["module"]
    assert _frames() == 0
    compiled = train(make_cfg(tmp_path / "compiled", *common, AOT_EAGER))["module"]
    # G: one graph (always called with grad when n_critic=1). D: one for real and detached fakes,
    # one for fakes that carry G's graph (input requires grad, D's own parameters do not).
    assert _frames() == 3, dict(counters["frames"])
    assert counters["graph_break"] == {}
    # Same math: aot_eager runs eager's kernels (0 apart here); a 1 % change of G's lr moves weights 1e-4.
    torch.testing.assert_close(_weights(compiled), _weights(eager), rtol=0, atol=1e-6)

    z = torch.randn(5, 8)  # a batch size training never used, in eval mode: runs eagerly
    samples = compiled.sample(z, ema=False)
    assert _frames() == 3
    with torch.no_grad():
        compiled.generator.eval()
        assert torch.equal(samples, compiled.generator._call_impl(z))
        compiled.generator.train()


def test_compiled_wgan_gp_runs_its_penalty_eagerly_and_trains_like_eager(tmp_path):
    # The penalty's backward is a double backward, which compiled graphs refuse (at the first D step).
    common = ("loss=wgan_gp", "model.discriminator.norm=layer", "trainer.max_steps=2", "callbacks=none")
    eager = train(make_cfg(tmp_path / "eager", *common))["module"]
    compiled = train(make_cfg(tmp_path / "compiled", *common, AOT_EAGER))["module"]
    # G: with grad (G steps) and without (the other critic steps); D: real and detached fakes, G's fakes.
    assert _frames() == 4, dict(counters["frames"])
    torch.testing.assert_close(_weights(compiled), _weights(eager), rtol=0, atol=1e-6)


def test_a_module_dict_has_its_members_compiled():
    pair = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)})  # CycleGAN calls the members, never the dict
    _compile_for_training(pair, {"backend": "aot_eager", "dynamic": False})
    pair["a"](torch.randn(4, 3))
    assert _frames() == 1
    pair.eval()
    pair["b"](torch.randn(7, 3))
    assert _frames() == 1


@pytest.mark.slow
def test_inductor_compiled_dcgan_trains_like_eager(tmp_path):
    common = ("trainer.max_steps=3", "callbacks=none")
    eager = train(make_cfg(tmp_path / "eager", *common))["module"]
    compiled = train(make_cfg(tmp_path / "compiled", *common, "trainer.compile=true"))["module"]
    assert _frames() == 3
    # Inductor fuses and reorders float sums: 3e-8 apart here. A 1 % change of G's lr moves them 1e-4.
    torch.testing.assert_close(_weights(compiled), _weights(eager), rtol=0, atol=1e-6)
