"""CycleGAN (Zhu, Park, Isola & Efros 2017, arXiv:1703.10593): unpaired translation between two domains.

Two generators, G = ``a2b``: A -> B and F = ``b2a``: B -> A, and two PatchGAN discriminators,
D_A (judges domain A) and D_B (judges domain B). Batches are ``(a, b)``: images of the two
domains, not aligned. The generators are trained to fool the discriminators and to undo each
other (cycle consistency), which is what makes unpaired data enough:

    L_G = adversarial_weight * (g_loss(D_B(G(a))) + g_loss(D_A(F(b))))
          + cycle_weight * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)
          + identity_weight * cycle_weight * (|F(a) - a|_1 + |G(b) - b|_1)
    L_D = d_loss(D_A(a), D_A(pool_A(F(b)))) + d_loss(D_B(b), D_B(pool_B(G(a))))

with |.|_1 the mean absolute error. **Loss scaling.** The paper uses the least-squares objective
(``loss=lsgan``) and G's adversarial term (D(G(x)) - 1)^2, but ``gansuite.losses.lsgan_g`` is
0.5 (D(G(x)) - 1)^2; ``adversarial_weight=2`` (the default) undoes that half, so with ``loss=lsgan``
L_G is exactly the paper's (and the authors' code's) (D_B(G(a)) - 1)^2 + (D_A(F(b)) - 1)^2
+ 10 cycle + 5 identity. ``lsgan_d`` = 0.5 (D(x) - 1)^2 + 0.5 D(G(x))^2 already equals the authors'
D loss (the paper's objective halved, "to slow down the rate at which D learns"). With another
objective, 2 doubles its generator term; set ``adversarial_weight=1`` to take it as it is.
``identity_weight`` is a fraction of ``cycle_weight``, as the authors' ``lambda_identity``: the
paper's 0.5 lambda is ``identity_weight=0.5``. The identity term needs domains with equal channels.

D sees G's fakes through an :class:`ImagePool`, a random history of up to 50 earlier fakes
(Shrivastava et al. 2017), so it does not chase G's latest mistakes. Both Gs share one Adam and both
Ds another, as in the authors' code: the family passes ``nn.ModuleDict``s
(:class:`gansuite.nets.cyclegan.Generators`, :class:`gansuite.nets.cyclegan.Discriminators`) to the base.
The networks themselves are described in :mod:`gansuite.nets.cyclegan`.

Not the paper's: D is updated before G in each step (the base's schedule; the authors update G first,
on the same fakes), steps instead of epochs for the LR schedule (:func:`linear_decay_over`), and no
regularizers for the two Ds. Grids, the dry run and evaluation translate A -> B.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansuite.errors import ConfigError
from gansuite.models.schedule import AdversarialModule
from gansuite.models.translation import draw_indices
from gansuite.nets.cyclegan import non_negative_int

Direction = Literal["a2b", "b2a"]


# ----------------------------------------------------------------------------- image pool
class ImagePool(nn.Module):
    """A history of generated images that D is shown instead of only the newest (Shrivastava et al. 2017).

    As the authors' ``ImagePool``: until ``size`` images are stored, each new image is stored and
    returned; after that each new image is, with probability 0.5, returned as it is, or else swapped
    for a uniformly chosen stored image, which is returned while the new one takes its place. Images
    of a batch go in one after another, so one may come back out for a later image of the same batch.

    Randomness comes from torch's global CPU generator, drawn on the CPU whatever the device (the same
    numbers on a GPU): the base module saves and restores that generator's state in checkpoints, and
    :class:`CycleGAN` saves the stored images with them, so a resumed run continues exactly.

    The images live in a non-persistent buffer (it follows the module across devices but stays out of
    ``state_dict``, whose tensors must keep their shapes from run to run while the pool fills up).

    Args:
        size: images kept; 0 turns the pool off (every call returns its input).
    """

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        non_negative_int(size, "model.module.pool_size", "the paper keeps 50 images; 0 turns the pool off.")
        self.size = size
        self.register_buffer("images", torch.empty(0), persistent=False)

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """The (B, ...) images to show D in place of ``images``, detached; updates the pool."""
        if self.size == 0:
            return images.detach()
        images = images.detach()
        n = len(images)
        swap = (torch.rand(n) > 0.5).tolist()  # both draws every call: a fixed use of the generator
        slots = torch.randint(self.size, (n,)).tolist()
        fill = min(n, self.size - len(self.images))
        if fill:  # copies, so later swaps never write into a tensor G's loss still uses
            new = images[:fill].clone()
            self.images = new if len(self.images) == 0 else torch.cat([self.images.to(new), new])
        stored = self.images.to(images.dtype)
        out = images.clone()
        for i in range(fill, n):
            if swap[i]:
                out[i] = stored[slots[i]]
                stored[slots[i]] = images[i]
        self.images = stored
        return out

    def extra_repr(self) -> str:
        return f"size={self.size}"


# ----------------------------------------------------------------------------- LR schedule
def linear_decay(optimizer: torch.optim.Optimizer, *, constant_steps: int,
                 decay_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The paper's schedule: the initial LR for ``constant_steps`` steps, then linearly down to 0.

    As the authors' ``linear`` policy with epochs read as steps: step k (from 0) runs at
    ``lr * (1 - max(0, k + 1 - constant_steps) / (decay_steps + 1))``, so each of the ``decay_steps``
    decaying steps has a positive LR and the LR is 0 from step ``constant_steps + decay_steps`` on.
    The base steps schedulers once per gansuite step (G update).
    """
    for name, value, minimum in (("constant_steps", constant_steps, 0), ("decay_steps", decay_steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"linear_decay: {name} must be an integer of at least {minimum} (got {value!r})")

    def factor(step: int) -> float:
        return max(0.0, 1.0 - max(0, step + 1 - constant_steps) / (decay_steps + 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def linear_decay_over(optimizer: torch.optim.Optimizer, *, total_steps: int,
                      decay_start: float = 0.5) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`linear_decay` over a run of ``total_steps``, constant for its first ``decay_start`` part.

    The paper's 100 constant + 100 decaying epochs are ``decay_start=0.5``; the config passes
    ``total_steps: ${trainer.max_steps}`` so the LR reaches 0 as the run ends.
    """
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
        raise ValueError(f"linear_decay_over: total_steps must be a positive integer (got {total_steps!r})")
    if not isinstance(decay_start, (int, float)) or not 0.0 <= decay_start < 1.0:
        raise ValueError(f"linear_decay_over: decay_start must be in [0, 1) (got {decay_start!r}); "
                         "the paper's is 0.5")
    constant = int(total_steps * decay_start)
    return linear_decay(optimizer, constant_steps=constant, decay_steps=total_steps - constant)


# ----------------------------------------------------------------------------- the GAN
class CycleGAN(AdversarialModule):
    """Two generators and two discriminators trained together on unaligned ``(a, b)`` batches.

    Each step: both generators translate the batch; D_A and D_B are updated on real images and on
    fakes passed through their image pools; then both generators are updated on the adversarial,
    cycle and identity terms (see the module docstring for the losses and their scaling).

    Logged: ``train/d_loss`` and its parts ``train/d_loss_a``, ``train/d_loss_b``; ``train/g_loss`` and
    the unweighted sums over both directions ``train/g_adversarial``, ``train/g_cycle``,
    ``train/g_identity`` (when used).

    Grids, the dry run and evaluation draw inputs from ``examples`` (held-out images of each domain,
    kept with the module, not in checkpoints): ``make_inputs`` returns ``(a, b)``, samples are G(a)
    and :meth:`score` is D_B's. :meth:`translate` goes either way.

    Args:
        examples: ``(a, b)`` held-out images of domain A and of domain B (any two non-zero lengths).
        cycle_weight: lambda, the weight of the two cycle terms (10 in the paper).
        identity_weight: the identity terms' weight as a fraction of ``cycle_weight`` (the paper's 0.5;
            0 turns them off, as it must for domains with different channel counts).
        adversarial_weight: the weight of the two adversarial terms; 2 makes ``loss=lsgan`` the paper's.
        pool_size: fakes each :class:`ImagePool` keeps (50); 0 shows D only the newest.
        (the rest: see :class:`~gansuite.models.schedule.AdversarialModule`; ``regularizer`` must be None)
    """

    augmentable = False  # two discriminators in a ModuleDict

    def __init__(self, *, examples: tuple[Tensor, Tensor], cycle_weight: float = 10.0,
                 identity_weight: float = 0.5, adversarial_weight: float = 2.0, pool_size: int = 50,
                 **kwargs: Any) -> None:
        if kwargs.get("regularizer") is not None:
            raise ConfigError("loss.regularizer: CycleGAN does not regularize its two discriminators; "
                              "use loss/regularizer=none.")
        pairs = (("model.generator", kwargs.get("generator"), {"a2b", "b2a"}, "Generators"),
                 ("model.discriminator", kwargs.get("discriminator"), {"a", "b"}, "Discriminators"))
        for key, net, names, target in pairs:
            if not isinstance(net, nn.ModuleDict) or set(net.keys()) != names:
                raise ConfigError(f"{key}: CycleGAN needs both networks of its pair in a ModuleDict with "
                                  f"keys {' and '.join(sorted(names))} (got {type(net).__name__}); "
                                  f"set {key}._target_=gansuite.models.cyclegan.{target}.")
        for key, value in (("cycle_weight", cycle_weight), ("identity_weight", identity_weight),
                           ("adversarial_weight", adversarial_weight)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ConfigError(f"model.module.{key} must be a number of at least 0 (got {value!r}); "
                                  "the paper's are cycle_weight=10, identity_weight=0.5, "
                                  "adversarial_weight=2.")
        a, b = examples
        if len(a) == 0 or len(b) == 0:
            raise ValueError(f"CycleGAN: examples must hold images of both domains, "
                             f"got {len(a)} and {len(b)}")
        if identity_weight > 0 and cycle_weight > 0 and a.shape[1] != b.shape[1]:
            raise ConfigError(f"model.module.identity_weight={identity_weight} compares images of domain A "
                              f"({a.shape[1]} channels) with translations into B ({b.shape[1]} channels); "
                              "set model.module.identity_weight=0 for domains with different channels.")
        super().__init__(**kwargs)
        self.register_buffer("examples_a", a, persistent=False)
        self.register_buffer("examples_b", b, persistent=False)
        self.cycle_weight = cycle_weight
        self.identity_weight = identity_weight
        self.adversarial_weight = adversarial_weight
        self.pools = nn.ModuleDict({"a": ImagePool(pool_size), "b": ImagePool(pool_size)})

    # ---------------------------------------------------------- grids and metrics
    def make_inputs(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        def draw(examples: Tensor) -> Tensor:
            return examples[draw_indices(len(examples), n, generator).to(examples.device)]

        return draw(self.examples_a), draw(self.examples_b)

    def run_generator(self, net: nn.Module, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return net["a2b"](inputs[0])

    def score(self, samples: Tensor, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return self.discriminator["b"](samples)

    @torch.no_grad()
    def translate(self, x: Tensor, direction: Direction = "a2b", ema: bool = True) -> Tensor:
        """Images of one domain translated into the other by the EMA generators (or the raw ones), eval mode.

        Args:
            x: (B, C, H, W) images of domain A for ``"a2b"``, of domain B for ``"b2a"``.
            direction: ``"a2b"`` (G) or ``"b2a"`` (F).
            ema: use the EMA copies when the run kept them.
        """
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"CycleGAN.translate: direction must be a2b or b2a, got {direction!r}")
        with self.evaluating(ema) as net:
            return net[direction](x.to(self.device, self.dtype))

    # ---------------------------------------------------------------- one step
    def generate(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """(G(a), F(b)): the batch translated each way; the cycle and identity passes wait for G's update."""
        a, b = batch
        return self.generator["a2b"](a), self.generator["b2a"](b)

    def discriminator_loss(self, batch, fake: tuple[Tensor, Tensor], regularize: bool) -> dict[str, Tensor]:
        a, b = batch
        fake_b, fake_a = self.pools["b"](fake[0]), self.pools["a"](fake[1])
        d_a, d_b = self.discriminator["a"], self.discriminator["b"]
        loss_a = self.objective.d_loss(d_a(a), d_a(fake_a))
        loss_b = self.objective.d_loss(d_b(b), d_b(fake_b))
        return {"loss": loss_a + loss_b, "loss_a": loss_a, "loss_b": loss_b}

    def generator_loss(self, batch, fake: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        a, b = batch
        fake_b, fake_a = fake
        g, f = self.generator["a2b"], self.generator["b2a"]
        adversarial = (self._g_adversarial(self.discriminator["b"], b, fake_b)
                       + self._g_adversarial(self.discriminator["a"], a, fake_a))
        cycle = F.l1_loss(f(fake_b), a) + F.l1_loss(g(fake_a), b)
        terms = {"adversarial": adversarial, "cycle": cycle}
        loss = self.adversarial_weight * adversarial + self.cycle_weight * cycle
        identity_coefficient = self.identity_weight * self.cycle_weight
        if identity_coefficient > 0:  # skipped when off: it costs two more generator passes
            terms["identity"] = F.l1_loss(f(a), a) + F.l1_loss(g(b), b)
            loss = loss + identity_coefficient * terms["identity"]
        terms["loss"] = loss
        return terms

    # ------------------------------------------------------------ exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # Beside the state dict, whose shapes must not change as the pools fill (resume checks them).
        checkpoint["image_pools"] = {name: pool.images.detach().cpu().clone()
                                     for name, pool in self.pools.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        for name, images in (checkpoint.get("image_pools") or {}).items():
            pool = self.pools[name]
            pool.images = images[: pool.size].to(pool.images.device)
