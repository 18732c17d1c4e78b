"""Online anomaly scores for one sensor series: the seasonal detector of :mod:`rules.detectors`,
under the names rule files, the CLI and the benchmarks have always imported.
"""

from __future__ import annotations

from rules.detectors.seasonal import AnomalyParams, AnomalyState, score

__all__ = ["AnomalyParams", "AnomalyState", "score"]
