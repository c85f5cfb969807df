"""Worker for tests/test_distributed.py: train a tiny DCGAN a few steps and save its state.

    python tests/ddp_equivalence.py --out one.pt --batch 8 --loss nonsaturating            # 1 process
    torchrun --nproc_per_node 2 tests/ddp_equivalence.py --out two.pt --batch 4 --loss ...  # 2 processes

Every random draw of a step (z, and the gradient penalty's interpolation weights) is made for the
whole global batch from a generator keyed by the step, and each rank takes the rows that match the
data rows it holds (rank r holds rows r, r + world, ...; data.base.InfiniteSampler). So the only
difference between the runs is how the batch is split over processes, and their final states
should agree to float rounding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gansuite.training.distributed  # noqa: E402
from gansuite.config.build import build
from gansuite.config.keys import CONF_DIR
from gansuite.regularizers import GradientPenalty  # noqa: E402
from gansuite.training.distributed import GANDDPStrategy


def rows_of_this_rank(module: L.LightningModule, kind: int, local: int, draw, *shape: int) -> torch.Tensor:
    world, rank = module.trainer.world_size, module.trainer.global_rank
    generator = torch.Generator().manual_seed(1000 * module.trainer.global_step + kind)
    return draw(local * world, *shape, generator=generator)[rank::world]


class SlicedPenalty(GradientPenalty):
    module: L.LightningModule

    def interpolation_weights(self, real: torch.Tensor) -> torch.Tensor:
        alpha = rows_of_this_rank(self.module, 2, real.shape[0], torch.rand, *(1,) * (real.dim() - 1))
        return alpha.to(real)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, required=True, help="per process")
    parser.add_argument("--loss", choices=["nonsaturating", "wgan_gp"], required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()

    overrides = [
        "model=dcgan", "data=mnist_offline", f"data.batch_size={args.batch}", f"loss={args.loss}",
        "model.generator.width=8", "model.discriminator.width=8", "model.latent_dim=16",
        "trainer=debug", "logger=none", "callbacks=none", "eval=none",
    ]
    if args.loss == "wgan_gp":
        overrides += ["model.discriminator.norm=layer", "loss.n_critic=2"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    L.seed_everything(0, verbose=False)
    datamodule, module = build(cfg)

    latent = cfg.model.latent_dim

    def generate(batch):
        return module.generator(rows_of_this_rank(module, 1, batch[0].shape[0], torch.randn, latent))

    module.generate = generate
    if module.regularizer is not None:
        penalty = SlicedPenalty(module.regularizer.weight, module.regularizer.target)
        penalty.module = module
        module.regularizer = penalty

    # Record how many gradient elements each optimizer step reduces: D's step must reduce D's alone.
    reduced: list[int] = []
    reduce = gansuite.training.distributed.all_reduce_gradients

    def counting_reduce(parameters, world=None):
        parameters = list(parameters)
        reduced.append(sum(p.numel() for p in parameters if p.grad is not None))
        reduce(parameters, world)

    gansuite.training.distributed.all_reduce_gradients = counting_reduce
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    distributed = args.devices > 1
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=GANDDPStrategy(sync_batchnorm=True) if distributed else "auto",
        max_steps=args.steps * module.optimizer_steps_per_step,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    if trainer.global_rank == 0:
        final = {k: v.detach().clone() for k, v in module.state_dict().items()}
        torch.save({"initial": initial, "final": final, "reduced": reduced, "wrapped": type(trainer.model).__name__,
                    "sizes": {"generator": sum(p.numel() for p in module.generator.parameters()),
                              "discriminator": sum(p.numel() for p in module.discriminator.parameters())}},
                   args.out)


if __name__ == "__main__":
    main()
