"""The text_encoder group: word_gru's options reach D, fixed embeddings from a .npz or a sentence-transformers model
(a fake one: the package is optional) serve the data, the restricted unpickler refuses code, and every missing
piece is one sentence naming text_encoder.path."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gansuite.config.security import check_targets
from gansuite.data.captions import CaptionedDigits
from gansuite.data.text_sources import Precomputed, RestrictedUnpickler, SentenceTransformers, load_restricted
from gansuite.errors import ConfigError
from gansuite.models.text_to_image import CAPTIONS

from .conftest import build_tiny, make_cfg, options, trains
from .test_captioned_folder import _all_captions, write_cub

DIGITS = ("model=gan_int_cls", "data=captioned_digits")


def install_fake_sentence_transformers(monkeypatch, dim: int = 7) -> types.SimpleNamespace:
    """A ``sentence_transformers`` module whose model embeds a text as numbers drawn from its hash: the same text,
    the same vector. Returns what it was asked (models loaded, lists encoded)."""
    calls = types.SimpleNamespace(loaded=[], encoded=[])

    class SentenceTransformer:
        def __init__(self, path: str, **kwargs) -> None:
            calls.loaded.append((path, kwargs))

        def get_sentence_embedding_dimension(self) -> int:
            return dim

        def encode(self, texts: list[str]) -> np.ndarray:
            calls.encoded.append(list(texts))
            seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
            return np.stack([np.random.default_rng(s).standard_normal(dim) for s in seeds]).astype(np.float32)

    module = types.ModuleType("sentence_transformers")
    module.SentenceTransformer = SentenceTransformer
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)
    return calls


def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "minilm"
    folder.mkdir()
    (folder / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", '
                                         '"type": "sentence_transformers.models.Transformer"}]')
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


# ----------------------------------------------------------------------------------------- the group
@pytest.mark.parametrize("option", options("text_encoder"))
def test_every_text_encoder_composes(tmp_path, option):
    cfg = make_cfg(tmp_path, *DIGITS, f"text_encoder={option}", tiny=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["text_encoder"]["_target_"].startswith("gansuite.data.text_sources.")


def test_word_gru_is_the_default_and_its_options_reach_the_discriminator(tmp_path):
    cfg, _, module = build_tiny(tmp_path, *DIGITS, "text_encoder.word_dim=5", "text_encoder.hidden=6",
                                "text_encoder.word_dropout=0.3")
    assert cfg.text_encoder._target_.endswith("WordGRU")
    encoder = module.discriminator.text
    assert encoder.words.embedding_dim == 5 and encoder.forward_gru.hidden_size == 6 and encoder.word_dropout == 0.3
    assert module.captions.dtype == torch.long and module.text_record()["words"][:2] == ["<pad>", "<unk>"]
    with pytest.raises(ConfigError, match=r"text_encoder\.hidden must be a positive integer"):
        build_tiny(tmp_path / "bad", *DIGITS, "text_encoder.hidden=0")


@pytest.mark.parametrize("option", ["precomputed", "sentence_transformers"])
def test_fixed_embeddings_without_a_path_name_text_encoder_path(tmp_path, option):
    with pytest.raises(ConfigError, match=rf"text_encoder={option} needs text_encoder\.path, which is not set; set "
                                          r"text_encoder\.path to ") as err:
        build_tiny(tmp_path, *DIGITS, f"text_encoder={option}")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"text_encoder\.path: \S+nowhere does not exist"):
        build_tiny(tmp_path, *DIGITS, "text_encoder=precomputed", f"text_encoder.path={tmp_path / 'nowhere'}")
    build_tiny(tmp_path / "dcgan", "model=dcgan", f"text_encoder={option}")  # only text-to-image models read it


def test_a_checkpoint_may_not_name_a_text_encoder_outside_gansuite():
    with pytest.raises(ConfigError, match=r"text_encoder\._target_='os\.system'"):
        check_targets({"text_encoder": {"_target_": "os.system", "path": "echo"}}, "run.ckpt")
    check_targets({"text_encoder": {"_target_": "gansuite.data.text_sources.Precomputed"}}, "run.ckpt")


# ----------------------------------------------------------------------------------------- precomputed
class _Recorder:
    """A fixed text encoder that notes every caption the data asks it for."""

    fixed, dim = True, 3

    def embeddings(self, texts, keys=None, data=""):
        self.texts = list(texts)
        return torch.zeros(len(texts), self.dim)


@pytest.fixture(scope="module")
def digit_captions() -> list[str]:
    """Every caption the captioned digits serve: training and mismatched ones, held-out digits' in both phrasings."""
    data = CaptionedDigits(batch_size=8)
    data.text_encoder = _Recorder()
    data.setup()
    return data.text_encoder.texts


def test_captioned_digits_serve_precomputed_embeddings(tmp_path, digit_captions):
    embeddings = np.random.default_rng(0).standard_normal((len(digit_captions), 6)).astype(np.float32)
    path = tmp_path / "digits.npz"
    np.savez(path, texts=np.array(digit_captions), embeddings=embeddings)
    result = trains(tmp_path / "run", *DIGITS, "text_encoder=precomputed", f"text_encoder.path={path}", steps=1)
    module, data = result["module"], result["trainer"].datamodule
    row = {t: i for i, t in enumerate(digit_captions)}
    test = data.test_captions(heldout_phrasings=True)
    assert test["tokens"].shape == (2000, 6) and test["tokens"].dtype == torch.float32
    assert torch.equal(test["tokens"][5], torch.from_numpy(embeddings[row[test["texts"][5]]]))
    x, y, tokens, wrong = data._train.__getitems__([0, 9])
    assert tokens.shape == wrong.shape == (2, 6)
    assert not any(p.numel() for p in module.discriminator.text.parameters())
    assert torch.equal(module.embed(tokens), tokens)  # D's encoder: the identity
    assert module.captions.shape == (CAPTIONS, 6) and module.captions.any()
    assert module.caption_texts(module.make_inputs(3, torch.Generator())) == data.eval_captions()["texts"][:3]
    assert module.text_record() == {"kind": "precomputed", "path": str(path), "dim": 6}


def test_the_unpickler_refuses_a_pickle_that_names_os_system(tmp_path):
    witness = tmp_path / "ran"
    folder = tmp_path / "birds"
    folder.mkdir()
    # GLOBAL os.system, then calls it: what "cos\nsystem\n" in a downloaded pickle does under pickle.load.
    (folder / "char-CNN-RNN-embeddings.pickle").write_bytes(f"cos\nsystem\n(S'touch {witness}'\ntR.".encode())
    (folder / "filenames.pickle").write_bytes(pickle.dumps(["001.A/a"]))
    with pytest.raises(ConfigError, match=r"names os\.system, which gansuite does not let a pickle call") as err:
        _ = Precomputed(path=str(folder)).dim
    assert "\n" not in str(err.value) and not witness.exists()

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {witness}",)

    (folder / "evil.pickle").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ConfigError, match=r"\.system, which gansuite does not let a pickle call"):
        load_restricted(folder / "evil.pickle")
    assert not witness.exists()
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_unpickler_reads_numpy_arrays_lists_and_dicts(tmp_path, protocol):
    value = {"rows": [np.arange(6, dtype=np.float32).reshape(2, 3)], "n": np.float64(2.5)}
    (tmp_path / "ok.pickle").write_bytes(pickle.dumps(value, protocol=protocol))
    read = load_restricted(tmp_path / "ok.pickle")
    assert np.array_equal(read["rows"][0], value["rows"][0]) and read["n"] == 2.5


# ----------------------------------------------------------------------------------------- sentence-transformers
def test_sentence_transformers_embed_every_distinct_caption_once_and_cache_them(tmp_path, monkeypatch):
    calls = install_fake_sentence_transformers(monkeypatch, dim=7)
    root, model = write_cub(tmp_path / "cub"), model_dir(tmp_path)
    common = ("model=gan_int_cls", "data=captioned_folder", f"data.root={root}", "data.resolution=32",
              "text_encoder=sentence_transformers", f"text_encoder.path={model}",
              f"text_encoder.cache_dir={tmp_path / 'cache'}")
    _, data, module = build_tiny(tmp_path / "a", *common, training=True)
    distinct = _all_captions(root)
    assert calls.encoded == [distinct]  # every distinct caption, once, in one call
    assert calls.loaded[0][0] == str(model)
    assert module.generator.compress[0].in_features == 7 and module.captions.shape == (CAPTIONS, 7)
    _, _, tokens, _ = data._train.__getitems__([1])
    fake = sys.modules["sentence_transformers"].SentenceTransformer(str(model))
    assert torch.allclose(tokens[0], torch.from_numpy(fake.encode([data._texts[1]])[0]))
    calls.encoded.clear()
    cached = list((tmp_path / "cache" / "text_embeddings").glob("sentence_transformers-*.npz"))
    assert len(cached) == 1
    _, again, _ = build_tiny(tmp_path / "b", *common, training=True)
    assert calls.encoded == []  # the second time, from the cache
    assert torch.equal(again._table, data._table)
    (model / "model.safetensors").write_bytes(b"other weights")  # another model: embedded again
    build_tiny(tmp_path / "c", *common, training=True)
    assert calls.encoded == [distinct]


def test_sentence_transformers_not_installed_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    source = SentenceTransformers(path=str(model_dir(tmp_path)))
    with pytest.raises(ConfigError, match=r"needs the sentence-transformers package, which is not installed; "
                                          r"pip install sentence-transformers"):
        _ = source.dim


def test_a_npz_with_pickled_texts_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, texts=np.array(["a seven", "a one"], dtype=object), embeddings=np.ones((2, 3), np.float32))
    source = Precomputed(path=str(path))
    with pytest.raises(ConfigError, match=r"text_encoder\.path: \S+objects\.npz is not a readable \.npz without "
                                          r"pickled objects"):
        _ = source.dim


def test_a_config_stored_before_the_text_encoder_group_builds_its_own_word_gru(tmp_path):
    from gansuite.config.build import build

    cfg = make_cfg(tmp_path, *DIGITS)
    OmegaConf.set_struct(cfg, False)
    del cfg["text_encoder"]  # as gansuite wrote it before the group: the encoder's options in D
    cfg.model.discriminator.update(word_dim=3, hidden=5, word_dropout=0.2)
    _, module = build(cfg, training=False)
    assert module.discriminator.text.words.embedding_dim == 3 and module.discriminator.text.forward_gru.hidden_size == 5


@pytest.mark.parametrize("plant", ["modules.json", "script"])
def test_a_model_folder_that_would_run_its_own_code_is_refused_before_loading(tmp_path, monkeypatch, plant):
    calls = install_fake_sentence_transformers(monkeypatch)
    folder = model_dir(tmp_path)
    if plant == "modules.json":  # sentence-transformers imports a foreign module type from the folder's files
        (folder / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": "evil.Module"}]')
    else:
        (folder / "evil.py").write_text("import os\n")
    with pytest.raises(ConfigError, match="text_encoder.path: .* that loading it would run"):
        SentenceTransformers(path=str(folder)).model()
    assert calls.loaded == []


def test_the_sentence_transformers_model_runs_on_the_cpu(tmp_path, monkeypatch):
    calls = install_fake_sentence_transformers(monkeypatch)
    assert SentenceTransformers(path=str(model_dir(tmp_path))).dim == 7
    assert calls.loaded[0][1]["device"] == "cpu"
