"""BigGAN's G and D (Brock, Donahue & Simonyan 2019) for 32, 64 and 128 px images, and its orthogonal penalty.

Follows ajbrock/BigGAN-PyTorch (``BigGAN.py``, ``layers.py``, ``utils.ortho``), the authors' PyTorch code:

- G: z -> (SN) linear -> 4x4 map -> up-sampling residual blocks (BN, ReLU, 2x nearest, 3x3 conv, BN, ReLU,
  3x3 conv; shortcut 2x nearest then 1x1 conv) with optional self-attention after a block -> BN, ReLU,
  3x3 conv -> tanh. Its batch norms are conditional: gain ``1 + W_g c`` and bias ``W_b c`` per sample.
  ``c`` is a shared class embedding (``shared_dim``) concatenated with one chunk of z per block when z is
  hierarchical (the code's ``--G_shared --hier``): z is split into one chunk for the input linear plus one
  per block.
- D: down-sampling residual blocks (the first without the leading ReLU, pooling before its shortcut
  conv: the code's ``preactivation=False``), optional self-attention, ReLU, global *sum* pooling, an SN
  linear head plus the projection ``<embed(y), phi(x)>`` (Miyato & Koyama 2018).
- Channel multipliers of ``width`` per block, the code's ``G_arch`` / ``D_arch``: G 32 px 4,4,4 -> 4,4,4;
  64 px 16,16,8,4 -> 16,8,4,2; 128 px 16,16,8,4,2 -> 16,8,4,2,1. D 32 px 4,4,4,4 (down, down, -, -);
  64 px 1,2,4,8,16 (4 downs); 128 px 1,2,4,8,16,16 (5 downs). D's blocks are "wide" (hidden channels =
  output channels, the code's ``D_wide`` default).

Choices where the code has no answer or where gansuite differs:

- Unconditional G (``num_classes=None``): with hierarchical z the conditional norms take the z chunk alone;
  without it they are plain affine batch norms. The code has no unconditional path (its D always projects).
- ``shared_dim=None`` is the code without ``--G_shared`` (its CIFAR-10 script): every conditional norm then
  looks up its gain and bias in its own un-normalized class embedding, ``1 + embed(y)``. Hierarchical z
  needs the shared embedding there (the code concatenates onto it).
- Hierarchical z: ``latent_dim`` must split evenly into the chunks; the code silently drops the remainder.
- Attention at a resolution: after every block whose output map has that size. The code's ``D_arch[32]``
  lists 16 for all four D blocks, whose maps really are 16, 8, 8, 8; we use the real sizes. Resolutions the
  net does not have are skipped, as the code does with its default ``--G_attn 64`` at 32 px (and with
  ``--D_attn 64`` at 64 px: D's first block already halves the image). The inner channels ``C // 8`` and
  ``C // 2`` are clamped to at least 1 so tiny widths work.
- Spectral norm is ``torch.nn.utils.parametrizations.spectral_norm`` with one power iteration and eps 1e-8
  (the code's ``--SN_eps`` default); G's shared embedding and its per-class norm embeddings are never
  normalized (the code: "applying SN to G's embedding seems to randomly cripple G").
- Init as the code's ``init_weights``: only the weights of convolutions, linears and embeddings, N(0, 0.02)
  (``N02``), orthogonal (``ortho``) or Glorot-uniform (``glorot``); biases keep PyTorch's default init.

The authors' scripts (BigGAN-PyTorch at 9845943; unset flags are ``utils.prepare_parser`` defaults):

- ``scripts/launch_cifar_ema.sh``: ``--batch_size 50 --num_epochs 500 --num_D_steps 4 --G_lr 2e-4 --D_lr 2e-4
  --dataset C10 --G_ortho 0.0 --G_attn 0 --D_attn 0 --G_init N02 --D_init N02 --ema --use_ema
  --ema_start 1000``; defaults: G_ch = D_ch = 64, dim_z 128, no ``--G_shared`` and no ``--hier`` (so
  shared_dim is unused), Adam betas (0.0, 0.999) for both, ``--ema_decay`` 0.9999, BN_eps 1e-5, SN_eps 1e-8,
  hinge loss (``losses.py``). That script is ``Generator(shared_dim=None, hierarchical=False, attention=())``
  here. Note ``--G_ortho 0.0``: no orthogonal regularization in it.
- ``scripts/launch_BigGAN_bs256x8.sh`` (ImageNet 128 px): batch 256 x 8 accumulations, ``--num_D_steps 1
  --G_lr 1e-4 --D_lr 4e-4``, betas (0.0, 0.999), ``--G_attn 64 --D_attn 64``, ``--SN_eps 1e-6 --BN_eps 1e-5
  --adam_eps 1e-6 --G_ortho 0.0 --G_shared --G_init ortho --D_init ortho --hier --dim_z 120 --shared_dim 128
  --G_eval_mode --G_ch 96 --D_ch 96 --ema --use_ema --ema_start 20000``. ``utils.py``'s comment on ``--G_ortho``
  reads "1e-4 is default for BigGAN".

POSTECH-CVLab/PyTorch-StudioGAN's ``src/configs/CIFAR10/BigGAN.yaml`` (with ``src/config.py`` defaults)
differs from the CIFAR-10 script: ``g_conv_dim`` = ``d_conv_dim`` = 96 and its 32 px D is 2 x width wide
(G 4 x), shared embedding 128 with hierarchical ``z_dim`` 80, attention after G's 2nd block and D's 1st
(both 16 px: ``attention=(16,)`` here), batch 64, 5 D steps, betas (0.5, 0.999), ``ortho`` init, EMA 0.9999
from step 1000, 100k steps, hinge loss.

Parameter counts (computed; ``tests/test_biggan_nets.py`` pins them): the CIFAR-10 script's G (3 x 32 x 32,
10 classes, width 64, ``shared_dim=None, hierarchical=False, attention=()``) 4,304,387 and its D (width 64,
10 classes) 4,207,361; this module's defaults at 32 px with 10 classes (shared 128, hierarchical z of 128) G
4,373,251. The ImageNet script's nets (128 px, 1000 classes, width 96, ``latent_dim=120``, attention at 64)
come to G 70,433,988 and D 87,982,370.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gansuite.errors import ConfigError
from gansuite.nets.checks import check_classes, check_int

RESOLUTIONS = (32, 64, 128)
BOTTOM = 4  # G's first feature map, the code's bottom_width
SN_EPS = 1e-8  # BigGAN-PyTorch's --SN_eps default
INITS = ("N02", "ortho", "glorot")
ATTENTION_RESOLUTIONS = (4, 8, 16, 32, 64, 128)

# Channels as multiples of width: G's input map, then each block's output (the code's G_arch).
G_CHANNELS = {32: (4, 4, 4, 4), 64: (16, 16, 8, 4, 2), 128: (16, 16, 8, 4, 2, 1)}
# Each D block's output channels and whether it halves the map (the code's D_arch).
D_BLOCKS = {
    32: ((4, True), (4, True), (4, False), (4, False)),
    64: ((1, True), (2, True), (4, True), (8, True), (16, False)),
    128: ((1, True), (2, True), (4, True), (8, True), (16, True), (16, False)),
}

Init = Literal["N02", "ortho", "glorot"]


def _check_shape(shape: Sequence[int], key: str) -> tuple[int, int]:
    """(channels, resolution), after checking for square 32, 64 or 128 px images."""
    shape = tuple(shape)  # instantiate hands a list over
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in RESOLUTIONS:
        raise ConfigError(
            f"{key}: BigGAN's networks are built for square 32, 64 or 128 px images but the data gives samples "
            f"of shape {shape}; set data.resolution to 32, 64 or 128 (data.resolution=32 for 28 px MNIST)."
        )
    return shape[0], shape[1]


def _check_attention(attention: object, key: str) -> frozenset[int]:
    if attention is None:
        return frozenset()
    values = (attention,) if isinstance(attention, int) else attention
    try:
        values = tuple(values)
    except TypeError:
        values = (attention,)
    if not all(isinstance(r, int) and not isinstance(r, bool) and r in ATTENTION_RESOLUTIONS for r in values):
        raise ConfigError(f"{key}.attention must be a list of feature-map sizes among "
                          f"{', '.join(map(str, ATTENTION_RESOLUTIONS))} (got {attention!r}); BigGAN uses [64], "
                          "its CIFAR-10 script [].")
    return frozenset(values)


def _check_init(init: object, key: str) -> str:
    if init not in INITS:
        raise ConfigError(f"{key}.init must be one of {', '.join(INITS)} (got {init!r}); the CIFAR-10 script uses "
                          "N02, the ImageNet scripts ortho.")
    return init


def _init_weight(module: nn.Module, init: str) -> nn.Module:
    """The code's init_weights: the weight only; call it before spectral norm wraps the weight."""
    if init == "N02":
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif init == "ortho":
        nn.init.orthogonal_(module.weight)
    else:
        nn.init.xavier_uniform_(module.weight)
    return module


def _wrap(module: nn.Module, init: str, sn: bool) -> nn.Module:
    _init_weight(module, init)
    # The parametrization's power iterations at registration start u and v from the initialised weight.
    return _sn(module, eps=SN_EPS) if sn else module


def _conv(c_in: int, c_out: int, k: int, init: str, sn: bool, bias: bool = True) -> nn.Module:
    return _wrap(nn.Conv2d(c_in, c_out, k, 1, k // 2, bias=bias), init, sn)


def _linear(n_in: int, n_out: int, init: str, sn: bool, bias: bool = True) -> nn.Module:
    return _wrap(nn.Linear(n_in, n_out, bias=bias), init, sn)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm times ``1 + gain(c)`` plus ``bias(c)``, per sample (the code's ``ccbn``).

    The statistics are shared by all samples; ``gain`` and ``bias`` map the conditioning input ``c`` to one
    value per channel: linears of a vector (BigGAN's shared embedding and z chunk) or embeddings of class
    indices (the code without ``--G_shared``). With zero weights it is a plain batch norm.

    Args:
        num_features: channels.
        gain: module mapping ``c`` to (B, num_features); the gain is one plus its output.
        bias: module mapping ``c`` to (B, num_features).
        eps: the batch norm's epsilon (the code's ``--BN_eps``).
    """

    def __init__(self, num_features: int, *, gain: nn.Module, bias: nn.Module, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features, eps=eps, affine=False)
        self.gain = gain
        self.bias = bias

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.norm(x) * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN's non-local block (Zhang et al. 2019) as in the code's ``layers.Attention``.

    ``x + gamma * o(g(x) softmax(theta(x)^T phi(x)))``: queries ``theta`` at every position, keys ``phi`` and
    values ``g`` 2x2 max-pooled (so H and W must be even), all 1x1 convolutions without bias. ``gamma`` starts
    at 0: the block starts as the identity.

    Args:
        channels: C of the input map; queries and keys have ``max(C // 8, 1)`` channels, values ``max(C // 2, 1)``.
        spectral_norm: on the four convolutions.
        init: weight init, one of ``N02``, ``ortho``, ``glorot``.
    """

    def __init__(self, channels: int, *, spectral_norm: bool = True, init: Init = "N02") -> None:
        super().__init__()
        inner, half = max(channels // 8, 1), max(channels // 2, 1)
        self.theta = _conv(channels, inner, 1, init, spectral_norm, bias=False)
        self.phi = _conv(channels, inner, 1, init, spectral_norm, bias=False)
        self.g = _conv(channels, half, 1, init, spectral_norm, bias=False)
        self.o = _conv(half, channels, 1, init, spectral_norm, bias=False)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2)  # B x C/8 x HW
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # B x C/8 x HW/4
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # B x C/2 x HW/4
        beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # B x HW x HW/4, a distribution per query
        o = self.o((g @ beta.transpose(1, 2)).view(b, -1, h, w))
        return x + self.gamma * o


class _GBlock(nn.Module):
    """Up-sampling residual block of G; ``c`` is None for plain batch norms."""

    def __init__(self, c_in: int, c_out: int, norm, init: str, sn: bool) -> None:
        super().__init__()
        self.bn1, self.bn2 = norm(c_in), norm(c_out)
        self.conv1 = _conv(c_in, c_out, 3, init, sn)
        self.conv2 = _conv(c_out, c_out, 3, init, sn)
        self.conv_sc = _conv(c_in, c_out, 1, init, sn)

    @staticmethod
    def _norm(bn: nn.Module, h: Tensor, c: Tensor | None) -> Tensor:
        return bn(h) if c is None else bn(h, c)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        h = F.interpolate(F.relu(self._norm(self.bn1, x, c)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self._norm(self.bn2, self.conv1(h), c)))
        return h + self.conv_sc(up)


class Generator(nn.Module):
    """z (B, latent_dim) [, y (B,)] -> images (B, C, H, H) in [-1, 1], H = 32, 64 or 128.

    Args:
        shape: (C, H, H) of one sample, from the data module.
        latent_dim: size of z; with hierarchical z a multiple of the number of blocks + 1 (4, 5, 6 at 32,
            64, 128 px).
        num_classes: None for an unconditional G called as ``G(z)``; K for ``G(z, y)``.
        width: the channel multiplier (the code's ``G_ch``; 64 in the CIFAR-10 script, 96 on ImageNet).
        shared_dim: size of the class embedding shared by all conditional norms; None for a separate class
            embedding per norm (the code without ``--G_shared``, as its CIFAR-10 script).
        hierarchical: split z into one chunk for the input linear and one per block, fed to the norms.
        attention: feature-map sizes after whose blocks a self-attention block follows.
        spectral_norm: on every convolution and linear (not on the embeddings).
        bn_eps: the batch norms' epsilon.
        init: weight init, ``N02`` (the CIFAR-10 script), ``ortho`` (ImageNet) or ``glorot``.
    """

    def __init__(
        self,
        *,
        shape: Sequence[int],
        latent_dim: int = 128,
        num_classes: int | None = None,
        width: int = 64,
        shared_dim: int | None = 128,
        hierarchical: bool = True,
        attention: Sequence[int] | int | None = (64,),
        spectral_norm: bool = True,
        bn_eps: float = 1e-5,
        init: Init = "N02",
    ) -> None:
        super().__init__()
        key = "model.generator"
        channels, self.resolution = _check_shape(shape, key)
        width = check_int(width, f"{key}.width", 1, "BigGAN uses 64 on CIFAR-10 and 96 on ImageNet.")
        latent_dim = check_int(latent_dim, f"{key}.latent_dim", 1, "BigGAN uses 128, or 120 at 128 px.")
        self.num_classes = check_classes(num_classes, key)
        if shared_dim is not None:
            shared_dim = check_int(shared_dim, f"{key}.shared_dim", 1, "BigGAN uses 128, or null for none.")
        attention = _check_attention(attention, key)
        init = _check_init(init, key)
        if not isinstance(bn_eps, (int, float)) or isinstance(bn_eps, bool) or not bn_eps > 0:
            raise ConfigError(f"{key}.bn_eps must be a positive number (got {bn_eps!r}); BigGAN uses 1e-5.")
        sn, hierarchical = bool(spectral_norm), bool(hierarchical)

        chans = [m * width for m in G_CHANNELS[self.resolution]]
        n_blocks = len(chans) - 1
        self.latent_dim, self.hierarchical = latent_dim, hierarchical
        self.z_chunk = 0
        if hierarchical:
            slots = n_blocks + 1
            if latent_dim % slots:
                lower, upper = latent_dim // slots * slots, (latent_dim // slots + 1) * slots
                options = f"{lower} or {upper}" if lower else f"{upper}"
                raise ConfigError(
                    f"{key}.latent_dim must be a multiple of {slots} at {self.resolution} px with hierarchical z "
                    f"(one chunk for the input linear, one per block), got {latent_dim}; use {options}, or set "
                    f"{key}.hierarchical=false."
                )
            self.z_chunk = latent_dim // slots
        if num_classes is not None and shared_dim is None and hierarchical:
            raise ConfigError(f"{key}.shared_dim: hierarchical z is concatenated onto the shared class embedding, "
                              f"so it needs one; set {key}.shared_dim=128 or {key}.hierarchical=false.")

        self.shared: nn.Embedding | None = None
        if num_classes is not None and shared_dim is not None:
            # Never spectrally normalized, and left out of the orthogonal penalty, as in the code.
            self.shared = _init_weight(nn.Embedding(num_classes, shared_dim), init)
        if num_classes is not None and shared_dim is None:
            def norm(ch: int) -> nn.Module:
                return ConditionalBatchNorm2d(ch, gain=_init_weight(nn.Embedding(num_classes, ch), init),
                                              bias=_init_weight(nn.Embedding(num_classes, ch), init), eps=bn_eps)
        elif num_classes is not None or hierarchical:
            cond_dim = (shared_dim if num_classes is not None else 0) + self.z_chunk

            def norm(ch: int) -> nn.Module:
                return ConditionalBatchNorm2d(ch, gain=_linear(cond_dim, ch, init, sn, bias=False),
                                              bias=_linear(cond_dim, ch, init, sn, bias=False), eps=bn_eps)
        else:
            def norm(ch: int) -> nn.Module:
                return nn.BatchNorm2d(ch, eps=bn_eps)

        self.bottom_channels = chans[0]
        self.linear = _linear(self.z_chunk or latent_dim, chans[0] * BOTTOM * BOTTOM, init, sn)
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()  # keyed by the index of the block it follows
        for i in range(n_blocks):
            self.blocks.append(_GBlock(chans[i], chans[i + 1], norm, init, sn))
            if BOTTOM * 2 ** (i + 1) in attention:
                self.attention[str(i)] = SelfAttention(chans[i + 1], spectral_norm=sn, init=init)
        self.out_norm = nn.BatchNorm2d(chans[-1], eps=bn_eps)
        self.out_conv = _conv(chans[-1], channels, 3, init, sn)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if (y is None) != (self.num_classes is None):
            raise TypeError("a conditional BigGAN generator is called as G(z, y), an unconditional one as G(z)")
        n = len(self.blocks)
        if y is not None:
            y = y if self.shared is None else self.shared(y)  # class indices for per-norm embeddings
        if self.hierarchical:
            z, *chunks = z.split(self.z_chunk, dim=1)
            conds = chunks if y is None else [torch.cat([y, chunk], dim=1) for chunk in chunks]
        else:
            conds = [y] * n
        h = self.linear(z).view(z.shape[0], self.bottom_channels, BOTTOM, BOTTOM)
        for i, (block, c) in enumerate(zip(self.blocks, conds, strict=True)):
            h = block(h, c)
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        return self.out_conv(F.relu(self.out_norm(h))).tanh()


class _DBlock(nn.Module):
    """Residual block of D; without preactivation it pools before its shortcut conv, else after."""

    def __init__(self, c_in: int, c_out: int, *, down: bool, preactivation: bool, wide: bool, init: str,
                 sn: bool) -> None:
        super().__init__()
        hidden = c_out if wide else c_in
        self.down, self.preactivation = down, preactivation
        self.conv1 = _conv(c_in, hidden, 3, init, sn)
        self.conv2 = _conv(hidden, c_out, 3, init, sn)
        self.conv_sc = _conv(c_in, c_out, 1, init, sn) if down or c_in != c_out else None

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.preactivation:
            x = x if self.conv_sc is None else self.conv_sc(x)
            return F.avg_pool2d(x, 2) if self.down else x
        x = F.avg_pool2d(x, 2) if self.down else x
        return x if self.conv_sc is None else self.conv_sc(x)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)


class Discriminator(nn.Module):
    """images (B, C, H, H) [, y (B,)] -> one raw score per image (B,), H = 32, 64 or 128.

    The score is ``linear(phi(x))``, plus ``<embed(y), phi(x)>`` for a projection discriminator.

    Args:
        shape: (C, H, H) of one sample, from the data module.
        num_classes: None for an unconditional D called as ``D(x)``; K for a projection D called as ``D(x, y)``.
        width: the channel multiplier (the code's ``D_ch``).
        attention: feature-map sizes after whose blocks a self-attention block follows.
        spectral_norm: on every convolution, the head and the class embedding.
        wide: hidden channels of a block = its output channels (BigGAN, SAGAN), else its input (SNGAN).
        init: weight init, ``N02`` (the CIFAR-10 script), ``ortho`` (ImageNet) or ``glorot``.
    """

    def __init__(
        self,
        *,
        shape: Sequence[int],
        num_classes: int | None = None,
        width: int = 64,
        attention: Sequence[int] | int | None = (64,),
        spectral_norm: bool = True,
        wide: bool = True,
        init: Init = "N02",
    ) -> None:
        super().__init__()
        key = "model.discriminator"
        channels, resolution = _check_shape(shape, key)
        width = check_int(width, f"{key}.width", 1, "BigGAN uses 64 on CIFAR-10 and 96 on ImageNet.")
        self.num_classes = check_classes(num_classes, key)
        attention = _check_attention(attention, key)
        init = _check_init(init, key)
        sn = bool(spectral_norm)

        self.blocks = nn.Sequential()
        c_in, size = channels, resolution
        for i, (mult, down) in enumerate(D_BLOCKS[resolution]):
            c_out = mult * width
            self.blocks.append(_DBlock(c_in, c_out, down=down, preactivation=i > 0, wide=bool(wide), init=init,
                                       sn=sn))
            c_in, size = c_out, size // 2 if down else size
            if size in attention:
                self.blocks.append(SelfAttention(c_out, spectral_norm=sn, init=init))
        self.linear = _linear(c_in, 1, init, sn)
        self.embed = None
        if num_classes is not None:
            self.embed = _wrap(nn.Embedding(num_classes, c_in), init, sn)

    def features(self, x: Tensor) -> Tensor:
        """phi(x) (B, channels): the sum-pooled features that the head and the projection share."""
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if (y is None) != (self.embed is None):
            raise TypeError("a projection BigGAN discriminator is called as D(x, y), an unconditional one as D(x)")
        phi = self.features(x)
        out = self.linear(phi).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * phi).sum(dim=1)
        return out


def _parameters(items: Iterable[nn.Parameter | nn.Module]) -> Iterable[nn.Parameter]:
    for item in items:
        yield from (item.parameters() if isinstance(item, nn.Module) else (item,))


def orthogonal_penalty(net: nn.Module, skip: Iterable[nn.Parameter | nn.Module] = ()) -> Tensor:
    """BigGAN's modified orthogonal regularization as a loss: ``0.5 * sum ||W W^T * (1 - I)||_F^2``.

    W runs over every parameter of ``net`` with at least 2 dims, flattened to (out, in); its gradient,
    ``2 (W W^T * (1 - I)) W``, is what the code's ``utils.ortho`` adds to ``.grad``, so ``strength *
    orthogonal_penalty(G)`` added to the loss is ``--G_ortho strength``. With spectral norm the raw weight
    is regularized (``parametrizations.weight.original``, the parameter), as the code regularizes
    ``weight`` before its division by sigma. A BigGAN ``Generator``'s shared class embedding is skipped, as
    the code's blacklist does. A 0-dim tensor, without any host sync.

    Args:
        net: the network.
        skip: further parameters, or modules whose parameters, to leave out.
    """
    skipped = {id(p) for p in _parameters(skip)}
    if isinstance(net, Generator) and net.shared is not None:
        skipped.update(id(p) for p in net.shared.parameters())
    terms = []
    for p in net.parameters():
        if p.ndim < 2 or id(p) in skipped:
            continue
        w = p.flatten(1)
        gram = w @ w.T
        terms.append((gram - torch.diag(gram.diagonal())).square().sum())
    if not terms:
        first = next(net.parameters(), None)
        return torch.zeros((), device=None if first is None else first.device)
    return 0.5 * torch.stack(terms).sum()
