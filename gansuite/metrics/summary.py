"""Mean ± standard error of the mean, as every table of gansuite's commands reports it."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    mean: float
    sem: float | None  # None for a single run

    def format(self, digits: int, scale: float = 1.0) -> str:
        if not math.isfinite(self.mean):
            return "inf"
        text = f"{self.mean * scale:.{digits}f}"
        return text if self.sem is None or not math.isfinite(self.sem) else f"{text} ± {self.sem * scale:.{digits}f}"


def summarize(values: list[float]) -> Summary:
    """Mean and standard error of the mean (sample std, ddof=1, over sqrt(n)); no error for one value."""
    if not values:
        raise ValueError("summarize needs at least one value")
    if any(not math.isfinite(v) for v in values):
        return Summary(math.inf, None)
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Summary(mean, None)
    return Summary(mean, statistics.stdev(values) / math.sqrt(len(values)))
