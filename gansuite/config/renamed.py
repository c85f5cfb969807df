"""Where the classes and functions that older checkpoints' configs name live now.

A checkpoint stores the config it was trained with, ``_target_`` paths included. When gansuite's modules
were laid out into packages (data/, nets/, models/, training/), those paths moved; a checkpoint written
before that still samples, evaluates and resumes, because its targets are renamed here as it is read,
before the allow-list (:mod:`gansuite.config.security`) sees them.
"""

from __future__ import annotations

from typing import Any

# Old target -> new target. Only ever added to: a key here is never a current target.
RENAMED = {
    "gansuite.callbacks.GANProgressBar": "gansuite.training.progress.GANProgressBar",
    "gansuite.callbacks.SampleGrid": "gansuite.training.callbacks.SampleGrid",
    "gansuite.callbacks.Scatter2D": "gansuite.training.callbacks.Scatter2D",
    "gansuite.callbacks.TranslationGrid": "gansuite.training.translation.TranslationGrid",
    "gansuite.callbacks.TranslationMetrics": "gansuite.training.translation.TranslationMetrics",
    "gansuite.data.CIFAR10": "gansuite.data.downloads.CIFAR10",
    "gansuite.data.GANDataModule": "gansuite.data.base.GANDataModule",
    "gansuite.data.ImageFolder": "gansuite.data.folders.ImageFolder",
    "gansuite.data.InfiniteSampler": "gansuite.data.base.InfiniteSampler",
    "gansuite.data.MNIST": "gansuite.data.downloads.MNIST",
    "gansuite.data.Mixture2D": "gansuite.data.points.Mixture2D",
    "gansuite.data.OfflineMNIST": "gansuite.data.digits.OfflineMNIST",
    "gansuite.data.StackedMNIST": "gansuite.data.digits.StackedMNIST",
    "gansuite.data.TensorBatches": "gansuite.data.base.TensorBatches",
    "gansuite.data.UnreadableImageWarning": "gansuite.data.folders.UnreadableImageWarning",
    "gansuite.distributed.GANDDPStrategy": "gansuite.training.distributed.GANDDPStrategy",
    "gansuite.distributed.GANSyncBatchNorm": "gansuite.training.distributed.GANSyncBatchNorm",
    "gansuite.distributed.SyncBatchNorm": "gansuite.training.distributed.SyncBatchNorm",
    "gansuite.models.acgan.Discriminator": "gansuite.nets.acgan.Discriminator",
    "gansuite.models.base.AdversarialModule": "gansuite.models.schedule.AdversarialModule",
    "gansuite.models.base.ConditionalGAN": "gansuite.models.gan.ConditionalGAN",
    "gansuite.models.base.PairedTranslationGAN": "gansuite.models.translation.PairedTranslationGAN",
    "gansuite.models.base.UnconditionalGAN": "gansuite.models.gan.UnconditionalGAN",
    "gansuite.models.cgan.ConvDiscriminator": "gansuite.nets.cgan.ConvDiscriminator",
    "gansuite.models.cgan.ConvGenerator": "gansuite.nets.cgan.ConvGenerator",
    "gansuite.models.cgan.MLPDiscriminator": "gansuite.nets.cgan.MLPDiscriminator",
    "gansuite.models.cgan.MLPGenerator": "gansuite.nets.cgan.MLPGenerator",
    "gansuite.models.cyclegan.Discriminators": "gansuite.nets.cyclegan.Discriminators",
    "gansuite.models.cyclegan.Generators": "gansuite.nets.cyclegan.Generators",
    "gansuite.models.cyclegan.ResnetBlock": "gansuite.nets.cyclegan.ResnetBlock",
    "gansuite.models.cyclegan.ResnetGenerator": "gansuite.nets.cyclegan.ResnetGenerator",
    "gansuite.models.dcgan.Discriminator": "gansuite.nets.dcgan.Discriminator",
    "gansuite.models.dcgan.Generator": "gansuite.nets.dcgan.Generator",
    "gansuite.models.gan.Discriminator": "gansuite.nets.mlp.Discriminator",
    "gansuite.models.gan.Generator": "gansuite.nets.mlp.Generator",
    "gansuite.models.gan.MaxoutLinear": "gansuite.nets.mlp.MaxoutLinear",
    "gansuite.models.infogan.Discriminator": "gansuite.nets.infogan.Discriminator",
    "gansuite.models.infogan.Generator": "gansuite.nets.infogan.Generator",
    "gansuite.models.lapgan.BandDiscriminator": "gansuite.nets.laplacian.BandDiscriminator",
    "gansuite.models.lapgan.BandGenerator": "gansuite.nets.laplacian.BandGenerator",
    "gansuite.models.lapgan.CoarseDiscriminator": "gansuite.nets.laplacian.CoarseDiscriminator",
    "gansuite.models.lapgan.CoarseGenerator": "gansuite.nets.laplacian.CoarseGenerator",
    "gansuite.models.lapgan.LaplacianDiscriminator": "gansuite.nets.laplacian.LaplacianDiscriminator",
    "gansuite.models.lapgan.LaplacianGenerator": "gansuite.nets.laplacian.LaplacianGenerator",
    "gansuite.models.patchgan.PatchDiscriminator": "gansuite.nets.patchgan.PatchDiscriminator",
    "gansuite.models.pix2pix.NoiseDropout": "gansuite.nets.unet.NoiseDropout",
    "gansuite.models.pix2pix.UNetGenerator": "gansuite.nets.unet.UNetGenerator",
    "gansuite.models.projection.Discriminator": "gansuite.nets.projection.Discriminator",
    "gansuite.models.projection.Generator": "gansuite.nets.projection.Generator",
    "gansuite.models.resnet.CategoricalConditionalBatchNorm2d": "gansuite.nets.resnet.CategoricalConditionalBatchNorm2d",
    "gansuite.models.resnet.Discriminator": "gansuite.nets.resnet.Discriminator",
    "gansuite.models.resnet.Generator": "gansuite.nets.resnet.Generator",
    "gansuite.models.srgan.SRResNet": "gansuite.nets.srresnet.SRResNet",
    "gansuite.models.srgan.VGGDiscriminator": "gansuite.nets.srresnet.VGGDiscriminator",
    "gansuite.models.srgan.VGGLoss": "gansuite.nets.srresnet.VGGLoss",
    "gansuite.models.srgan.content_loss": "gansuite.nets.srresnet.content_loss",
    "gansuite.pairs.DigitStyles": "gansuite.data.unpaired.DigitStyles",
    "gansuite.pairs.EdgesToDigits": "gansuite.data.pairs.EdgesToDigits",
    "gansuite.pairs.PairDataModule": "gansuite.data.pairs.PairDataModule",
    "gansuite.pairs.PairedFolder": "gansuite.data.pairs.PairedFolder",
    "gansuite.pairs.SuperResolution": "gansuite.data.superres.SuperResolution",
    "gansuite.pairs.UnpairedDataModule": "gansuite.data.unpaired.UnpairedDataModule",
    "gansuite.pairs.UnpairedFolders": "gansuite.data.unpaired.UnpairedFolders",
    "gansuite.pairs.UnreadableImage": "gansuite.data.folders.UnreadableImage",}


def current_targets(config: Any) -> Any:
    """``config`` (a stored, plain-container config) with every ``_target_`` an older version wrote renamed
    to where it lives now; changed in place, and returned."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "_target_" and isinstance(value, str):
                config[key] = RENAMED.get(value, value)
            else:
                current_targets(value)
    elif isinstance(config, list):
        for value in config:
            current_targets(value)
    return config
