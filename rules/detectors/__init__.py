"""Anomaly detectors: one module each behind :class:`Detector`, one line each in :data:`DETECTORS`.

>>> from datetime import UTC, datetime
>>> d = DETECTORS["seasonal"]()
>>> d.score_one((datetime(2026, 7, 1, tzinfo=UTC), 1.0))
0.0
"""

from __future__ import annotations

from typing import Any

from rules.detectors.base import Detector, DetectorFactory, Point
from rules.detectors.novelty import Explanation, NoveltyDetector, NoveltyParams
from rules.detectors.seasonal import AnomalyParams, AnomalyState, SeasonalDetector, score

__all__ = [
    "DETECTORS",
    "AnomalyParams",
    "AnomalyState",
    "Detector",
    "DetectorFactory",
    "Explanation",
    "NoveltyDetector",
    "NoveltyParams",
    "Point",
    "SeasonalDetector",
    "score",
]


def _seasonal(state: Any = None) -> Detector:
    return SeasonalDetector(None, state)


def _novelty(state: Any = None) -> Detector:
    return NoveltyDetector(None, state)


DETECTORS: dict[str, DetectorFactory] = {
    "seasonal": _seasonal,
    "novelty": _novelty,
}
"""Every detector by name: a factory taking a saved state (None for a new series)."""
