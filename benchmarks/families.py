"""Training speed and memory of the CIFAR-10-size BigGAN and StyleGAN2 presets, beside DCGAN's, through gansuite.

    python benchmarks/families.py --device cuda                      # the presets as they are, on a GPU
    python benchmarks/families.py --device cuda --precision bf16-mixed --compile
    python benchmarks/families.py --smoke                            # a CPU dry run: narrow nets, 2 batches

Each preset (``experiment=<name>``) trains through ``gansuite.training.run.train`` with its own model, loss,
regularizer, augmentation and batch size, on random 3 x 32 x 32 images with random labels already on the device
(throughput.py's ``DeviceData``: no data loading in the timed window), ``eval=none``, ``logger=csv``. Timed:
``--batches`` training batches (D updates) after ``--warmup`` untimed ones. Printed per preset: real images per
second (what D sees), G updates per second, peak device memory (CUDA) and each network's parameter count, and
every preset's images per second as a ratio to DCGAN's measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import BenchHooks, DeviceData  # noqa: E402

from gansuite.config.keys import CONF_DIR  # noqa: E402

PRESETS = ("dcgan_cifar10", "biggan_cifar10", "biggan_diffaug_cifar10", "stylegan2_cifar10", "stylegan2_ada_cifar10")
# --smoke: each family's narrowest sensible nets, so the whole script runs in a minute on a CPU.
NARROW = {
    "dcgan": ["model.generator.width=8", "model.discriminator.width=8"],
    "biggan": ["model.generator.width=4", "model.discriminator.width=4"],
    "stylegan2_conditional": ["model.generator.channel_base=256", "model.generator.channel_max=16",
                              "model.discriminator.channel_base=256", "model.discriminator.channel_max=16",
                              "model.generator.w_dim=16", "model.latent_dim=16"],
}


class LabelledDeviceData(DeviceData):
    """throughput.py's device-resident random images, with ten classes of random labels for conditional models."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = 10
        gen = torch.Generator().manual_seed(kwargs["seed"] + 2)
        self.y = torch.randint(10, (len(self.x),), generator=gen).to(self.x.device)


def preset_config(preset: str, args: argparse.Namespace) -> Any:
    cuda = args.device == "cuda"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose(config_name="train", overrides=[f"experiment={preset}"])
        overrides = [f"experiment={preset}", "eval=none", "logger=csv", "callbacks=default",
                     f"trainer={'gpu' if cuda else 'cpu'}", f"trainer.precision={args.precision}",
                     f"trainer.compile={str(args.compile).lower()}",
                     f"trainer.max_steps={-(-(args.warmup + args.batches) // full.loss.n_critic) + 1}"]
        if args.smoke:
            overrides += NARROW.get(full.model.name, [])
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.data = OmegaConf.create({
            "_target_": f"{__name__}.LabelledDeviceData", "shape": [3, 32, 32], "size": args.dataset_size,
            "batch_size": int(full.data.batch_size), "seed": 0, "device": args.device, "channels_last": False})
        cfg.callbacks.bench = {"_target_": "throughput.BenchHooks", "warmup": args.warmup, "steps": args.batches,
                               "device": args.device, "profile": None}
    return cfg


def measure(preset: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from gansuite.training.run import train

    cfg = preset_config(preset, args)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / preset)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train(cfg)
    hooks = next(cb for cb in result["trainer"].callbacks if isinstance(cb, BenchHooks))
    module, batch = result["module"], int(cfg.data.batch_size)
    return {
        "preset": preset, "batch_size": batch, "n_critic": module.n_critic,
        "img_per_s": args.batches * batch / hooks.seconds,
        "g_updates_per_s": args.batches / module.n_critic / hooks.seconds,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
        "g_params": sum(p.numel() for p in module.generator.parameters()),
        "d_params": sum(p.numel() for p in module.discriminator.parameters()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (trainer.compile=true)")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--batches", type=int, default=40, help="timed training batches (D updates)")
    p.add_argument("--warmup", type=int, default=8, help="untimed batches before them")
    p.add_argument("--dataset-size", type=int, default=4096)
    p.add_argument("--smoke", action="store_true", help="narrow nets and 2 + 2 batches: checks the script runs")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.batches, args.warmup = 4, 4
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            rows.append(measure(preset, args, Path(tmp)))
    base = next((r["img_per_s"] for r in rows if r["preset"] == "dcgan_cifar10"), None)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"\n{device}, {args.precision}{', compiled' if args.compile else ''}{', SMOKE (narrow nets)' if args.smoke else ''}")
    print(f"{'preset':<24}{'batch':>6}{'n_critic':>9}{'img/s':>10}{'G upd/s':>9}{'vs dcgan':>9}{'peak GiB':>9}"
          f"{'G params':>12}{'D params':>12}")
    for r in rows:
        ratio = f"{r['img_per_s'] / base:.2f}" if base else "-"
        mem = f"{r['peak_mem_gib']:.2f}" if r["peak_mem_gib"] is not None else "-"
        print(f"{r['preset']:<24}{r['batch_size']:>6}{r['n_critic']:>9}{r['img_per_s']:>10.1f}"
              f"{r['g_updates_per_s']:>9.2f}{ratio:>9}{mem:>9}{r['g_params']:>12,}{r['d_params']:>12,}")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
