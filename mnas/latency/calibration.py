"""Calibrating a lookup table's summed layer timings against measured whole networks
(:func:`fit_calibration`), never below the call overhead in the table's range."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CALIBRATIONS = ("identity", "scale", "affine", "affine_weights")
# networks needed before a model is a candidate (one more than its coefficients)
_MIN_NETWORKS = {"identity": 1, "scale": 3, "affine": 4, "affine_weights": 5}


@dataclass(frozen=True)
class Calibration:
    """How summed layer timings become a network's latency:
    ``intercept_ms + slope * sum + ms_per_mparam * (millions of parameters)``."""

    kind: str = "identity"
    intercept_ms: float = 0.0
    slope: float = 1.0
    ms_per_mparam: float = 0.0

    def predict(self, raw_ms: float, mparams: float = 0.0) -> float:
        return self.intercept_ms + self.slope * raw_ms + self.ms_per_mparam * mparams


def _design(kind: str, x: np.ndarray, p: np.ndarray) -> np.ndarray:
    columns = {
        "scale": [x],
        "affine": [np.ones_like(x), x],
        "affine_weights": [np.ones_like(x), x, p],
    }[kind]
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class Floor:
    """The cheapest network a table can describe, as the calibration sees it.

    Attributes:
        raw_ms: the least ``overhead + sum of entries`` of any network (every network pays
            the call overhead and has a stem and a head; its other layers cost >= 0).
        mparams: the least parameter count, in millions, of any network.
        min_ms: what a prediction there must reach: the call overhead, which no network
            can beat.
    """

    raw_ms: float
    mparams: float
    min_ms: float


def _fit(
    kind: str, x: np.ndarray, y: np.ndarray, p: np.ndarray, floor: Floor | None = None
) -> Calibration:
    """One calibration model fitted to minimise *relative* error (the squared error of
    ``prediction / measured - 1``), so small networks count as much as large ones, as in the
    MAPE that judges the table. With a ``floor``, a model with an intercept whose best fit
    predicts less than ``floor.min_ms`` at the floor is refitted through that point: the
    least-squares optimum under the constraint ``prediction(floor) >= min_ms`` lies on it
    whenever the unconstrained optimum breaks it."""
    if kind == "identity":
        return Calibration()
    design = _design(kind, x, p) / y[:, None]
    coef, *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    if kind == "scale":
        return Calibration(kind, 0.0, float(coef[0]))
    cal = Calibration(kind, *(float(c) for c in coef))
    if floor is None or cal.predict(floor.raw_ms, floor.mparams) >= floor.min_ms:
        return cal
    # prediction = min_ms + b * (raw - raw_floor) + c * (mparams - mparams_floor)
    columns = [x - floor.raw_ms] + ([p - floor.mparams] if kind == "affine_weights" else [])
    design = np.stack(columns, axis=1) / y[:, None]
    coef, *_ = np.linalg.lstsq(design, 1.0 - floor.min_ms / y, rcond=None)
    slope, per_mparam = float(coef[0]), float(coef[1]) if len(coef) > 1 else 0.0
    intercept = floor.min_ms - slope * floor.raw_ms - per_mparam * floor.mparams
    return Calibration(kind, intercept, slope, per_mparam)


def _admissible(cal: Calibration, floor: Floor | None) -> bool:
    """A model that only grows with the sum and the parameter count and, given the floor,
    predicts at least its ``min_ms`` there, so that it does everywhere above it."""
    if not (cal.slope > 0 and cal.ms_per_mparam >= 0):
        return False
    return floor is None or cal.predict(floor.raw_ms, floor.mparams) >= floor.min_ms * (1 - 1e-9)


def fit_calibration(
    raw_ms: Sequence[float],
    measured_ms: Sequence[float],
    mparams: Sequence[float] | None = None,
    floor: Floor | None = None,
) -> Calibration:
    """Calibrate the summed layer timings against measured whole networks.

    Candidates: ``identity`` (the sum as it is), ``scale`` (``slope * sum``), ``affine``
    (``intercept + slope * sum``) and, given the networks' parameter counts (millions),
    ``affine_weights`` (``+ ms_per_mparam * mparams``: a layer timed alone keeps its
    weights in cache, inside a network with megabytes of weights it does not). Each is
    fitted for relative error; the one with the lowest leave-one-out MAPE wins, so a few
    noisy calibration networks cannot make the table worse than the plain sum. A model
    needs one network more than it has coefficients; one whose fit decreases with the sum
    or the parameter count, or (given the table's ``floor``) predicts less than the call
    overhead for the table's cheapest network, is never chosen, and the intercept models
    are fitted under that constraint (:func:`_fit`).

    Raises:
        ValueError: on lists of different or zero length, or non-positive measurements.
    """
    x = np.asarray(raw_ms, dtype=np.float64)
    y = np.asarray(measured_ms, dtype=np.float64)
    p = np.zeros_like(x) if mparams is None else np.asarray(mparams, dtype=np.float64)
    if x.shape != y.shape or x.shape != p.shape or x.size == 0:
        raise ValueError(
            f"need equal, non-empty lists; got {x.size} raw, {y.size} measured, {p.size} mparams"
        )
    if np.any(y <= 0):
        raise ValueError(f"measured latencies must be > 0, got {y.tolist()}")
    candidates = [k for k in CALIBRATIONS if x.size >= _MIN_NETWORKS[k]]
    if mparams is None or float(np.ptp(p)) == 0:
        candidates = [k for k in candidates if k != "affine_weights"]
    if float(np.ptp(x)) == 0:
        candidates = [k for k in candidates if k in ("identity", "scale")]
    scored = []
    for kind in candidates:
        errors = []
        for i in range(x.size):
            keep = np.arange(x.size) != i
            cal = _fit(kind, x[keep], y[keep], p[keep], floor)
            if not _admissible(cal, floor):
                break
            errors.append(abs(cal.predict(x[i], p[i]) - y[i]) / y[i])
        else:
            scored.append((float(np.mean(errors)), kind))
    # stable sort: on a tie the simpler model (earlier in CALIBRATIONS) is kept
    for _, kind in sorted(scored, key=lambda s: s[0]):
        cal = _fit(kind, x, y, p, floor)
        if kind == "identity" or _admissible(cal, floor):
            return cal
    return Calibration()


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    return float(np.mean(np.abs(p - m) / m) * 100)
