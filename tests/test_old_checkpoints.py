"""Checkpoints written by an earlier gansuite version still sample, and resume, with today's code.

tests/fixtures/README.md says how they were made; their configs name the classes where they lived then.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from PIL import Image
from torch.testing import assert_close

from gansuite import sampling as sample
from gansuite.cli import sample as cli_sample
from gansuite.config import loading as config_loading
from gansuite.training.checkpointing import read_checkpoint

from .conftest import gansuite_train_in_process

FIXTURES = Path(__file__).parent / "fixtures"
GAN = FIXTURES / "gan_ring8_3e744eb.ckpt"
PIX2PIX = FIXTURES / "pix2pix_edges2digits_3e744eb.ckpt"


def _pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8).float()


def test_an_old_2d_gan_checkpoint_draws_the_samples_it_drew_when_it_was_written():
    checkpoint = read_checkpoint(GAN)
    _, module = config_loading.built_module(config_loading.stored_config(checkpoint, GAN), checkpoint, GAN, "sample")
    module.eval()
    with torch.no_grad():
        samples = module.sample(sample.grid_inputs(module, 16, 0, None), ema=True)
    expected = torch.load(FIXTURES / "gan_ring8_3e744eb_samples.pt", weights_only=True)
    assert_close(samples, expected, rtol=1e-4, atol=1e-5)


def test_an_old_pix2pix_checkpoint_redraws_its_grid_through_gansuite_sample(tmp_path):
    cli_sample.main([str(PIX2PIX), "--grid", str(tmp_path / "grid.png"), "-n", "8", "--seed", "0"])
    # One 8-bit level of slack: another CPU may round a pixel the other way.
    assert_close(_pixels(tmp_path / "grid.png"), _pixels(FIXTURES / "pix2pix_edges2digits_3e744eb_grid.png"),
                 rtol=0, atol=1.0)


def test_old_checkpoints_resume_from_their_own_config(tmp_path, monkeypatch):
    for checkpoint, steps in ((GAN, 22), (PIX2PIX, 5)):
        copy = tmp_path / checkpoint.stem / "last.ckpt"
        copy.parent.mkdir()
        shutil.copy(checkpoint, copy)
        run_dir = tmp_path / f"{checkpoint.stem}-resumed"
        assert gansuite_train_in_process(monkeypatch, run_dir, f"resume={copy}",
                                         f"trainer.max_steps={steps}") == 0
        assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["gansuite_step"] == steps


def test_every_renamed_target_is_allowed_where_it_lives_now_and_never_renamed_again():
    from gansuite.config.renamed import RENAMED
    from gansuite.config.security import CLASS_MODULES, RESUMED_CLASS_MODULES, is_allowed

    assert not set(RENAMED.values()) & set(RENAMED)  # a current target is never taken for an old one
    refused = [new for new in RENAMED.values() if not is_allowed(new, CLASS_MODULES + RESUMED_CLASS_MODULES)]
    assert not refused, refused
