"""Where a text-to-image model's caption embeddings come from: the ``text_encoder`` config group.

Captioned data (:mod:`gansuite.data.captions`, :mod:`gansuite.data.captioned_folder`) lists its captions as
texts; the text encoder decides what its batches carry for them (``tokens`` / ``wrong`` and
``test_captions()["tokens"]``), and what caption encoder D holds (:mod:`gansuite.nets.text_to_image`):

- :class:`WordGRU` (``text_encoder=word_gru``, the default): word ids of the data's vocabulary, encoded by a
  word-level GRU that D trains (:class:`gansuite.nets.text.WordGRUEncoder`);
- :class:`Precomputed` (``text_encoder=precomputed``): fixed embeddings read from ``text_encoder.path``, either
  gansuite's own ``.npz`` (``texts``, a string array, and ``embeddings``, N x E, keyed by caption text), or a
  folder in the layout of the StackGAN / Reed et al. CUB and Oxford-102 releases (``char-CNN-RNN-embeddings
  .pickle``: per image 10 x 1024, one row per caption, in the order of ``filenames.pickle``);
- :class:`SentenceTransformers` (``text_encoder=sentence_transformers``): every distinct caption embedded once
  by the local sentence-transformers model at ``text_encoder.path``, cached under ``text_encoder.cache_dir``.

With fixed embeddings D's encoder is the identity (no parameters) and the embeddings' size E is the model's
``text_dim``. Nothing is ever downloaded. The StackGAN pickles come from strangers: they are read by
:class:`RestrictedUnpickler`, which builds numpy arrays, lists and dicts and refuses anything else.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gansuite.errors import ConfigError

EMBEDDINGS_PICKLE = "char-CNN-RNN-embeddings.pickle"
FILENAMES_PICKLE = "filenames.pickle"
_PATH_HELP = {
    "precomputed": "a .npz holding texts (a string array) and embeddings (N x E), or a folder holding "
                   f"{EMBEDDINGS_PICKLE} and {FILENAMES_PICKLE} (the StackGAN / Reed et al. CUB and Oxford-102 "
                   "releases, or their parent holding train/ and test/)",
    "sentence_transformers": "a local sentence-transformers model folder (one written by "
                             "SentenceTransformer(...).save(DIR)); nothing is downloaded",
}


class WordGRU:
    """``text_encoder=word_gru``: captions as word ids of the data's vocabulary; D holds a word-level GRU encoder
    (:class:`gansuite.nets.text.WordGRUEncoder`) and trains it.

    Args:
        word_dim, hidden, word_dropout: the encoder's (see :class:`~gansuite.nets.text.WordGRUEncoder`).
    """

    kind = "word_gru"
    fixed = False

    def __init__(self, *, word_dim: int = 64, hidden: int = 128, word_dropout: float = 0.1) -> None:
        for key, value in (("word_dim", word_dim), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"text_encoder.{key} must be a positive integer (got {value!r}); "
                                  f"set text_encoder.{key} to a positive integer.")
        if isinstance(word_dropout, bool) or not isinstance(word_dropout, (int, float)) or not 0 <= word_dropout < 1:
            raise ConfigError(f"text_encoder.word_dropout must be in [0, 1) (got {word_dropout!r}); "
                              "set text_encoder.word_dropout=0.1.")
        self.word_dim, self.hidden, self.word_dropout = word_dim, hidden, float(word_dropout)

    def network_options(self) -> dict[str, Any]:
        """D's caption-encoder options (the data adds ``vocab_size``)."""
        return {"word_dim": self.word_dim, "hidden": self.hidden, "word_dropout": self.word_dropout}

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind}


class FixedEmbeddings:
    """Fixed caption embeddings (E floats each): what :class:`Precomputed` and :class:`SentenceTransformers` share."""

    kind = ""
    fixed = True

    def __init__(self, path: str | None) -> None:
        if path is None or not str(path).strip():
            raise ConfigError(f"text_encoder={self.kind} needs text_encoder.path, which is not set; set "
                              f"text_encoder.path to {_PATH_HELP[self.kind]}.")
        self.path = Path(os.path.expanduser(str(path)))

    @property
    def dim(self) -> int:
        """E, the size of one embedding: the model's ``text_dim``."""
        raise NotImplementedError

    def network_options(self) -> dict[str, Any]:
        """D's caption encoder is the identity, and G and D take E-dimensional embeddings."""
        return {"vocab_size": None, "text_dim": self.dim}

    def embeddings(self, texts: Sequence[str], keys: Sequence[tuple[str, int]] | None = None,
                   data: str = "the data") -> Tensor:
        """The embedding of every caption the data serves (len(texts) x E, float32), all at once so that what is
        missing is reported together. ``keys``: each caption's image (``<class>/<stem>``) and its line in the
        image's caption file, for embeddings stored by image; ``data``: the data's name, for messages."""
        raise NotImplementedError

    def embed_new(self, text: str) -> Tensor:
        """One new caption's embedding (1 x E), for ``gansuite-sample --text``."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "dim": self.dim}


class Precomputed(FixedEmbeddings):
    """``text_encoder=precomputed``: fixed embeddings read from ``path`` (see the module docstring).

    A ``.npz`` is keyed by caption text (the line of the caption file, stripped): every caption the data serves
    must be in it. A StackGAN folder is keyed by image: the data's image ``<class>/<stem>`` is found in
    ``filenames.pickle`` by that entry, else by its stem alone when no other entry shares it, and caption ``j``
    of the image is row ``j`` of its embeddings. With ``path`` a folder without the pickles, every subfolder
    holding them is read (the releases' ``train/`` and ``test/``).
    """

    kind = "precomputed"

    def __init__(self, *, path: str | None = None) -> None:
        super().__init__(path)
        if not self.path.exists():
            raise ConfigError(f"text_encoder.path: {self.path} does not exist; set text_encoder.path to "
                              f"{_PATH_HELP[self.kind]}.")
        self._by_text: dict[str, int] | None = None
        self._by_image: dict[str, int] | None = None
        self._table: np.ndarray | None = None  # (N, E) by text, or (images, captions, E) by image
        self._dim: int | None = None

    def _load(self) -> None:
        if self._table is not None:
            return
        if self.path.is_dir():
            self._table, self._by_image = read_stackgan(self.path)
        else:
            texts, self._table = read_npz(self.path, "text_encoder.path")
            self._by_text = {}
            for i, text in enumerate(texts):
                self._by_text.setdefault(text, i)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
            self._dim = int(self._table.shape[-1])
        return self._dim

    def embeddings(self, texts: Sequence[str], keys: Sequence[tuple[str, int]] | None = None,
                   data: str = "the data") -> Tensor:
        self._load()
        if self._by_text is not None:
            rows = [self._by_text.get(t) for t in texts]
            missing = [t for t, r in zip(texts, rows, strict=True) if r is None]
            if missing:
                distinct = sorted(set(missing))
                raise ConfigError(f"text_encoder.path: {self.path} has no embedding for {len(distinct)} of the "
                                  f"{len(set(texts))} distinct captions {data} serves, e.g. {distinct[0]!r}; add them "
                                  "to its texts and embeddings, or set text_encoder.path to embeddings made for "
                                  "this data.")
            out = self._table[np.asarray(rows, dtype=np.int64)]
        else:
            if keys is None:
                raise ConfigError(f"text_encoder.path: {self.path} holds embeddings by image file (the StackGAN "
                                  f"layout), but {data} has no image files; use it with data=captioned_folder, or "
                                  "set text_encoder.path to a .npz of caption texts and embeddings.")
            images = [self._by_image.get(image, self._by_image.get(_STEM + image.rsplit("/", 1)[-1]))
                      for image, _ in keys]
            missing = [(image, j) for (image, j), row in zip(keys, images, strict=True)
                       if row is None or j >= self._table.shape[1]]
            if missing:
                image, j = missing[0]
                raise ConfigError(f"text_encoder.path: {self.path} has no embedding for {len(missing)} of the "
                                  f"{len(keys)} captions {data} serves, e.g. caption {j} of the image {image}; set "
                                  f"text_encoder.path to the release's folder that lists every image of the data "
                                  f"in its {FILENAMES_PICKLE} (or the parent of its train/ and test/).")
            out = self._table[np.asarray(images, dtype=np.int64), np.asarray([j for _, j in keys], dtype=np.int64)]
        # The data keeps the rows it serves; the file's table (CUB's: half a gigabyte) is let go, its size kept.
        self._dim = int(self._table.shape[-1])
        self._table = self._by_text = self._by_image = None
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def embed_new(self, text: str) -> Tensor:
        raise ConfigError(f"--text: this model was trained with text_encoder=precomputed, whose embeddings come from "
                          f"the file {self.path}, which cannot embed new text; drop --text to draw for the held-out "
                          "captions, or train with text_encoder=word_gru or sentence_transformers.")


class SentenceTransformers(FixedEmbeddings):
    """``text_encoder=sentence_transformers``: every distinct caption the data serves embedded once by the local
    sentence-transformers model at ``path``, then used as fixed embeddings.

    The embeddings are cached as a ``.npz`` (:func:`read_npz`'s format) under ``cache_dir/text_embeddings/``,
    keyed by a hash of the model folder's files and of the captions, so a second run with the same model and
    data does not run the model. The ``sentence-transformers`` package is optional.

    Args:
        path: the model folder.
        cache_dir: where the embeddings are cached (``paths.cache_dir``).
    """

    kind = "sentence_transformers"

    def __init__(self, *, path: str | None = None, cache_dir: str | None = None) -> None:
        super().__init__(path)
        if not self.path.is_dir():
            raise ConfigError(f"text_encoder.path: {self.path} is not a folder; set text_encoder.path to "
                              f"{_PATH_HELP[self.kind]}.")
        self.cache_dir = Path(os.path.expanduser(str(cache_dir))) if cache_dir else None
        self._model: Any = None
        self._dim: int | None = None

    def model(self) -> Any:
        """The sentence-transformers model, loaded once from ``path`` (local files only)."""
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ConfigError("text_encoder=sentence_transformers needs the sentence-transformers package, which "
                                  "is not installed; pip install sentence-transformers, or use text_encoder=word_gru "
                                  "or precomputed.") from None
            check_model_folder(self.path)
            try:
                try:  # on the CPU: the same embeddings on every machine, and no GPU memory held by the run
                    self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
                except TypeError:  # a version without local_files_only: a local folder is read as it is anyway
                    self._model = SentenceTransformer(str(self.path), device="cpu")
            except Exception as err:  # noqa: BLE001 - whatever the package raises for a folder it cannot read
                raise ConfigError(f"text_encoder.path: {self.path} could not be loaded as a sentence-transformers "
                                  f"model ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                                  f"set text_encoder.path to {_PATH_HELP[self.kind]}.") from None
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            size = getattr(self.model(), "get_sentence_embedding_dimension", lambda: None)()
            self._dim = int(size) if size else int(self._encode(["a"]).shape[-1])
        return self._dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = self.model().encode(texts)
        if isinstance(out, Tensor):
            out = out.detach().cpu().numpy()
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def cache_path(self, distinct: list[str]) -> Path | None:
        """Where the embeddings of these (sorted, distinct) captions by this model are cached (None: no cache)."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256()
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(self.path).as_posix().encode() + b"\0")
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        digest.update(b"\0captions\0" + "\n".join(distinct).encode())
        return self.cache_dir / "text_embeddings" / f"sentence_transformers-{digest.hexdigest()[:20]}.npz"

    def embeddings(self, texts: Sequence[str], keys: Sequence[tuple[str, int]] | None = None,
                   data: str = "the data") -> Tensor:
        distinct = sorted(set(texts))
        cache = self.cache_path(distinct)
        table = None
        if cache is not None and cache.is_file():
            try:
                cached_texts, table = read_npz(cache, "text_encoder.cache_dir")
            except ConfigError:
                table = None  # a damaged cache file: embed again and replace it
            else:
                if list(cached_texts) != distinct:
                    table = None
        if table is None:
            table = self._encode(distinct)
            if cache is not None:
                write_npz(cache, distinct, table)
        row = {t: i for i, t in enumerate(distinct)}
        return torch.from_numpy(np.ascontiguousarray(table[[row[t] for t in texts]], dtype=np.float32))

    def embed_new(self, text: str) -> Tensor:
        return torch.from_numpy(self._encode([text]))


def check_model_folder(path: Path) -> None:
    """Refuse, in one sentence, a sentence-transformers folder that would run code of its own: sentence-transformers
    imports a module type that ``modules.json`` names from outside its package from the folder's ``.py`` files,
    whatever ``trust_remote_code`` says, and a run's config (or a checkpoint's) names the folder."""
    import json

    scripts = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.py"))
    types: list[str] = []
    modules = path / "modules.json"
    if modules.is_file():
        try:
            types = [str(entry.get("type", "")) for entry in json.loads(modules.read_text(encoding="utf-8"))]
        except (ValueError, AttributeError, TypeError):
            raise ConfigError(f"text_encoder.path: {modules} is not a sentence-transformers modules.json; set "
                              f"text_encoder.path to {_PATH_HELP['sentence_transformers']}.") from None
    foreign = [t for t in types if not t.startswith("sentence_transformers.")]
    if scripts or foreign:
        what = f"Python files ({', '.join(scripts[:3])})" if scripts else f"module types ({', '.join(foreign[:3])})"
        raise ConfigError(f"text_encoder.path: {path} holds {what} that loading it would run, which gansuite does "
                          "not allow; use a model folder of sentence-transformers' own modules only.")


# ------------------------------------------------------------------------------------ files
def read_npz(path: Path, key: str) -> tuple[list[str], np.ndarray]:
    """gansuite's embeddings file: ``texts`` (N strings) and ``embeddings`` (N x E floats), read without pickle."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz")
        with npz:
            texts, table = npz["texts"], npz["embeddings"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        what = "holds no texts or embeddings array" if isinstance(err, KeyError) else \
            f"is not a readable .npz without pickled objects ({type(err).__name__})"
        raise ConfigError(f"{key}: {path} {what}; write it with numpy.savez(path, texts=np.array(list_of_str), "
                          "embeddings=float_array_N_by_E).") from None
    if texts.dtype.kind != "U" or texts.ndim != 1 or table.ndim != 2 or len(texts) != len(table) \
            or table.dtype.kind != "f":
        raise ConfigError(f"{key}: {path} must hold texts (N strings) and embeddings (N x E floats), but holds "
                          f"texts {texts.dtype} {texts.shape} and embeddings {table.dtype} {table.shape}; write it with "
                          "numpy.savez(path, texts=np.array(list_of_str), embeddings=float_array_N_by_E).")
    return [str(t) for t in texts], table.astype(np.float32, copy=False)


def write_npz(path: Path, texts: Sequence[str], table: np.ndarray) -> None:
    """Write :func:`read_npz`'s format, atomically (:func:`gansuite.outputs.atomic_path`)."""
    from gansuite.outputs import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, texts=np.asarray(list(texts), dtype=str), embeddings=np.asarray(table, dtype=np.float32))


_STEM = "\0stem:"  # index entries by stem alone, apart from the <folder>/<stem> ones


def read_stackgan(path: Path) -> tuple[np.ndarray, dict[str, int]]:
    """The StackGAN / Reed et al. release layout: (images x captions x E embeddings, image key -> row).

    ``path`` holds ``char-CNN-RNN-embeddings.pickle`` and ``filenames.pickle``, or is a folder whose subfolders do
    (``train/``, ``test/``). Keys are the entries of ``filenames.pickle`` without suffix (``<class>/<stem>``) and,
    where no other entry shares it, the stem alone.
    """
    folders = [path] if (path / EMBEDDINGS_PICKLE).is_file() else \
        sorted(p.parent for p in path.glob(f"*/{EMBEDDINGS_PICKLE}"))
    if not folders:
        raise ConfigError(f"text_encoder.path: {path} holds no {EMBEDDINGS_PICKLE} (nor do its subfolders); set "
                          f"text_encoder.path to {_PATH_HELP['precomputed']}.")
    tables, names = [], []
    for folder in folders:
        if not (folder / FILENAMES_PICKLE).is_file():
            raise ConfigError(f"text_encoder.path: {folder} has {EMBEDDINGS_PICKLE} but no {FILENAMES_PICKLE}, so "
                              f"its rows belong to no image; put the release's {FILENAMES_PICKLE} beside it.")
        table = _as_table(load_restricted(folder / EMBEDDINGS_PICKLE), folder / EMBEDDINGS_PICKLE)
        files = load_restricted(folder / FILENAMES_PICKLE)
        if not isinstance(files, (list, tuple, np.ndarray)) or len(files) != len(table):
            raise ConfigError(f"text_encoder.path: {folder / FILENAMES_PICKLE} lists "
                              f"{len(files) if hasattr(files, '__len__') else 'no'} files for the {len(table)} rows of "
                              f"{EMBEDDINGS_PICKLE}; use the two files of one release folder.")
        tables.append(table)
        names += [_key(f) for f in files]
    if len({t.shape[1:] for t in tables}) > 1:
        raise ConfigError(f"text_encoder.path: the {EMBEDDINGS_PICKLE} files under {path} differ in shape "
                          f"({', '.join(str(t.shape[1:]) for t in tables)}); point text_encoder.path at one release.")
    index: dict[str, int] = {}
    stems: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)
        stems.setdefault(name.rsplit("/", 1)[-1], []).append(i)
    index.update({_STEM + stem: rows[0] for stem, rows in stems.items() if len(rows) == 1})
    return np.concatenate(tables), index


def _key(entry: Any) -> str:
    text = entry.decode("latin1") if isinstance(entry, bytes) else str(entry)
    text = text.replace("\\", "/").strip("/")
    folder, _, name = text.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{folder}/{stem}" if folder else stem


def _as_table(obj: Any, path: Path) -> np.ndarray:
    """The embeddings pickle as images x captions x E float32 (a 2-D array is one embedding per image)."""
    try:
        table = np.asarray(obj, dtype=np.float32)
    except (TypeError, ValueError):
        table = None
    if table is None or table.ndim not in (2, 3) or not table.size:
        raise ConfigError(f"text_encoder.path: {path} does not hold embeddings as images x captions x E numbers; "
                          "use the release's char-CNN-RNN-embeddings.pickle.")
    return table[:, None] if table.ndim == 2 else table


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and dicts, and refuses any other global the pickle names, in one sentence.

    A pickle calls whatever globals it names while it loads (``os.system`` as easily as numpy's array
    constructor), and the StackGAN releases are pickles from strangers.
    """

    def __init__(self, file: Any, source: Path, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle  # python 2's module names (__builtin__, copy_reg) as python 3's

        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = _allowed_globals()
        if (module, name) not in allowed:
            raise ConfigError(f"text_encoder.path: {self.source} names {module}.{name}, which gansuite does not let "
                              "a pickle call (only numpy arrays, lists and dicts); use the release's own pickles, or "
                              "convert them to a .npz of texts and embeddings.")
        return allowed[(module, name)]


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    import _codecs

    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                         ("builtins", "list"): list, ("builtins", "dict"): dict,
                                         # how python 3 writes an array's bytes at protocol 2: a codec, no code
                                         ("_codecs", "encode"): _codecs.encode}
    for package in ("numpy.core", "numpy._core"):  # pickles name either, whichever numpy wrote them
        found[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        found[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        found[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return found


def load_restricted(path: Path) -> Any:
    """A pickle file read by :class:`RestrictedUnpickler` (python 2 pickles with ``encoding="latin1"``)."""
    try:
        data = path.read_bytes()
        return RestrictedUnpickler(io.BytesIO(data), path, encoding="latin1").load()
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file raises any of several types
        raise ConfigError(f"text_encoder.path: {path} is not a readable pickle ({type(err).__name__}); use the "
                          "release's own file.") from None
