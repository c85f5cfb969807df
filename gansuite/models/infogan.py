"""InfoGAN (Chen et al. 2016, arXiv:1606.03657): latent codes that G must keep recoverable from its images.

G's input is one tensor, ``[z, one_hot(c_cat_1), ..., one_hot(c_cat_n), c_cont]``, so evaluation, grids
and checkpoints see an unconditional z -> x GAN with a longer z. D has one body and two heads: the
real/fake score (``discriminator(x)``) and Q's parameters of q(c | x) (``discriminator.features_and_q(x)``,
both from one body pass). The mutual-information term L_I is the negative log-likelihood of the codes
that made a fake under Q:

- categorical code with K values (prior uniform): cross-entropy of Q's K logits;
- continuous code (prior uniform(-1, 1)): Gaussian NLL. By default Q outputs only the mean and the
  standard deviation is fixed at 1 (``cont_std=1.0``), as in the authors' code (``Uniform(1, fix_std=True)``).
  The NLL is then 0.5 (c - mu)^2 plus a constant: bounded below, so L_I cannot run away from the GAN
  loss. With ``cont_std=None`` Q also outputs a log-variance per code; that NLL has no lower bound
  (Q can shrink the variance on easy codes); the paper notes that with continuous codes, whose L_I involves
  a differential entropy, lambda is usually set smaller to keep lambda L_I on the scale of the GAN loss.

lambda_cat * L_I(cat) + lambda_cont * L_I(cont) is added to D/Q's loss and to G's loss (the paper's
min_{G,Q} max_D V(D, G) - lambda L_I(G, Q)). Q's head lives inside the discriminator, so D's optimizer
updates it in D's step, on that step's fakes, together with the shared body: the authors' code does the
same (Q's layers sit in D's variable scope and D's optimizer minimises D's loss plus the L_I term), and it
keeps one optimizer per shared parameter. G's step then lowers L_I through G only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gansuite.errors import ConfigError
from gansuite.models.gan import UnconditionalGAN
from gansuite.nets.infogan import check_codes, q_size


def info_nll(q: Tensor, cat: Tensor, cont: Tensor, categorical: Sequence[int],
             cont_std: float | None) -> tuple[Tensor, Tensor]:
    """-log Q(c | x), averaged over the batch: (categorical codes summed, continuous codes summed).

    Args:
        q: Q's outputs (B, q_size): the logits of each categorical code, then the continuous means,
            then (when ``cont_std`` is None) their log-variances.
        cat: the categorical codes as indices (B, len(categorical)).
        cont: the continuous codes (B, n_cont).
        cont_std: the fixed standard deviation of Q's Gaussians, or None when Q outputs log-variances.
    """
    zero = q.new_zeros(())
    cat_nll = zero
    start = 0
    for i, k in enumerate(categorical):
        cat_nll = cat_nll + F.cross_entropy(q[:, start:start + k], cat[:, i])
        start += k
    n = cont.shape[1]
    if not n:
        return cat_nll, zero
    mean = q[:, start:start + n]
    if cont_std is None:
        log_var = q[:, start + n:start + 2 * n]
    else:
        log_var = torch.full_like(mean, 2.0 * math.log(cont_std))
    per_code = 0.5 * (math.log(2 * math.pi) + log_var + (cont - mean) ** 2 * torch.exp(-log_var))
    return cat_nll, per_code.sum(1).mean()


class InfoGAN(UnconditionalGAN):
    """The InfoGAN schedule: the adversarial loss plus lambda-weighted L_I in both D/Q's and G's update.

    Args:
        latent_dim: size of the noise z (the paper's MNIST: 62).
        categorical: number of values of each categorical code, prior uniform (the paper: [10]).
        continuous: number of continuous codes, prior uniform(-1, 1) (the paper: 2).
        cont_std: fixed standard deviation of Q's Gaussian for continuous codes, or None to learn it.
        lambda_cat, lambda_cont: weights of L_I for the categorical and the continuous codes (the paper: 1).
        noise: distribution of z: "uniform" on [-1, 1] (the authors' code) or "normal".
        (the rest: see :class:`gansuite.models.schedule.AdversarialModule`)
    """

    def __init__(self, *, categorical: Sequence[int] = (10,), continuous: int = 2, cont_std: float | None = 1.0,
                 lambda_cat: float = 1.0, lambda_cont: float = 1.0,
                 noise: Literal["uniform", "normal"] = "uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.categorical, self.continuous = check_codes(categorical, continuous)
        for key, value in (("lambda_cat", lambda_cat), ("lambda_cont", lambda_cont)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"model.module.{key} must be a number >= 0 (got {value!r}); the paper uses 1.0.")
        if cont_std is not None and not (isinstance(cont_std, (int, float)) and cont_std > 0):
            raise ConfigError(f"model.cont_std must be a positive number or null (got {cont_std!r}); "
                              "use 1.0 (the authors' fixed-variance Q) or null to let Q learn it.")
        if noise not in ("uniform", "normal"):
            raise ConfigError(f"model.module.noise must be uniform or normal (got {noise!r}).")
        self.cont_std, self.lambda_cat, self.lambda_cont, self.noise = cont_std, lambda_cat, lambda_cont, noise
        self.input_dim = self.latent_dim + sum(self.categorical) + self.continuous
        got_in = getattr(self.generator, "input_dim", None)
        if got_in is not None and got_in != self.input_dim:
            raise ConfigError(f"model.generator takes inputs of size {got_in} but latent_dim and the codes make "
                              f"{self.input_dim}; let model.generator read latent_dim, categorical and continuous "
                              "from ${model.*} as conf/model/infogan.yaml does.")
        want_q = q_size(self.categorical, self.continuous, cont_std)
        if getattr(self.discriminator, "q_size", None) != want_q:
            raise ConfigError(f"model.discriminator's Q head gives {getattr(self.discriminator, 'q_size', None)} "
                              f"outputs but the codes need {want_q}; let model.discriminator read categorical, "
                              "continuous and cont_std from ${model.*} as conf/model/infogan.yaml does.")

    # ------------------------------------------------------------------ codes
    @property
    def code_names(self) -> list[str]:
        """One name per code, in input order: cat0, cat1, ..., cont0, cont1, ..."""
        return [f"cat{i}" for i in range(len(self.categorical))] + [f"cont{i}" for i in range(self.continuous)]

    def _draw(self, n: int, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """(z, categorical indices, continuous codes) from their priors."""
        if self.noise == "uniform":
            z = torch.rand(n, self.latent_dim, generator=generator, device=device) * 2 - 1
        else:
            z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        cat = torch.stack([torch.randint(k, (n,), generator=generator, device=device) for k in self.categorical], 1) \
            if self.categorical else torch.zeros(n, 0, dtype=torch.long, device=device)
        cont = torch.rand(n, self.continuous, generator=generator, device=device) * 2 - 1
        return z, cat, cont

    def join(self, z: Tensor, cat: Tensor, cont: Tensor) -> Tensor:
        """The generator input [z, one_hot(cat_0), ..., cont] for codes given as indices and values."""
        one_hots = [F.one_hot(cat[:, i], k).to(z.dtype) for i, k in enumerate(self.categorical)]
        return torch.cat([z, *one_hots, cont.to(z.dtype)], 1)

    def code_slices(self) -> list[slice]:
        """Where each code (in :attr:`code_names` order) sits in the generator input."""
        slices, start = [], self.latent_dim
        for width in [*self.categorical, *([1] * self.continuous)]:
            slices.append(slice(start, start + width))
            start += width
        return slices

    def make_inputs(self, n: int, generator: torch.Generator) -> Tensor:
        return self.join(*self._draw(n, generator)).to(self.device, self.dtype)

    def make_code_inputs(self, n: int, generator: torch.Generator, code: int = 0) -> tuple[Tensor, Tensor]:
        """Inputs for n samples whose categorical code ``code`` takes its K values in turn (0, 1, ..., K-1, 0, ...),
        every other input drawn from its prior; and those values (n,).

        InfoGAN read as a class-conditional model: the classification accuracy score
        (:mod:`gansuite.metrics.augmentation`) asks for N samples of each value and matches values to classes.
        """
        if not 0 <= code < len(self.categorical):
            raise ValueError(f"code must index a categorical code (there are {len(self.categorical)}); got {code}")
        z, cat, cont = self._draw(n, generator)
        values = torch.arange(n) % self.categorical[code]
        cat[:, code] = values
        return self.join(z, cat, cont).to(self.device, self.dtype), values.to(self.device)

    def code_sweep_inputs(self, code: int, steps: int, rows: int, generator: torch.Generator) -> Tensor:
        """Inputs for a rows x columns grid (row-major) in which only code ``code`` changes along a row.

        Each row draws its own noise and other codes from ``generator``; code ``code`` (an index into
        :attr:`code_names`) takes, column by column, each of its K values if categorical (``steps`` is
        ignored) or ``linspace(-2, 2, steps)`` if continuous: twice the training range, as in the paper's
        Figure 2, to show how the factor extrapolates.
        """
        if not 0 <= code < len(self.code_names):
            raise ValueError(f"code must be in 0..{len(self.code_names) - 1} ({', '.join(self.code_names)}); got {code}")
        z, cat, cont = self._draw(rows, generator)
        if code < len(self.categorical):
            columns = self.categorical[code]
            cat = cat.repeat_interleave(columns, 0)
            cat[:, code] = torch.arange(columns).repeat(rows)
            cont = cont.repeat_interleave(columns, 0)
        else:
            columns = steps
            cont = cont.repeat_interleave(columns, 0)
            cont[:, code - len(self.categorical)] = torch.linspace(-2, 2, steps).repeat(rows)
            cat = cat.repeat_interleave(columns, 0)
        return self.join(z.repeat_interleave(columns, 0), cat, cont).to(self.device, self.dtype)

    # ---------------------------------------------------------------- one step
    def generate(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        real = batch[0]
        z, cat, cont = self._draw(real.shape[0], device=real.device)
        inputs = self.join(z.to(real.dtype), cat, cont.to(real.dtype))
        return self.generator(inputs), cat, cont

    def info_terms(self, q: Tensor, cat: Tensor, cont: Tensor) -> dict[str, Tensor]:
        """L_I (weighted, as added to the losses), its parts, and the categorical MI lower bound in nats."""
        cat_nll, cont_nll = info_nll(q, cat, cont, self.categorical, self.cont_std)
        terms = {"info": self.lambda_cat * cat_nll + self.lambda_cont * cont_nll}
        if self.categorical:
            # H(c) - CE: the variational lower bound on I(c; G(z, c)); its maximum is sum(log K).
            terms["mi_cat"] = sum(math.log(k) for k in self.categorical) - cat_nll
        if self.continuous:
            terms["info_cont"] = cont_nll
        return terms

    def discriminator_loss(self, batch, fake: tuple[Tensor, Tensor, Tensor], regularize: bool) -> dict[str, Tensor]:
        real = batch[0]
        fake_x, cat, cont = fake[0].detach(), fake[1], fake[2]
        real_out = self.discriminator(real)
        fake_out, q = self.discriminator.features_and_q(fake_x)
        self._observe_real(real_out)
        adversarial = self.objective.d_loss(real_out, fake_out)
        info = self.info_terms(q, cat, cont)
        terms = {"loss": adversarial + info["info"], "adv": adversarial, **info,
                 "real_score": real_out.mean(), "fake_score": fake_out.mean()}
        if self.categorical:
            terms["q_acc"] = (q[:, :self.categorical[0]].argmax(1) == cat[:, 0]).float().mean()
        if regularize:
            terms["reg"] = self._regularize(self.discriminator, real, fake_x, real_out, fake_out)
        return terms

    def generator_loss(self, batch, fake: tuple[Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
        fake_x, cat, cont = fake
        out, q = self.discriminator.features_and_q(fake_x)
        adversarial = self.objective.generator(out, self._real_scores(self.discriminator, batch[0]))
        info = self.info_terms(q, cat, cont)
        return {"loss": adversarial + info["info"], "adv": adversarial, **info}

    # ---------------------------------------------------------- using the codes
    @torch.no_grad()
    def predict_codes(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Q's reading of images, in eval mode: (categorical indices (B, n_cat), continuous means (B, n_cont))."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            _, q = self.discriminator.features_and_q(images.to(self.device, self.dtype))
        finally:
            self.discriminator.train(was_training)
        cats, start = [], 0
        for k in self.categorical:
            cats.append(q[:, start:start + k].argmax(1))
            start += k
        cat = torch.stack(cats, 1) if cats else q.new_zeros(len(q), 0, dtype=torch.long)
        return cat, q[:, start:start + self.continuous]


def cluster_accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Accuracy of ``predicted`` cluster ids as a classifier when each cluster is read as its most common label.

    The paper's "5% error" on MNIST matches each value of the categorical code to a digit; with as many
    values as digits a many-to-one majority mapping like this one can only score higher than a
    one-to-one matching, so read it as an upper bound on that number.
    """
    correct = 0
    for value in predicted.unique():
        members = labels[predicted == value]
        correct += int(members.bincount().max())
    return correct / len(labels)
