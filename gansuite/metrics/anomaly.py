"""How well an anomaly score separates the anomalies: AUROC and AUPRC, through torchmetrics.

Both take one score per test image (higher: more anomalous) and its label (1: anomaly). AUROC is the
probability that a random anomaly scores above a random normal image (ties count half); AUPRC is the
average precision over the anomalies' ranks, whose chance level is the anomalies' share (0.1 for one
digit in ten), not 0.5.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from gansuite.errors import ConfigError


def _checked(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    scores, labels = scores.detach().float().flatten().cpu(), labels.detach().long().flatten().cpu()
    if scores.shape != labels.shape:
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    if not (labels == 1).any() or not (labels == 0).any():
        raise ConfigError("the test split needs both normal and anomalous images to measure AUROC and AUPRC; "
                          "check data.anomaly_class.")
    return scores, labels


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores`` against binary ``labels``."""
    return float(binary_auroc(*_checked(scores, labels)))


def auprc(scores: Tensor, labels: Tensor) -> float:
    """Average precision (area under the precision-recall curve, as a step sum) of ``scores`` against ``labels``."""
    return float(binary_average_precision(*_checked(scores, labels)))


def anomaly_metrics(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """``{"auroc": ..., "auprc": ..., "anomaly_share": ...}`` of one test split."""
    scores, labels = _checked(scores, labels)
    return {"auroc": auroc(scores, labels), "auprc": auprc(scores, labels),
            "anomaly_share": float(labels.float().mean())}


__all__ = ["anomaly_metrics", "auprc", "auroc"]
