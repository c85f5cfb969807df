"""What an evaluation reports: metric values with their protocol, their names, and which way is better.

A key carries its metric, feature space and sample count (``fid_clf_10k``); the protocol records
everything that fixes the number (extractor and its hash, reference split, seeds, batch size), so two
numbers are compared only when their protocols agree.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gansuite
from gansuite.errors import ConfigError
from gansuite.metrics import fidelity
from gansuite.metrics.fidelity import count_tag

# Which way is better, per short metric name. The real-data accuracies beside CAS (cas_real, aug_acc_real) do
# not depend on the generator and have no best value.
HIGHER_IS_BETTER = {"is", "precision", "recall", "cond_acc", "classes_covered", "stacked_modes",
                    "cas", "aug_gain", "aug_acc_mixed"}
LOWER_IS_BETTER = {"fid", "kid", "class_kl", "stacked_kl"}
# Keys without a sample count: CAS's count (generated images per class) is in its protocol.
UNCOUNTED = {"cas", "cas_real"}


@dataclass
class EvalResult:
    """Metric values (``{"fid_clf_10k": 3.2, ...}``) with the protocol that produced them."""

    values: dict[str, float]
    protocol: dict[str, Any]
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "values": self.values, "protocol": self.protocol, **self.extra}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temporary file renamed into place, never a half-written JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> EvalResult:
        try:
            data = json.loads(Path(path).read_text())
            return cls(values=dict(data["values"]), protocol=dict(data["protocol"]), step=data.get("step"))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path} is not a gansuite-eval result ({type(err).__name__}); pass a JSON written by "
                              "gansuite-eval or by the training run's evaluation.") from None

    def table(self) -> str:
        width = max((len(k) for k in self.values), default=6)
        lines = [f"{'metric':<{width}}  value"]
        lines += [f"{key:<{width}}  {_fmt(value)}" for key, value in self.values.items()]
        cas = self.protocol.get("cas")
        if "cas_real" in self.values and isinstance(cas, dict):
            lines.append(f"(cas_real, aug_acc_real_k*: the same classifier trained on real images only, "
                         f"{cas.get('per_class')} or k per class: the ceiling and the baselines)")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def short_name(key: str) -> str:
    """``fid_clf_10k`` -> ``fid``; ``kid_std_10k`` -> ``kid_std``; ``aug_gain_k10`` -> ``aug_gain``; ``cas`` -> ``cas``."""
    if key in UNCOUNTED:
        return key
    parts = key.split("_")[:-1]  # drop the count
    if parts and parts[-1] == "clf":
        parts = parts[:-1]
    return "_".join(parts)


def is_better(key: str, new: float, old: float | None) -> bool:
    if old is None or (isinstance(old, float) and math.isnan(old)):
        return not math.isnan(new)
    return new > old if short_name(key) in HIGHER_IS_BETTER else new < old


class MetricNaming:
    """Mixed into :class:`gansuite.metrics.evaluator.Evaluator`: the keys its metrics are logged under and
    the protocol recorded beside them (``self.metrics``, ``tag``, ``reference``, ``extractor``, ... are
    the evaluator's)."""

    def _class_metrics(self) -> bool:
        """Class coverage (and conditional accuracy): the domain classifier's logits with labelled reference data."""
        return bool(self.tag) and self.reference is not None and self.reference.labels is not None

    # ------------------------------------------------------------------ names
    def key(self, name: str) -> str:
        if name in UNCOUNTED:
            return name
        tag = self.tag if name in {"fid", "is", "is_std", "kid", "kid_std", "precision", "recall",
                                   "classes_covered", "class_kl", "cond_acc"} else ""
        return f"{name}{tag}_{count_tag(self.num_samples)}"

    def main_key(self, name: str) -> str | None:
        """The key a short name (``fid``, ``is``, ...) is logged under; for ``eval.keep_best``.

        ``auto`` is FID when it is computed, else Stacked MNIST's KL, else nothing.
        """
        names = self._names()
        if name == "auto":
            name = next((n for n in ("fid", "stacked_kl") if n in names), None)
            if name is None:
                return None
        if name not in names:
            raise ConfigError(f"eval.keep_best: {name!r} is not computed by this evaluation (it computes "
                              f"{', '.join(names) or 'nothing'}); pick one of those or set eval.keep_best=null.")
        return self.key(name)

    def _names(self) -> list[str]:
        names = []
        for m in self.metrics:
            names += {"fid": ["fid"], "is": ["is", "is_std"], "kid": ["kid", "kid_std"],
                      "prc": ["precision", "recall"]}[m]
        if self._class_metrics():
            names += ["classes_covered", "class_kl"]
        if self.stacked:
            names += ["stacked_modes", "stacked_kl"]
        if self.augmentation is not None and "cas" in self.augmentation.metrics:
            names += ["cas"]
        return names

    def _protocol(self, extra: dict[str, Any]) -> dict[str, Any]:
        from importlib.metadata import version

        p: dict[str, Any] = {
            "implementation": f"torch-fidelity {version('torch-fidelity')}",
            # FID's matrix square root: the same number as torch-fidelity's up to float rounding (1e-12 relative
            # with more samples than feature dimensions), so recorded but not part of comparability.
            "fid_solver": "float64 symmetric eigenvalues of F^T S1 F (S2 = F F^T) on the evaluation device",
            "gansuite_version": gansuite.__version__,
            "num_generated": self.num_samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "quantization": "uint8: round((x + 1) * 127.5), as an 8-bit image file stores it",
        }
        if self.extractor is not None:
            ref = self.reference
            p.update({
                "feature_extractor": self.extractor.name,
                "feature_extractor_sha256": self.extractor.weights_sha256,
                "feature_layer": self.extractor.feature_layer,
                "logits_layer": self.extractor.logits_layer,
                "resize": self.extractor.resize,
                "feature_precision": getattr(self.extractor, "precision", "exact"),
                "num_real": ref.num_samples,
                "reference": {"dataset": ref.key["dataset"], "split": ref.key["split"], "sha256": ref.sha256},
                "isc_splits": fidelity.isc_splits(self.num_samples),
                "kid_subsets": fidelity.KID_SUBSETS,
                "kid_subset_size": fidelity.kid_subset_size(self.num_samples, ref.num_samples),
                "prc_neighborhood": fidelity.PRC_NEIGHBORHOOD,
            })
        if self.augmentation is not None:
            p["cas"] = self.augmentation.protocol  # the same dict: prepare() records how classes are read
        p.update(extra)
        return p
