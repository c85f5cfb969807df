"""data=captioned_folder: Reed et al.'s caption-release layout (CUB-200-2011, Oxford-102) written small into
tmp_path, read back against what was written; the mismatches, the vocabulary, the unseen test classes, every
layout error, and GAN-INT-CLS trained on it with each text encoder."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansuite.data.captioned_folder import CaptionedFolder
from gansuite.data.captions import UNK, words
from gansuite.data.text_sources import Precomputed
from gansuite.errors import ConfigError
from gansuite.models.text_to_image import CAPTIONS

from .conftest import build_tiny, trains

CUB_TRAIN = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
CUB_TEST = ("004.Groove_billed_Ani", "005.Crested_Auklet")
COLOURS = {"red": (250, 0, 0), "green": (0, 250, 0), "blue": (0, 0, 250), "white": (250, 250, 250)}


def _captions(cls: int, image: int) -> list[str]:
    """The three captions (lines) of image ``image`` of class ``cls`` (its place in train + test classes)."""
    colour = list(COLOURS)[(cls + image) % len(COLOURS)]
    tag = "zq" + "abcdefgh"[cls] + "abcdefgh"[image]  # a word of this image's first caption alone
    return [f"this bird is {colour} with a short beak {tag}", f"a {colour} bird , small wings",
            f"the bird has {colour} feathers"]


def _pixel(cls: int, image: int) -> tuple[int, int, int]:
    """Every image one colour of its own, so a batch's images can be told apart."""
    return (20 + 40 * cls, 30 + 60 * image, 200 - 30 * cls)


def write_cub(root: Path, images_per_class: int = 2, suffix: str = ".png") -> Path:
    """A tiny CUB layout: text_c10/<class>/<stem>.txt, images/<class>/<stem>.png (16 x 24: cropped to 16 x 16)."""
    classes = CUB_TRAIN + CUB_TEST
    for k, name in enumerate(classes):
        (root / "text_c10" / name).mkdir(parents=True)
        (root / "images" / name).mkdir(parents=True)
        for i in range(images_per_class):
            stem = f"{name.split('.', 1)[1]}_{i:04d}_{100 + k}"
            (root / "text_c10" / name / f"{stem}.txt").write_text("\n".join(_captions(k, i)) + "\n")
            image = np.zeros((24, 16, 3), dtype=np.uint8)
            image[:] = _pixel(k, i)
            image[:4] = image[-4:] = 0  # the rows a centre crop of 16 x 24 to 16 x 16 removes
            Image.fromarray(image).save(root / "images" / name / f"{stem}{suffix}")
    (root / "trainvalclasses.txt").write_text("\n".join(CUB_TRAIN) + "\n")
    (root / "testclasses.txt").write_text("\n".join(CUB_TEST) + "\n")
    return root


def write_oxford(root: Path) -> Path:
    """A tiny Oxford-102 layout: text_c10/class_0000k/image_0nnnn.txt and a flat jpg/ folder of JPEGs."""
    (root / "jpg").mkdir(parents=True)
    n = 1
    for k in range(1, 5):
        name = f"class_{k:05d}"
        (root / "text_c10" / name).mkdir(parents=True)
        for i in range(2):
            stem = f"image_{n:05d}"
            n += 1
            (root / "text_c10" / name / f"{stem}.txt").write_text("\n".join(_captions(k, i)) + "\n")
            Image.new("RGB", (16, 16), _pixel(k, i)).save(root / "jpg" / f"{stem}.jpg", quality=95)
    (root / "trainvalclasses.txt").write_text("class_00001\nclass_00002\nclass_00003\n")
    (root / "testclasses.txt").write_text("class_00004\n")
    return root


def _data(root: Path, **options) -> CaptionedFolder:
    data = CaptionedFolder(root=str(root), resolution=options.pop("resolution", 16), batch_size=4, **options)
    data.setup()
    return data


# ----------------------------------------------------------------------------------------- contents
def test_every_training_caption_comes_once_with_its_own_image_and_class(tmp_path):
    data = _data(write_cub(tmp_path))
    assert data.num_classes == 5 and data.class_names == [*CUB_TRAIN, *CUB_TEST]
    assert len(data._train) == 3 * 2 * 3  # training classes x images x captions
    x, y, tokens, wrong = data._train.__getitems__(list(range(len(data._train))))
    assert x.shape == (18, 3, 16, 16) and tokens.shape == (18, 30) and tokens.dtype == torch.long
    inverse = {i: w for w, i in data.vocab.items()}
    for n in range(18):
        cls, image, line = n // 6, n // 3 % 2, n % 3  # classes as listed, images by name, lines as written
        assert y[n] == cls
        expected = torch.tensor(_pixel(cls, image), dtype=torch.float32) / 127.5 - 1
        assert torch.allclose(x[n], expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-6)  # cropped: no black rows
        decoded = [inverse[i] for i in tokens[n].tolist() if i]
        assert decoded == [w if w in data.vocab else "<unk>" for w in words(_captions(cls, image)[line])]


def test_a_mismatched_caption_is_always_another_training_class_and_drawn_reproducibly(tmp_path):
    data = _data(write_cub(tmp_path, images_per_class=3))
    n = len(data._train)
    _, y, tokens, wrong = data._train.__getitems__(list(range(n)))
    rows = data._train.wrong  # the training caption each pair's mismatch is
    owner_class = data._train.y[data._train.image]  # the class of each training caption
    assert torch.equal(wrong, tokens[rows]) and torch.equal(owner_class, y)
    assert (owner_class[rows] != y).all()  # never the image's own class (and never a test class: rows < n)
    assert len(set(owner_class[rows].tolist())) == 3 and len(set(rows.tolist())) > n // 2  # spread, not one caption
    again = _data(tmp_path, seed=5)._train.__getitems__(list(range(n)))[3]
    assert torch.equal(wrong, again)  # fixed apart from the seed, which orders the stream only


def test_the_vocabulary_keeps_training_words_seen_min_word_count_times(tmp_path):
    data = _data(write_cub(tmp_path))
    vocab = data.vocab
    assert vocab["<pad>"] == 0 and vocab["<unk>"] == UNK
    assert {"bird", ",", "beak", "wings", "red", "green", "blue", "white"} <= set(vocab)
    assert vocab["bird"] < vocab["wings"] < vocab["white"]  # most frequent first: 18, 6, 3 times
    assert not any(w.startswith("zq") for w in vocab)  # each image's own word, seen once: <unk>
    every = CaptionedFolder(root=str(tmp_path), min_word_count=1, batch_size=4).vocab
    assert {w for w in every if w.startswith("zq")} == {"zq" + "abc"[k] + "ab"[i] for k in range(3) for i in range(2)}
    assert set(every) - set(vocab) == {w for w in every if w.startswith("zq")}  # no test class's word, ever
    rare = CaptionedFolder(root=str(tmp_path), min_word_count=100, batch_size=4).vocab
    assert rare == {"<pad>": 0, "<unk>": UNK}


def test_the_test_classes_are_unseen_in_training_and_their_captions_spread_over_them(tmp_path):
    data = _data(write_cub(tmp_path))
    assert set(data._train.__getitems__(list(range(len(data._train))))[1].tolist()) == {0, 1, 2}
    x, y = data.heldout()
    assert sorted(y.tolist()) == [3, 3, 4, 4] and y[:2].tolist() in ([3, 4], [4, 3])  # classes interleaved
    test = data.test_captions(heldout_phrasings=False)
    assert len(test["texts"]) == 2 * 2 * 3 and test["digit"].tolist()[:4] == [3, 4, 3, 4]
    assert test["texts"][0] == _captions(3, 0)[0] and test["texts"][1] == _captions(4, 0)[0]
    assert test["texts"][2] == _captions(3, 1)[0]  # the next image's first caption before anyone's second
    assert test["tokens"].shape == (12, 30)
    with pytest.raises(ConfigError, match="no held-out phrasings"):
        data.test_captions(heldout_phrasings=True)
    assert data.train_split(3)[0].shape == (3, 3, 16, 16)  # images, not captions


def test_oxford_102s_flat_jpg_folder_is_found_by_stem(tmp_path):
    data = _data(write_oxford(tmp_path), images="jpg", resolution=8)
    assert data.num_classes == 4 and len(data._train) == 3 * 2 * 3
    x, y, tokens, _ = data._train.__getitems__([0, 3])
    assert y.tolist() == [0, 0] and x.shape == (2, 3, 8, 8)
    expected = torch.tensor(_pixel(1, 1), dtype=torch.float32) / 127.5 - 1  # class_00001's second image, resized
    assert torch.allclose(x[1].mean((1, 2)), expected, atol=0.05)  # JPEG: close, not exact
    assert data.heldout()[1].tolist() == [3, 3]


# ----------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("break_it, says", [
    (lambda root: None, r"data\.root: \S+missing does not exist; point data\.root at"),
    (lambda root: __import__("shutil").rmtree(root / "text_c10"), r"data\.root: .* has no text_c10/ folder"),
    (lambda root: (root / "testclasses.txt").write_text("004.Groove_billed_Ani\n099.Nowhere\n"),
     r"data\.test_classes: .* names 099\.Nowhere, which has no folder"),
    (lambda root: (root / "testclasses.txt").unlink(), r"data\.test_classes: .*testclasses\.txt does not exist"),
    (lambda root: (root / "testclasses.txt").write_text("001.Black_footed_Albatross\n"),
     r"data\.test_classes: .* shares 1 classes with data\.train_classes"),
    (lambda root: next((root / "text_c10" / CUB_TRAIN[1]).glob("*.txt")).unlink(),
     r"data\.root: the image .* of the class 002\.Laysan_Albatross has no captions"),
    (lambda root: next((root / "images" / CUB_TEST[0]).glob("*.png")).unlink(),
     r"data\.images: no image named .* for the captions"),
    (lambda root: next((root / "text_c10" / CUB_TRAIN[0]).glob("*.txt")).write_text("\n\n"),
     r"data\.root: .* holds no caption; write"),
])
def test_a_broken_layout_is_one_sentence_naming_the_key(tmp_path, break_it, says):
    root = write_cub(tmp_path / "cub")
    break_it(root)
    where = tmp_path / "missing" if "missing" in says else root
    with pytest.raises(ConfigError, match=says) as err:
        CaptionedFolder(root=str(where), batch_size=4).check()
    assert "\n" not in str(err.value)


def test_a_wrong_images_folder_names_data_images(tmp_path):
    write_oxford(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.images: .*images does not exist; set data\.images .*Oxford-102: jpg"):
        CaptionedFolder(root=str(tmp_path), batch_size=4).check()


# ----------------------------------------------------------------------------------------- training
def test_gan_int_cls_trains_on_a_captioned_folder(tmp_path):
    root = write_cub(tmp_path / "cub")
    result = trains(tmp_path / "run", "model=gan_int_cls", "data=captioned_folder", f"data.root={root}",
                    "data.resolution=32", "data.batch_size=4", "callbacks=default", "callbacks.progress_bar=null",
                    "callbacks.sample_grid.every_n_steps=1", steps=2)
    module, vocab = result["module"], result["trainer"].datamodule.vocab
    assert module.caption_list[:2] == [_captions(3, 0)[0], _captions(4, 0)[0]]  # the test classes' captions
    texts = module.caption_texts(module.make_inputs(3, torch.Generator().manual_seed(0)))
    assert texts[0] == " ".join(w if w in vocab else "<unk>" for w in words(_captions(3, 0)[0]))
    assert texts[0].endswith(" beak <unk>")
    assert (tmp_path / "run" / "samples" / "step_000002.png").is_file()
    assert not (tmp_path / "run" / "eval").exists()  # the captioned digits' metrics stay silent here


def _write_npz(path: Path, texts: list[str], dim: int = 6) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, texts=np.array(texts), embeddings=rng.standard_normal((len(texts), dim)).astype(np.float32))
    return path


def _all_captions(root: Path) -> list[str]:
    return sorted({line.strip() for f in (root / "text_c10").rglob("*.txt") for line in f.read_text().splitlines()
                   if line.strip()})


def test_gan_int_cls_trains_on_a_captioned_folder_with_precomputed_npz_embeddings(tmp_path):
    root = write_cub(tmp_path / "cub")
    npz = _write_npz(tmp_path / "emb.npz", _all_captions(root), dim=6)
    result = trains(tmp_path / "run", "model=gan_int_cls", "data=captioned_folder", f"data.root={root}",
                    "data.resolution=32", "data.batch_size=4", "text_encoder=precomputed",
                    f"text_encoder.path={npz}", steps=2)
    module, data = result["module"], result["trainer"].datamodule
    assert module.captions.dtype == torch.float32 and module.captions.shape == (CAPTIONS, 6)
    assert sum(p.numel() for p in module.discriminator.text.parameters()) == 0  # the identity
    assert module.generator.compress[0].in_features == 6  # text_dim from the file
    x, y, tokens, wrong = data._train.__getitems__([0, 1])
    with np.load(npz) as f:
        row = list(f["texts"]).index(_captions(0, 0)[1])
        assert torch.equal(tokens[1], torch.from_numpy(f["embeddings"][row]))  # caption 1 of the first image
    assert module.caption_texts((None, module.captions[:2])) == [_captions(3, 0)[0], _captions(4, 0)[0]]


def test_a_npz_without_some_captions_says_how_many_and_one(tmp_path):
    root = write_cub(tmp_path / "cub")
    texts = _all_captions(root)
    npz = _write_npz(tmp_path / "emb.npz", texts[2:])
    with pytest.raises(ConfigError, match=re.escape(f"has no embedding for 2 of the {len(texts)} distinct captions")) \
            as err:
        build_tiny(tmp_path / "run", "model=gan_int_cls", "data=captioned_folder", f"data.root={root}",
                   "data.resolution=32", "text_encoder=precomputed", f"text_encoder.path={npz}", training=True)
    assert "text_encoder.path" in str(err.value) and repr(texts[0]) in str(err.value)


class _Python2Array:
    """Pickles an array as python 2's numpy did: numpy.core's constructor, its byte strings read back as latin-1
    text (what unpickling python 2's str with encoding="latin1" gives)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self):
        make, args, state = self.array.__reduce__()
        return make, (*args[:2], args[2].decode("latin1")), (*state[:4], state[4].decode("latin1"))


def write_stackgan(folder: Path, root: Path, dim: int = 5, python2: bool = False) -> dict[str, np.ndarray]:
    """The StackGAN release layout for every image of ``root``: train/ and test/, each with filenames.pickle and
    char-CNN-RNN-embeddings.pickle (per image 3 captions x dim), rows in a shuffled order."""
    rng = np.random.default_rng(1)
    keys = sorted(f"{f.parent.name}/{f.stem}" for f in (root / "text_c10").rglob("*.txt"))
    rng.shuffle(keys)
    table = {}
    for part, chunk in (("train", keys[: len(keys) // 2]), ("test", keys[len(keys) // 2:])):
        (folder / part).mkdir(parents=True)
        emb = rng.standard_normal((len(chunk), 3, dim)).astype(np.float32)
        table.update(zip(chunk, emb, strict=True))
        if python2:  # numpy.core's names, and the file names as python 2 byte strings (SHORT_BINSTRING)
            data = pickle.dumps(_Python2Array(emb), protocol=2).replace(b"numpy._core.", b"numpy.core.")
            names = b"\x80\x02](" + b"".join(b"U" + bytes([len(k)]) + k.encode() for k in chunk) + b"e."
        else:
            data, names = pickle.dumps(emb, protocol=4), pickle.dumps(list(chunk), protocol=4)
        (folder / part / "char-CNN-RNN-embeddings.pickle").write_bytes(data)
        (folder / part / "filenames.pickle").write_bytes(names)
    return table


@pytest.mark.parametrize("python2", [False, True])
def test_gan_int_cls_trains_with_a_stackgan_pickle_folder(tmp_path, python2):
    root = write_cub(tmp_path / "cub")
    table = write_stackgan(tmp_path / "birds", root, python2=python2)
    result = trains(tmp_path / "run", "model=gan_int_cls", "data=captioned_folder", f"data.root={root}",
                    "data.resolution=32", "data.batch_size=4", "text_encoder=precomputed",
                    f"text_encoder.path={tmp_path / 'birds'}", steps=1)
    data = result["trainer"].datamodule
    _, _, tokens, _ = data._train.__getitems__([4])  # caption 1 of the second image of the first class
    stem = sorted((root / "text_c10" / CUB_TRAIN[0]).glob("*.txt"))[1].stem
    assert torch.equal(tokens[0], torch.from_numpy(table[f"{CUB_TRAIN[0]}/{stem}"][1]))
    test = data.test_captions()
    stem = sorted((root / "text_c10" / CUB_TEST[0]).glob("*.txt"))[0].stem
    assert torch.equal(test["tokens"][0], torch.from_numpy(table[f"{CUB_TEST[0]}/{stem}"][0]))


def test_a_stackgan_folder_missing_an_image_names_it(tmp_path):
    root = write_cub(tmp_path / "cub")
    write_stackgan(tmp_path / "birds", root)
    source = Precomputed(path=str(tmp_path / "birds" / "train"))  # the test images are in test/
    data = CaptionedFolder(root=str(root), resolution=16, batch_size=4)
    data.text_encoder = source
    with pytest.raises(ConfigError, match=r"text_encoder\.path: .* has no embedding for \d+ of the 30 captions .*"
                                          r"e\.g\. caption 0 of the image"):
        data.setup()


@pytest.mark.parametrize("preset", ["gan_int_cls_cub", "gan_int_cls_flowers"])
def test_the_real_data_presets_train_on_their_layout_with_the_release_embeddings(tmp_path, preset):
    root = write_cub(tmp_path / "data") if preset.endswith("cub") else write_oxford(tmp_path / "data")
    write_stackgan(tmp_path / "release", root, dim=7)
    result = trains(tmp_path / "run", f"experiment={preset}", "model=gan_int_cls", f"data.root={root}",
                    "data.resolution=32", "data.batch_size=4", "text_encoder=precomputed",  # (no tiny word-GRU sizes)
                    f"text_encoder.path={tmp_path / 'release'}", steps=2)
    module = result["module"]
    assert module.joint_weight == 0 and module.generator.compress[0].in_features == 7  # fixed, pretrained text
    steps = [config.scheduler.step_size for config in result["trainer"].lr_scheduler_configs]
    assert steps == ([13836, 13836] if preset.endswith("cub") else [10991, 10991])  # 100 epochs of the paper's
