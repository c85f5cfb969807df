"""Bad files and places (issue 16): unreadable images in data folders, read-only output folders, a CUDA device
that is not there, and checkpoints that are missing or corrupt. Each is one line and exit status 2 from the
command line, or a warning and a skipped file where the rest of the data is good; nothing half-written."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansuite.cli import aggregate, compare, evaluate
from gansuite.cli import sample as cli_sample
from gansuite.cli.evaluate import load_images
from gansuite.data.folders import ImageFolder, UnreadableImageWarning
from gansuite.data.pairs import PairedFolder
from gansuite.data.superres import SuperResolution
from gansuite.data.unpaired import UnpairedFolders
from gansuite.errors import ConfigError
from gansuite.training.run import train

from .conftest import make_cfg
from .test_compare import FID, write_run

# ----------------------------------------------------------------------------- unreadable images in data folders
BAD = {
    # An image suffix, but the bytes are not an image at all.
    "not_an_image": lambda good: b"this is a text file that someone named .png\n",
    # The first half of a real PNG: the header decodes, the pixels stop short.
    "truncated": lambda good: good[: len(good) // 2],
}


def _png(rng: np.random.Generator, height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="png")
    return buffer.getvalue()


def _folder(folder: Path, n: int, bad: str | None, height: int = 16, width: int = 16, seed: int = 0) -> Path | None:
    """``n`` random PNGs named 0.png ... plus a text file (filtered by its suffix); with ``bad``, file 2 is that kind
    of bad file. Returns the bad file's path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(_png(rng, height, width))
    (folder / "README.txt").write_text("not an image, and not named like one")
    if bad is None:
        return None
    (folder / "2.png").write_bytes(BAD[bad]((folder / "2.png").read_bytes()))
    return folder / "2.png"


def _image_folder(root: Path, bad: str):
    return ImageFolder(root=str(root), resolution=8, batch_size=2, num_workers=0), _folder(root, 6, bad)


def _sr_folder(root: Path, bad: str):
    return (SuperResolution(source="folder", root=str(root), scale=2, crop=8, heldout_size=1, crops_per_epoch=8,
                            batch_size=2), _folder(root, 6, bad))


def _paired_side_by_side(root: Path, bad: str):
    return PairedFolder(root=str(root), resolution=8, heldout_size=1, flip=False, batch_size=2), \
        _folder(root, 6, bad, width=32)


def _paired_folders(root: Path, bad: str):
    _folder(root / "B", 6, None, seed=1)
    return PairedFolder(root=str(root), layout="folders", resolution=8, heldout_size=1, batch_size=2), \
        _folder(root / "A", 6, bad)


def _unpaired_folders(root: Path, bad: str):
    _folder(root / "b", 6, None, seed=1)
    return UnpairedFolders(root_a=str(root / "a"), root_b=str(root / "b"), resolution=8, heldout_size=1,
                           batch_size=2), _folder(root / "a", 6, bad)


DATA = {"image_folder": _image_folder, "sr_folder": _sr_folder, "paired_folder": _paired_side_by_side,
        "paired_folder_layout_folders": _paired_folders, "unpaired_folders": _unpaired_folders}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("kind", list(DATA))
def test_one_bad_image_among_good_ones_is_skipped_with_one_warning_naming_it(kind, bad, tmp_path):
    dm, bad_file = DATA[kind](tmp_path / "data", bad)
    with pytest.warns(UnreadableImageWarning) as caught:
        loader = iter(dm.train_dataloader())
        batches = [next(loader) for _ in range(12)]  # several passes over the 5 good files
        dm.heldout(4)
    about_bad = [w for w in caught if issubclass(w.category, UnreadableImageWarning)]
    assert len(about_bad) == 1, [str(w.message) for w in about_bad]  # once per file, however often it comes up
    message = str(about_bad[0].message)
    assert str(bad_file) in message and "not a readable image" in message and "\n" not in message
    for a, b in batches:
        assert a.shape[0] == b.shape[0] == 2 and torch.isfinite(a).all() and torch.isfinite(b).all()


def test_a_bad_image_is_replaced_by_its_next_readable_neighbour_the_same_way_every_time(tmp_path):
    _folder(tmp_path, 6, "truncated")
    with pytest.warns(UnreadableImageWarning):
        dm = ImageFolder(root=str(tmp_path), resolution=8, batch_size=2, num_workers=0)
        dm.setup()
        files = dm._train.files
        i = files.index(tmp_path / "2.png")
        first = dm._train[i][0]
    assert torch.equal(first, dm._train[(i + 1) % len(files)][0])
    assert torch.equal(first, dm._train[i][0])  # the same image again, and no second warning
    assert dm._train.bad.tolist() == [int(f.name == "2.png") for f in files]
    assert tmp_path / "README.txt" not in files  # other suffixes never reach the loader


def test_loader_workers_skip_a_bad_image_and_share_that_it_is_bad(tmp_path):
    _folder(tmp_path, 6, "not_an_image")
    dm = ImageFolder(root=str(tmp_path), resolution=8, batch_size=2, num_workers=2)
    dm.setup()
    assert not dm._train.bad.any()  # start-up decodes only until one file reads: the bad one is not found yet
    loader = iter(dm.train_dataloader())
    for _ in range(15):  # five passes, split between two worker processes
        x, _ = next(loader)
        assert x.shape == (2, 3, 8, 8)
    bad = [f.name for f, flag in zip(dm._train.files, dm._train.bad.tolist(), strict=True) if flag]
    assert bad == ["2.png"]  # flagged in a worker, seen here: shared memory


def test_training_on_an_image_folder_with_a_bad_file_runs_to_the_end(tmp_path):
    _folder(tmp_path / "images", 6, "truncated", height=32, width=32)
    with pytest.warns(UnreadableImageWarning):
        result = train(make_cfg(tmp_path / "run", "data=image_folder", f"data.root={tmp_path / 'images'}",
                                "data.resolution=32", "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=3",
                                "callbacks=none"))
    assert result["step"] == 3


@pytest.mark.parametrize("kind", list(DATA))
def test_a_folder_where_no_image_can_be_read_is_one_sentence(kind, tmp_path):
    dm, _ = DATA[kind](tmp_path / "data", "not_an_image")
    for png in (tmp_path / "data").rglob("*.png"):
        png.write_bytes(b"nothing readable here")
    with pytest.warns(UnreadableImageWarning), pytest.raises(ConfigError) as error:
        dm.setup()
    message = str(error.value)
    assert message.startswith("data.root") and "can be read" in message and "\n" not in message


def test_gansuite_eval_names_an_unreadable_sample_instead_of_skipping_it(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / f"{i:05d}.png")
    (tmp_path / "00001.png").write_bytes((tmp_path / "00001.png").read_bytes()[:60])
    with pytest.raises(ConfigError, match=r"00001\.png is not a readable image"):
        load_images(tmp_path, (1, 28, 28), 3)


# ----------------------------------------------------------------------------- the commands
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny MLP GAN on 28 px digits, trained 2 steps: its checkpoints/last.ckpt."""
    run = tmp_path_factory.mktemp("gan")
    train(make_cfg(run, "model=gan", "trainer.max_steps=2", "trainer.checkpoint_every=2", "callbacks=none"))
    return run / "checkpoints" / "last.ckpt"


def _command(capsys, main, argv: list[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip()


def _one_line(code: int, err: str, tool: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith(f"{tool}: error: ") and "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """An empty folder nobody may write in: chmod 0o555, and for root (who ignores that) a refusing os.access."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            inside = Path(path).resolve() == folder or folder in Path(path).resolve().parents
            return False if inside and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    yield folder
    folder.chmod(0o755)


def _modes_run(root: Path) -> Path:
    (root / "run" / "eval").mkdir(parents=True)
    (root / "run" / "eval" / "modes.json").write_text(json.dumps(
        {"step": 100, "modes": 8, "high_quality": 0.9, "reverse_kl": 0.1, "data": {"modes": "ring8"}, "pack": 1,
         "seed": 0}))
    return root / "run"


READ_ONLY = {  # tool: (main, the option, argv given the checkpoint, a multirun and the read-only folder)
    "sample --grid": (cli_sample.main, "--grid", lambda ckpt, runs, ro: [str(ckpt), "--grid", str(ro / "x.png")]),
    "sample --interpolate": (cli_sample.main, "--interpolate",
                             lambda ckpt, runs, ro: [str(ckpt), "--interpolate", str(ro / "walk.png")]),
    "sample --folder": (cli_sample.main, "--folder", lambda ckpt, runs, ro: [str(ckpt), "--folder", str(ro / "s"), "-n", "3"]),
    "sample --codes": (cli_sample.main, "--codes", lambda ckpt, runs, ro: [str(ckpt), "--codes", str(ro)]),
    "compare --out": (compare.main, "--out", lambda ckpt, runs, ro: [str(runs), "--metric", FID, "--out",
                                                                     str(ro / "x.png")]),
    "compare --json": (compare.main, "--json", lambda ckpt, runs, ro: [str(runs), "--metric", FID, "--out",
                                                                       str(runs / "c.png"), "--json", str(ro / "t.json")]),
    "eval --json": (evaluate.main, "--json", lambda ckpt, runs, ro: [str(ckpt), "--json", str(ro / "r.json")]),
    "eval beside a read-only checkpoint": (evaluate.main, "--json", None),
    "aggregate --json": (aggregate.main, "--json", lambda ckpt, runs, ro: [str(runs), "--json", str(ro / "t.json")]),
}


@pytest.mark.parametrize("case", list(READ_ONLY))
def test_an_output_in_a_read_only_folder_is_one_sentence_before_any_work(case, checkpoint, read_only, tmp_path,
                                                                           capsys, monkeypatch):
    main, option, make_argv = READ_ONLY[case]
    tool = {cli_sample.main: "gansuite-sample", compare.main: "gansuite-compare", evaluate.main: "gansuite-eval",
            aggregate.main: "gansuite-aggregate"}[main]
    runs = tmp_path / "runs"
    if main is aggregate.main:
        _modes_run(runs)
    else:
        write_run(runs / "0", ["seed=0"], seed=0)
    for name in ("evaluate_checkpoint", "evaluate_folder"):  # minutes of work that must not start
        monkeypatch.setattr(evaluate, name, lambda *a, **k: pytest.fail("evaluated before checking the output"))
    if make_argv is None:  # no --json: the result goes beside the checkpoint, into a read-only folder
        read_only.chmod(0o755)
        shutil.copy(checkpoint, read_only / "last.ckpt")
        read_only.chmod(0o555)
        argv, where = [str(read_only / "last.ckpt")], read_only / "last.eval.json"
    else:
        argv = make_argv(checkpoint, runs, read_only)
        where = Path(argv[argv.index(option) + 1])
    before = sorted(os.listdir(read_only))
    code, err = _command(capsys, main, argv)
    _one_line(code, err, tool, f"{option} {where}", f"cannot write in {read_only}", "read-only")
    assert sorted(os.listdir(read_only)) == before  # nothing written, not even a temporary file


@pytest.mark.parametrize("main", [evaluate.main, cli_sample.main], ids=["gansuite-eval", "gansuite-sample"])
def test_cuda_on_a_machine_without_it_names_device_and_the_fix(main, checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", lambda *a, **k: pytest.fail("evaluated on a missing device"))
    argv = [str(checkpoint), "--device", "cuda"] + (["--grid", str(tmp_path / "g.png")] if main is cli_sample.main else [])
    code, err = _command(capsys, main, argv)
    tool = "gansuite-eval" if main is evaluate.main else "gansuite-sample"
    _one_line(code, err, tool, "--device cuda: no CUDA device", "use --device cpu")
    assert not (tmp_path / "g.png").exists()


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "no-such-run"


def _garbage(tmp_path: Path) -> Path:
    (tmp_path / "garbage.ckpt").write_bytes(b"\x80\x02 not a zip, not a pickle")
    return tmp_path / "garbage.ckpt"


def _half(tmp_path: Path, checkpoint: Path) -> Path:
    data = checkpoint.read_bytes()
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    return tmp_path / "half.ckpt"


def _not_gansuite(tmp_path: Path) -> Path:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    return tmp_path / "other.ckpt"


CHECKPOINTS = {  # what is passed: (how to make it, words the sentence holds)
    "missing": (lambda tmp, ckpt: _missing(tmp), ["does not exist"]),
    "garbage": (lambda tmp, ckpt: _garbage(tmp), ["checkpoint:", "is not a readable checkpoint"]),
    "truncated": (_half, ["checkpoint:", "is not a readable checkpoint"]),
    "not_gansuite": (lambda tmp, ckpt: _not_gansuite(tmp), ["checkpoint:", "is not a gansuite training checkpoint"]),
}


@pytest.mark.parametrize("what", list(CHECKPOINTS))
@pytest.mark.parametrize("main", [evaluate.main, cli_sample.main], ids=["gansuite-eval", "gansuite-sample"])
def test_a_missing_or_corrupt_checkpoint_is_named_as_a_checkpoint_not_a_resume(main, what, checkpoint, tmp_path,
                                                                                capsys):
    make, words = CHECKPOINTS[what]
    path = make(tmp_path, checkpoint)
    argv = [str(path)] + (["--grid", str(tmp_path / "g.png")] if main is cli_sample.main else [])
    code, err = _command(capsys, main, argv)
    tool = "gansuite-eval" if main is evaluate.main else "gansuite-sample"
    _one_line(code, err, tool, str(path), *words)
    assert "resume" not in err
    assert not (tmp_path / "g.png").exists()


def test_gansuite_sample_of_a_folder_without_checkpoints_names_the_checkpoint(tmp_path, capsys):
    (tmp_path / "empty-run").mkdir()
    code, err = _command(capsys, cli_sample.main, [str(tmp_path / "empty-run"), "--grid", str(tmp_path / "g.png")])
    _one_line(code, err, "gansuite-sample", "checkpoint:", "holds no checkpoints/last.ckpt")
    assert "resume" not in err
