"""Prediction drift: population stability index (PSI) of a device's label histogram against its baseline.

PSI = sum over labels of (current - baseline) * ln(current / baseline), on proportions. Rule of thumb
used in credit scoring, where it comes from: < 0.1 no real change, 0.1-0.25 moderate, > 0.25 a shift
worth a look. Each device is compared with itself (its own first full window on the model it runs),
because two cameras on two doors see different things and that is not drift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A label absent from one side would make ln(x/0) infinite: it gets this proportion instead, the usual
# fix. Small enough that a label seen in 1 % of one window and never in the other scores ~0.05.
EPSILON = 1e-4
OTHER = "\x00other"  # the metrics message's "other" bucket; cannot collide with a real label


def proportions(counts: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(counts.values()))
    if total <= 0:
        return {}
    return {k: v / total for k, v in counts.items() if v > 0}


def psi(baseline: Mapping[str, float], current: Mapping[str, float], epsilon: float = EPSILON) -> float:
    """Population stability index of two histograms (counts or proportions; each is normalised).

    0 for identical distributions, symmetric in its arguments, larger the more they differ."""
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    b, c = proportions(baseline), proportions(current)
    if not b or not c:
        raise ValueError("both histograms need at least one count")
    total = 0.0
    for label in b.keys() | c.keys():
        pb, pc = max(b.get(label, 0.0), epsilon), max(c.get(label, 0.0), epsilon)
        total += (pc - pb) * math.log(pc / pb)
    return total


def histogram(labels: Mapping[str, Any]) -> dict[str, int]:
    """The metrics message's ``labels`` object as one flat histogram (``other`` under its own key)."""
    out = {str(k): int(v) for k, v in labels.get("counts", {}).items()}
    if labels.get("other"):
        out[OTHER] = int(labels["other"])
    return out


@dataclass
class DriftTracker:
    """Per device: the baseline is the first metrics window with at least ``min_inferences`` predictions
    on a model; a new model sha256 starts a new baseline (a different model predicts differently, by
    design). ``psi`` is the latest window against it, None until both windows are big enough."""

    min_inferences: int = 50
    model_sha256: str | None = None
    baseline: dict[str, int] | None = None
    psi: float | None = None
    windows: int = field(default=0)

    def update(self, labels: Mapping[str, Any] | None, model_sha256: str | None) -> float | None:
        if model_sha256 != self.model_sha256:
            self.model_sha256, self.baseline, self.psi = model_sha256, None, None
        if labels is None:
            return self.psi
        hist = histogram(labels)
        if sum(hist.values()) < self.min_inferences:
            return self.psi  # too few predictions to say anything: keep the last verdict
        self.windows += 1
        if self.baseline is None:
            self.baseline = hist
        self.psi = psi(self.baseline, hist)
        return self.psi
