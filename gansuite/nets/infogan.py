"""InfoGAN's networks (Chen et al. 2016): the paper's MNIST G and D on DCGAN's, with Q's head on D.

At 28 px and width 64, DCGAN's networks are the paper's convolutional layers (Table 1); only the
fully connected layers are added here. Q shares D's body, so one pass gives the score and Q's outputs.
Training is :class:`gansuite.models.infogan.InfoGAN` (``model=infogan``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gansuite.errors import ConfigError
from gansuite.nets import dcgan
from gansuite.nets.init import normal_init


def check_codes(categorical: Sequence[int], continuous: int) -> tuple[list[int], int]:
    categorical = list(categorical)
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in categorical):
        raise ConfigError(f"model.categorical must be a list of category counts >= 2 (got {categorical!r}); "
                          "write model.categorical=[10] for one 10-way code, or [] for none.")
    if not isinstance(continuous, int) or isinstance(continuous, bool) or continuous < 0:
        raise ConfigError(f"model.continuous must be a whole number of continuous codes >= 0 (got {continuous!r}); "
                          "the paper's MNIST run uses model.continuous=2.")
    if not categorical and not continuous:
        raise ConfigError("model.categorical is empty and model.continuous is 0, so InfoGAN has no code to learn; "
                          "set model.categorical=[10] or model.continuous=2 (or use model=dcgan).")
    return categorical, continuous


def _init_fc(module: nn.Module) -> nn.Module:
    """DCGAN's init on linear layers and 1D batch norms, which the authors' code also used for its fully
    connected layers."""
    return normal_init(module, (nn.Linear,), (nn.BatchNorm1d,))


def q_size(categorical: Sequence[int], continuous: int, cont_std: float | None) -> int:
    """Outputs Q needs: K logits per categorical code, a mean per continuous code (and a log-variance if learned)."""
    return sum(categorical) + continuous * (1 if cont_std is not None else 2)


class Generator(nn.Module):
    """[z, codes] (B, latent_dim + code size) -> images (B, C, R, R): the paper's G, built on DCGAN's.

    The paper's MNIST G (Table 1, appendix C.1) is FC 1024 - FC 7x7x128 - upconv 64 - upconv 1, batch
    norm and ReLU throughout; the last three layers are exactly DCGAN's 28 px generator at width 64
    (its first transposed convolution from a 1x1 map is the FC to 7x7x128), so only the FC 1024 is new.

    Args:
        shape: (C, R, R) of one sample, R in 28, 32, 64.
        latent_dim: size of the noise z.
        categorical: the number of values of each categorical code.
        continuous: the number of continuous codes.
        width: DCGAN generator width (the paper: 64).
        hidden: units of the FC layer before DCGAN's generator (the paper: 1024); 0 for none.
    """

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int = 62, categorical: Sequence[int] = (10,),
                 continuous: int = 2, width: int = 64, hidden: int = 1024) -> None:
        super().__init__()
        categorical, continuous = check_codes(categorical, continuous)
        self.input_dim = latent_dim + sum(categorical) + continuous
        if hidden:
            self.fc = _init_fc(nn.Sequential(nn.Linear(self.input_dim, hidden, bias=False), nn.BatchNorm1d(hidden),
                                             nn.ReLU(True)))
        else:
            self.fc = nn.Identity()
        self.dcgan = dcgan.Generator(shape=shape, latent_dim=hidden or self.input_dim, width=width)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.dcgan(self.fc(inputs))


class Discriminator(nn.Module):
    """images -> one raw score per image (B,); :meth:`features_and_q` also gives Q's outputs.

    The paper's MNIST D/Q (Table 1): conv 64 - conv 128 (BN) - FC 1024 (BN), leaky ReLU 0.1, then FC 1
    for D and FC 128 (BN, leaky ReLU) - FC for Q. The two convolutions are DCGAN's 28 px discriminator
    body at width 64 (its score head is dropped).

    Args:
        shape: (C, R, R) of one sample, R in 28, 32, 64.
        categorical, continuous, cont_std: the codes Q predicts (see :func:`q_size`).
        width, norm, spectral_norm: as for :class:`gansuite.nets.dcgan.Discriminator`; ``norm`` also
            applies to the FC layers ("batch" is the paper's).
        hidden: units of the shared FC layer after the convolutions (the paper: 1024); 0 for none.
        q_hidden: units of Q's own hidden layer (the paper: 128); 0 for a linear Q head.
        leak: slope of the leaky ReLUs (the paper: 0.1; DCGAN's 0.2).
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        categorical: Sequence[int] = (10,),
        continuous: int = 2,
        cont_std: float | None = 1.0,
        width: int = 64,
        norm: Literal["batch", "layer", "none"] = "batch",
        spectral_norm: bool = False,
        hidden: int = 1024,
        q_hidden: int = 128,
        leak: float = 0.1,
    ) -> None:
        super().__init__()
        categorical, continuous = check_codes(categorical, continuous)
        self.q_size = q_size(categorical, continuous, cont_std)
        convs = dcgan.Discriminator(shape=shape, width=width, norm=norm, spectral_norm=spectral_norm)
        dcgan_head = convs.net[-1]
        body: list[nn.Module] = [*convs.net[:-1], nn.Flatten()]
        for layer in body:
            if isinstance(layer, nn.LeakyReLU):
                layer.negative_slope = leak  # DCGAN's body hard-codes 0.2
        features = dcgan_head.in_channels * math.prod(dcgan_head.kernel_size)

        def fc(d_in: int, d_out: int) -> list[nn.Module]:
            linear = _init_fc(nn.Linear(d_in, d_out, bias=norm == "none"))
            norms = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm, "none": lambda d: nn.Identity()}
            norm_layer = _init_fc(norms[norm](d_out))
            return [_sn(linear) if spectral_norm else linear, norm_layer, nn.LeakyReLU(leak, True)]

        if hidden:
            body += fc(features, hidden)
            features = hidden
        self.body = nn.Sequential(*body)
        score = _init_fc(nn.Linear(features, 1))
        self.score_head = _sn(score) if spectral_norm else score
        q_layers = fc(features, q_hidden) if q_hidden else []
        self.q_head = nn.Sequential(*q_layers, _init_fc(nn.Linear(q_hidden or features, self.q_size)))

    def forward(self, x: Tensor) -> Tensor:
        return self.score_head(self.body(x)).squeeze(1)

    def features_and_q(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(scores (B,), Q's outputs (B, q_size)) from one pass through the shared body."""
        h = self.body(x)
        return self.score_head(h).squeeze(1), self.q_head(h)
