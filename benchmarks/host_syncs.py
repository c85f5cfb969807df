"""Host synchronisations per training batch: tensor-to-Python conversions a GPU run would wait on.

    python benchmarks/host_syncs.py                          # every family below, ~5 min
    python benchmarks/host_syncs.py --families unconditional --steps 500

Each family trains through ``gansuite.training.run.train`` with its default callbacks (progress bar, sample or
translation grids and metrics, step checkpoints), ``trainer.log_every_n_steps=50`` and the CSV logger, on the
CPU. A ``TorchDispatchMode`` counts calls of ``aten._local_scalar_dense``, the op behind ``.item()``,
``bool(t)``, ``float(t)`` and ``int(t)``; ``Tensor.tolist`` (which on a CUDA tensor copies to the host without
that op) is wrapped and counted too, every call, since on the CPU one cannot tell which tensors a GPU run would
hold on the device. Counting runs from the first training batch to the end of training, so start-up (data,
dry run) is left out but everything the run does between batches is in: grids and checkpoints every 500 steps,
the logged batches, the last checkpoint. Not counted, but shown: conversions made inside ``torch/optim`` (the
step counters torch's optimizers keep on the CPU for GPU parameters) and inside the image and point data
modules (``gansuite/data/``: base, points, digits, downloads, folders; the index stream and batches, which are CPU tensors in a GPU run too, made before the batch moves to the device).
Evaluation is off (``eval=none``): it runs every 1,000 steps and waits on its results by design.

Target (issue 15): at most 0.05 syncs per batch for every family.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gansuite.config.keys import CONF_DIR
from gansuite.training.run import train

FAMILIES = {
    # name: overrides (each family's networks; the offline data it trains on)
    "unconditional": ["model=dcgan", "data=mnist_offline"],
    "conditional": ["model=projection", "data=mnist_offline"],
    # Narrow nets: counting needs no full-width U-Net, which runs at about 1.5 steps/s on 2 CPU cores.
    "paired": ["model=pix2pix", "data=edges2digits", "model.generator.width=8", "model.discriminator.width=8"],
    # Issue 21's families with what they add to a step: ADA's p controller, LeCam's averages, lazy R1 and
    # path length, a relativistic G loss. Narrow nets, as for the paired family.
    "biggan_ada_lecam": ["model=biggan", "data=mnist_offline", "data.resolution=32", "model.generator.width=8",
                         "model.discriminator.width=8", "loss=hinge", "loss/regularizer=lecam", "augment=ada"],
    "stylegan2_ada_ragan": ["model=stylegan2", "data=mnist_offline", "data.resolution=32", "model.latent_dim=64",
                            "model.generator.w_dim=64", "model.generator.channel_base=512",
                            "model.generator.channel_max=32", "model.discriminator.channel_base=512",
                            "model.discriminator.channel_max=32", "loss=ragan", "loss/regularizer=r1",
                            "augment=ada"],
}
TARGET = 0.05

# The image and point data modules' own CPU work (they were gansuite/data.py, which this count skipped);
# the image-pair modules (pairs.py, superres.py, unpaired.py) are counted, as they were.
_DATA_FILES = {"base.py", "points.py", "digits.py", "downloads.py", "folders.py"}


class SyncCounter(TorchDispatchMode):
    """Counts ``_local_scalar_dense`` calls, except on tensors in ``ignored`` (data pointers)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0  # _local_scalar_dense
        self.tolist = 0  # Tensor.tolist
        self.ignored_counts = 0
        self.active = False
        self.where: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.active and func is torch.ops.aten._local_scalar_dense.default:
            if self.cpu_only(args[0]):
                self.ignored_counts += 1
            else:
                self.count += 1
        return func(*args, **(kwargs or {}))

    def cpu_only(self, tensor: torch.Tensor) -> bool:
        """Whether a conversion is of a tensor that stays on the CPU in a GPU run (else: note where it came from)."""
        stack = traceback.extract_stack()[:-2]
        if tensor.device.type == "cpu" and any(f"torch{os.sep}optim{os.sep}" in f.filename or
                                               Path(f.filename).parent.name == "data" and Path(f.filename).name in _DATA_FILES for f in stack):
            return True
        frame = next((f for f in reversed(stack) if f"{os.sep}torch{os.sep}" not in f.filename
                      and "host_syncs.py" not in f.filename), None)
        where = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}" if frame else "?"
        self.where[where] = self.where.get(where, 0) + 1
        return False


class Window(L.Callback):
    """Counts from the first training batch to the end of fit (the last checkpoint included)."""

    def __init__(self, counter: SyncCounter) -> None:
        self.counter = counter
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.counter.active = True
        self.batches += 1

    def on_fit_end(self, trainer, pl_module) -> None:
        self.counter.active = False


def measure(family: str, steps: int, workdir: Path, device: str = "cpu") -> dict[str, float]:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    trainer = "trainer=gpu" if device == "cuda" else "trainer=cpu"
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=[*FAMILIES[family], trainer, "eval=none", "logger=csv",
                                          f"trainer.max_steps={steps}", "trainer.log_every_n_steps=50"])
    counter = SyncCounter()
    window = Window(counter)
    with open_dict(cfg):
        cfg.paths.output_dir = str(workdir / family)
        cfg.logger.save_dir = str(workdir / family)
    original_init, original_tolist = L.Trainer.__init__, torch.Tensor.tolist

    def init(self, *args, callbacks=(), **kwargs):
        # The window callback goes first, so it opens before any other callback's batch hooks run.
        original_init(self, *args, callbacks=[window, *callbacks], **kwargs)

    def tolist(self):
        if counter.active:
            if counter.cpu_only(self):
                counter.ignored_counts += 1
            else:
                counter.tolist += 1
        return original_tolist(self)

    start = time.perf_counter()
    L.Trainer.__init__, torch.Tensor.tolist = init, tolist
    try:
        with counter:
            result = train(cfg)
    finally:
        L.Trainer.__init__, torch.Tensor.tolist = original_init, original_tolist
    seconds = time.perf_counter() - start
    batches = window.batches
    syncs = counter.count + counter.tolist
    return {"family": family, "batches": batches, "steps": result["step"], "item": counter.count,
            "tolist": counter.tolist, "syncs": syncs, "per_batch": syncs / max(batches, 1), "cpu_only": counter.ignored_counts,
            "seconds": seconds, "where": counter.where}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--steps", type=int, default=500, help="gansuite steps per family (a grid falls at 500)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            rows.append(measure(family, args.steps, Path(tmp), args.device))
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "rows": rows}, indent=2) + "\n")
    print(f"\nhost syncs per training batch (log_every_n_steps=50, default callbacks, eval off; target <= {TARGET})")
    print(f"{'family':<14} {'batches':>7} {'item':>5} {'tolist':>6} {'per batch':>9} {'CPU-only (not counted)':>23}"
          "  verdict")
    for r in rows:
        verdict = "ok" if r["per_batch"] <= TARGET else "OVER"
        print(f"{r['family']:<14} {r['batches']:>7} {r['item']:>5} {r['tolist']:>6} {r['per_batch']:>9.4f} "
              f"{r['cpu_only']:>23}  {verdict}")
    for r in rows:
        if r["where"]:
            print(f"{r['family']}: " + ", ".join(f"{k} x{v}" for k, v in sorted(r["where"].items(), key=lambda i: -i[1])))


if __name__ == "__main__":
    main()
