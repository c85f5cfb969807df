"""gansuite-sample: grids, folders for gansuite-eval, classes, seeds, interpolation, InfoGAN code sweeps."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch.testing import assert_close
from torchvision.utils import save_image

from gansuite import sampling as sample
from gansuite.cli import sample as cli_sample
from gansuite.cli.evaluate import load_images
from gansuite.config import loading as config_loading
from gansuite.data.base import denormalize
from gansuite.metrics.evaluator import Evaluator
from gansuite.models.gan import ConditionalGAN
from gansuite.models.schedule import AdversarialModule
from gansuite.sampling import slerp
from gansuite.training.run import train

from .conftest import make_cfg


# ----------------------------------------------------------------------------------------- slerp
def test_slerp_returns_its_endpoints_exactly():
    a = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    b = torch.randn(3, 7, generator=torch.Generator().manual_seed(1))
    assert_close(slerp(a, b, 0.0), a, rtol=0, atol=0)
    assert_close(slerp(a, b, 1.0), b, rtol=0, atol=0)
    path = slerp(a[:, None], b[:, None], torch.linspace(0, 1, 4))
    assert path.shape == (3, 4, 7) and path.dtype == a.dtype
    assert_close(path[:, 0], a, rtol=0, atol=0)
    assert_close(path[:, -1], b, rtol=0, atol=0)


def test_slerp_of_orthogonal_unit_vectors_is_the_quarter_circle():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    t = torch.linspace(0, 1, 9)
    path = slerp(e1, e2, t)
    # Closed form: (cos(t pi/2), sin(t pi/2), 0), on the unit circle all the way.
    expected = torch.stack([torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2), torch.zeros(9)], 1)
    assert_close(path, expected, rtol=0, atol=1e-7)
    assert_close(path.norm(dim=1), torch.ones(9), rtol=0, atol=1e-6)
    # Linear interpolation cuts the corner: its midpoint has norm 1/sqrt(2). That shrinkage is why
    # Gaussian z is walked spherically: in D dimensions z lies near the shell |z| = sqrt(D), and
    # a lerp midpoint between two draws sits at about sqrt(D/2), where G saw no training inputs.
    assert_close(torch.lerp(e1, e2, 0.5).norm(), torch.tensor(1 / math.sqrt(2)), rtol=0, atol=1e-7)


def test_slerp_between_orthogonal_vectors_of_different_norms_matches_the_formula():
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 3.0])
    t = torch.tensor([0.25, 0.5])
    expected = torch.stack([2 * torch.cos(t * math.pi / 2), 3 * torch.sin(t * math.pi / 2)], 1)
    assert_close(slerp(a, b, t), expected, rtol=0, atol=1e-6)


def test_slerp_falls_back_to_lerp_for_parallel_opposite_and_zero_vectors():
    t = torch.linspace(0, 1, 5)
    for a, b in [(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])),       # parallel
                 (torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -2.0])),     # opposite: no unique great circle
                 (torch.zeros(2), torch.tensor([3.0, -1.0]))]:               # zero: no direction at all
        path = slerp(a, b, t)
        assert torch.isfinite(path).all()
        assert_close(path, a + t[:, None] * (b - a), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    """A tiny MLP GAN on 28 px digits trained 2 steps, with the training run's own sample grid at step 2.

    Not DCGAN: after 2 steps DCGAN's eval-mode batch norm still uses its initial running statistics
    and its images hardly vary with z (all within one 8-bit level), so seed tests could not fail.
    """
    tmp = tmp_path_factory.mktemp("gan")
    train(make_cfg(tmp, "model=gan", "trainer.max_steps=2", "trainer.checkpoint_every=2",
                   "callbacks.sample_grid.every_n_steps=2", "callbacks.progress_bar=null"))
    return tmp


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cgan")
    train(make_cfg(tmp, "model=cgan", "trainer.max_steps=2", "trainer.checkpoint_every=2", "callbacks=none"))
    return tmp


def _pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8).clone()


def _fails(capsys, argv: list[str], *words: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli_sample.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    for word in words:
        assert word in err, err
    return err


def test_grid_redraws_the_training_runs_grid_of_that_checkpoint(gan_run, tmp_path, capsys):
    # callbacks.sample_grid draws make_inputs(64) from seed 1234 on the EMA generator, 8 per row.
    cli_sample.main([str(gan_run), "--grid", str(tmp_path / "grid.png"), "--seed", "1234"])
    assert "EMA generator" in capsys.readouterr().out
    assert _pixels(tmp_path / "grid.png").unique().numel() > 50  # digits-like noise, not a flat image
    assert torch.equal(_pixels(tmp_path / "grid.png"), _pixels(gan_run / "samples" / "step_000002.png"))
    with Image.open(tmp_path / "grid.png") as image:
        assert image.size == (8 * 30 + 2, 8 * 30 + 2)  # 8x8 tiles of 28 px with torchvision's 2 px padding
    cli_sample.main([str(gan_run), "--grid", str(tmp_path / "wide.png"), "-n", "6", "--nrow", "3"])
    with Image.open(tmp_path / "wide.png") as image:
        assert image.size == (3 * 30 + 2, 2 * 30 + 2)


def test_same_seed_same_files_other_seed_other_files(gan_run, tmp_path):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        cli_sample.main([str(gan_run), "--grid", str(tmp_path / f"{name}.png"), "-n", "16", "--seed", seed])
        cli_sample.main([str(gan_run), "--folder", str(tmp_path / name), "-n", "5", "--seed", seed])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()
    files = {name: sorted((tmp_path / name).iterdir()) for name in "abc"}
    assert [p.name for p in files["a"]] == [f"{i:05d}.png" for i in range(5)]
    assert [p.read_bytes() for p in files["a"]] == [p.read_bytes() for p in files["b"]]
    # A 2-step DCGAN's images vary little with z: some 8-bit files may coincide, not all.
    assert [p.read_bytes() for p in files["a"]] != [p.read_bytes() for p in files["c"]]


def test_folder_holds_the_evaluators_samples_and_gansuite_eval_reads_it(gan_run, tmp_path):
    folder = tmp_path / "samples"
    cli_sample.main([str(gan_run), "--folder", str(folder), "-n", "10", "--batch-size", "4"])
    images = load_images(folder, (1, 28, 28), 10)  # what gansuite-eval FOLDER reads
    module, *_ = config_loading.load_module(gan_run)
    # The evaluation's own input stream (eval.seed=0, batch 4), quantized as a PNG stores it.
    stream = Evaluator.inputs(SimpleNamespace(seed=0, num_samples=10, batch_size=4), module)
    expected = torch.cat([module.sample(inputs) for inputs in stream])
    assert_close(images, denormalize(expected).mul(255).add(0.5).clamp(0, 255).to(torch.uint8), rtol=0, atol=0)


def test_raw_samples_the_trained_generator_and_the_default_is_the_ema(gan_run, tmp_path, capsys, monkeypatch):
    # After 2 steps the EMA is within an 8-bit level of the trained weights: watch which one is asked for.
    asked, original = [], AdversarialModule.sample
    monkeypatch.setattr(AdversarialModule, "sample", lambda self, inputs, ema=True: asked.append(ema)
                        or original(self, inputs, ema=ema))
    cli_sample.main([str(gan_run), "--grid", str(tmp_path / "raw.png"), "-n", "4", "--raw"])
    assert asked[-1] is False and "trained generator" in capsys.readouterr().out
    cli_sample.main([str(gan_run), "--grid", str(tmp_path / "ema.png"), "-n", "4"])
    assert asked[-1] is True and "EMA generator" in capsys.readouterr().out
    module, *_ = config_loading.load_module(gan_run)
    inputs = module.make_inputs(4, torch.Generator().manual_seed(0))
    save_image(denormalize(original(module, inputs, ema=False)), tmp_path / "expected.png", nrow=2)
    assert torch.equal(_pixels(tmp_path / "raw.png"), _pixels(tmp_path / "expected.png"))


def test_an_interrupted_folder_leaves_only_complete_pngs(gan_run, tmp_path, monkeypatch):
    import gansuite.outputs

    real_save, written = gansuite.outputs.save_png, []

    def dies_on_the_third(image, fp, **kwargs):
        written.append(Path(fp))
        if len(written) == 3:
            Path(fp).write_bytes(b"\x89PNG half")  # a truncated image, then the crash
            raise KeyboardInterrupt
        real_save(image, fp, **kwargs)

    monkeypatch.setattr(gansuite.outputs, "save_png", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        cli_sample.main([str(gan_run), "--folder", str(tmp_path / "out"), "-n", "5"])
    # Each write went to a hidden .tmp name, which gansuite-eval skips even if a kill left it behind.
    assert all(p.name.startswith(".") and p.suffix == ".tmp" for p in written)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.png", "00001.png"]
    assert load_images(tmp_path / "out", (1, 28, 28), 2).shape == (2, 1, 28, 28)


def test_interpolation_rows_walk_between_two_draws(gan_run, tmp_path):
    module, *_ = config_loading.load_module(gan_run)
    rows, steps = 3, 5
    path = sample.interpolation_inputs(module, rows, steps, seed=0).reshape(rows, steps, -1)
    ends = module.make_inputs(2 * rows, torch.Generator().manual_seed(0))
    assert_close(path[:, 0], ends[:rows], rtol=0, atol=0)
    assert_close(path[:, -1], ends[rows:], rtol=0, atol=0)
    assert_close(path[:, 2], slerp(ends[:rows], ends[rows:], 0.5), rtol=0, atol=0)
    linear = sample.interpolation_inputs(module, rows, steps, seed=0, spherical=False).reshape(rows, steps, -1)
    assert_close(linear[:, 2], (ends[:rows] + ends[rows:]) / 2, rtol=1e-6, atol=1e-6)
    cli_sample.main([str(gan_run), "--interpolate", str(tmp_path / "walk.png"), "--rows", "3", "--steps", "5"])
    with Image.open(tmp_path / "walk.png") as image:
        assert image.size == (5 * 30 + 2, 3 * 30 + 2)


def test_interpolation_walks_every_noise_tensor_of_a_multi_input_model_linearly():
    class PerLevelNoise:  # LAPGAN-like: uniform noise for each pyramid level, no labels
        def make_inputs(self, n, generator):
            return torch.rand(n, 4, generator=generator), torch.rand(n, 1, 2, 2, generator=generator)

    coarse, planes = sample.interpolation_inputs(PerLevelNoise(), rows=2, steps=3, seed=0)
    ends = PerLevelNoise().make_inputs(4, torch.Generator().manual_seed(0))
    assert coarse.shape == (6, 4) and planes.shape == (6, 1, 2, 2)
    for walked, drawn in zip((coarse, planes), ends, strict=True):
        walked = walked.reshape(2, 3, *drawn.shape[1:])
        assert_close(walked[:, 0], drawn[:2], rtol=0, atol=0)
        assert_close(walked[:, 2], drawn[2:], rtol=0, atol=0)
        assert_close(walked[:, 1], (drawn[:2] + drawn[2:]) / 2, rtol=1e-6, atol=1e-7)  # not Gaussian: linear


# ----------------------------------------------------------------------------------------- conditional
@pytest.fixture
def requested_labels(monkeypatch) -> list[torch.Tensor]:
    """The labels every ConditionalGAN generator call receives, in order."""
    calls: list[torch.Tensor] = []
    original = ConditionalGAN.run_generator

    def recording(self, net, inputs):
        calls.append(inputs[1].clone())
        return original(self, net, inputs)

    monkeypatch.setattr(ConditionalGAN, "run_generator", recording)
    return calls


def test_conditional_grid_has_one_class_per_column(cgan_run, tmp_path, requested_labels):
    cli_sample.main([str(cgan_run), "--grid", str(tmp_path / "all.png"), "-n", "20"])
    assert torch.equal(requested_labels[-1], torch.arange(20) % 10)
    with Image.open(tmp_path / "all.png") as image:
        assert image.size == (10 * 30 + 2, 2 * 30 + 2)  # 10 columns: class k in column k
    cli_sample.main([str(cgan_run), "--grid", str(tmp_path / "three.png"), "-n", "6", "--classes", "0,1,2"])
    assert torch.equal(requested_labels[-1], torch.tensor([0, 1, 2, 0, 1, 2]))
    with Image.open(tmp_path / "three.png") as image:
        assert image.size == (3 * 30 + 2, 2 * 30 + 2)
    cli_sample.main([str(cgan_run), "--folder", str(tmp_path / "sevens"), "-n", "5", "--classes", "7",
                 "--batch-size", "2"])
    assert torch.equal(torch.cat(requested_labels[-3:]), torch.full((5,), 7))
    assert sorted(p.name for p in (tmp_path / "sevens").iterdir()) == [f"{i:05d}_class7.png" for i in range(5)]
    # Without --classes a folder asks for the evaluation's labels: classes in turn within each batch.
    cli_sample.main([str(cgan_run), "--folder", str(tmp_path / "all"), "-n", "10", "--batch-size", "4"])
    module, *_ = config_loading.load_module(cgan_run)
    stream = Evaluator.inputs(SimpleNamespace(seed=0, num_samples=10, batch_size=4), module)
    # The folder made 3 generator calls; the last call recorded is load_module's own dry run.
    assert torch.equal(torch.cat(requested_labels[-4:-1]), torch.cat([y for _, y in stream]))


def test_conditional_interpolation_keeps_one_label_per_row(cgan_run, tmp_path, requested_labels):
    cli_sample.main([str(cgan_run), "--interpolate", str(tmp_path / "walk.png"), "--rows", "3", "--steps", "4",
                 "--classes", "4,9"])
    assert torch.equal(requested_labels[-1], torch.tensor([4] * 4 + [9] * 4 + [4] * 4))
    cli_sample.main([str(cgan_run), "--interpolate", str(tmp_path / "walk.png"), "--rows", "3", "--steps", "4"])
    assert torch.equal(requested_labels[-1], torch.tensor([0] * 4 + [1] * 4 + [2] * 4))


def test_bad_classes_are_refused_in_one_sentence(cgan_run, gan_run, tmp_path, capsys):
    out = tmp_path / "x.png"
    _fails(capsys, [str(cgan_run), "--grid", str(out), "--classes", "10"], "--classes", "0 to 9")
    _fails(capsys, [str(cgan_run), "--grid", str(out), "--classes", "1,seven"], "--classes", "'seven'")
    _fails(capsys, [str(gan_run), "--grid", str(out), "--classes", "3"], "--classes", "unconditional")
    assert not out.exists() and not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------- InfoGAN codes
class _FakeInfoGAN:
    """The interface gansuite-sample uses from an InfoGAN module: a categorical code of 4 values and a continuous one."""

    code_names = ["cat0", "cont0"]

    def __init__(self) -> None:
        self.sweeps: list[tuple[int, int, int, int]] = []

    def code_sweep_inputs(self, code: int, steps: int, rows: int, generator: torch.Generator) -> torch.Tensor:
        self.sweeps.append((code, steps, rows, int(torch.randint(1000, (1,), generator=generator))))
        columns = 4 if code == 0 else steps
        return torch.linspace(-1, 1, rows * columns)  # row-major: one brightness per cell

    def sample(self, inputs: torch.Tensor, ema: bool = True) -> torch.Tensor:
        return inputs.view(-1, 1, 1, 1).expand(-1, 1, 5, 5)


def test_code_grids_call_the_sweep_of_every_code_with_one_seed(tmp_path):
    module = _FakeInfoGAN()
    paths = sample.save_code_grids(module, tmp_path / "codes", rows=2, steps=3, seed=7)
    assert [p.name for p in paths] == ["cat0.png", "cont0.png"]
    # Both sweeps start from the same seed, so row r has the same noise in every file.
    first_draw = int(torch.randint(1000, (1,), generator=torch.Generator().manual_seed(7)))
    assert module.sweeps == [(0, 3, 2, first_draw), (1, 3, 2, first_draw)]
    sizes = {}
    for p in paths:
        with Image.open(p) as image:
            sizes[p.name] = image.size
    assert sizes == {"cat0.png": (4 * 7 + 2, 2 * 7 + 2), "cont0.png": (3 * 7 + 2, 2 * 7 + 2)}


def test_codes_need_an_infogan_checkpoint(gan_run, tmp_path, capsys):
    _fails(capsys, [str(gan_run), "--codes", str(tmp_path / "codes")], "--codes needs an InfoGAN checkpoint")
    assert not (tmp_path / "codes").exists()


# ----------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("argv", "words"), [
    (["--grid", "g.png", "-n", "0"], ["-n is 0"]),
    (["--grid", "g.png", "--rows", "3"], ["--rows does not apply to --grid"]),
    (["--interpolate", "g.png", "--steps", "1"], ["--steps", "at least 2"]),
    (["--grid", "g.png", "--folder", "f"], ["not allowed with"]),
    ([], ["one of the arguments --grid --folder --interpolate --codes --translate is required"]),
    (["--translate", "in"], ["--translate needs --out DIR"]),
    (["--grid", "g.png", "--out", "o"], ["--out does not apply to --grid"]),
    (["--translate", "in", "--out", "o", "--from-hr", "--targets", "t"], ["--targets and --from-hr"]),
])
def test_bad_options_fail_before_loading_anything(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_sample, "load_module", lambda *a, **k: pytest.fail("loaded the checkpoint"))
    _fails(capsys, [str(tmp_path / "no-such-run"), *argv], *words)
    assert not list(tmp_path.iterdir())


def test_a_folder_with_images_in_it_is_refused(gan_run, tmp_path, capsys):
    (tmp_path / "old.png").write_bytes(b"")
    _fails(capsys, [str(gan_run), "--folder", str(tmp_path), "-n", "3"], "--folder", "already holds 1 images")
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_without_a_gpu_names_the_option(gan_run, tmp_path, capsys):
    _fails(capsys, [str(gan_run), "--grid", str(tmp_path / "g.png"), "--device", "cuda"], "--device", "--device cpu")


def test_two_d_checkpoints_are_refused(tmp_path, capsys):
    train(make_cfg(tmp_path / "ring", "model=gan", "data=ring8", "trainer.max_steps=1", "trainer.checkpoint_every=1",
                   "callbacks=none"))
    _fails(capsys, [str(tmp_path / "ring"), "--grid", str(tmp_path / "g.png")], "writes images", "(2,)")
    assert not (tmp_path / "g.png").exists()


# ----------------------------------------------------------------------------------------- image-to-image
@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sr")
    train(make_cfg(tmp, "model=srresnet", "data=sr_mnist", "trainer.max_steps=1", "trainer.checkpoint_every=1",
                   "callbacks=none"))
    return tmp


def test_translate_upscales_a_folder_and_writes_comparisons(sr_run, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    save_image(torch.rand(1, 1, 28, 36), tmp_path / "in" / "wide.png")
    save_image(torch.rand(1, 1, 20, 20), tmp_path / "in" / "small.png")
    cli_sample.main([str(sr_run), "--translate", str(tmp_path / "in"), "--out", str(tmp_path / "up")])
    with Image.open(tmp_path / "up" / "wide.png") as im:
        assert im.size == (4 * 36, 4 * 28)  # every image at its own size, x4
    with Image.open(tmp_path / "up" / "small_compare.png") as im:
        assert im.size == (2 * 82 + 2, 84)  # input (enlarged) | output, 2 px padding
    # --from-hr: the images are targets; their 4x smaller versions go in and the targets sit on the right.
    cli_sample.main([str(sr_run), "--translate", str(tmp_path / "in"), "--out", str(tmp_path / "hr"), "--from-hr"])
    with Image.open(tmp_path / "hr" / "wide.png") as im:
        assert im.size == (36, 28)
    with Image.open(tmp_path / "hr" / "wide_compare.png") as im:
        assert im.size == (3 * 38 + 2, 32)
    assert "2 images and their comparisons" in capsys.readouterr().out


def test_translate_needs_an_image_to_image_checkpoint(gan_run, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    save_image(torch.rand(1, 1, 28, 28), tmp_path / "in" / "x.png")
    _fails(capsys, [str(gan_run), "--translate", str(tmp_path / "in"), "--out", str(tmp_path / "o")],
           "--translate needs an image-to-image model")
    assert not (tmp_path / "o").exists()


def test_grid_never_replaces_a_file_gansuite_did_not_write(gan_run, tmp_path, capsys):
    checkpoint = gan_run / "checkpoints" / "last.ckpt"
    before = checkpoint.read_bytes()
    with pytest.raises(SystemExit) as exited:
        cli_sample.main([str(gan_run), "--grid", str(checkpoint), "-n", "4"])
    assert exited.value.code == 2 and checkpoint.read_bytes() == before
    err = capsys.readouterr().err.strip()
    assert err == (f"gansuite-sample: error: --grid {checkpoint} already exists and was not written by gansuite; "
                   "pass a new path, or --overwrite to replace it.")
    grid = tmp_path / "grid.png"
    cli_sample.main([str(gan_run), "--grid", str(grid), "-n", "4"])
    cli_sample.main([str(gan_run), "--grid", str(grid), "-n", "9"])  # its own grid: replaced without asking
    with Image.open(grid) as image:
        assert image.text["Software"] == "gansuite"
    training_grid = tmp_path / "step_000002.png"  # the training run's grid is gansuite's too: redrawn in place
    shutil.copy2(gan_run / "samples" / "step_000002.png", training_grid)
    cli_sample.main([str(gan_run), "--grid", str(training_grid), "--seed", "1234"])
    foreign = tmp_path / "figure.png"
    Image.new("RGB", (4, 4)).save(foreign)
    with pytest.raises(SystemExit):
        cli_sample.main([str(gan_run), "--interpolate", str(foreign)])
    cli_sample.main([str(gan_run), "--grid", str(foreign), "-n", "4", "--overwrite"])
    with Image.open(foreign) as image:
        assert image.size != (4, 4)
