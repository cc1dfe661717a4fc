"""Re-checking a latency predictor against the machine as it runs now (issue 19).

A predictor is fitted to timings of one hour, and a shared machine does not run the same
all day: the 200 training networks of a 224x224 build, re-timed an hour and a half later,
agreed with the build's timings within +-5% for 67-79% of them, where timings minutes apart
agreed for 85-93% — and the change was not a common factor: networks heavy in arithmetic
had become slower than the rest (docs/results/latency-notebook.md, "An hour later").
:func:`recheck_predictor` re-times a few of the predictor's own training networks (in passes,
:mod:`mnas.latency.timed`) and re-fits a calibration of its model to them — a scale, scale
and shift, or the per-operator and work parts scaled apart
(:func:`mnas.latency.refit.choose_refit`) — and keeps it only where its leave-one-out error
on those networks is below the uncalibrated model's error on them.
``latency.predictor_path=auto`` runs it when it reuses a predictor last timed more than
:data:`RECHECK_AFTER_HOURS` ago.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from mnas.latency.fit import scores
from mnas.latency.ort import OrtLatency
from mnas.latency.predictor import SETUP_KEYS, Predictor, timing_setup
from mnas.latency.refit import refit_to_timings, require_this_machine
from mnas.latency.timed import TIMING_PASSES, time_networks
from mnas.space import MnasSpace

log = logging.getLogger(__name__)

RECHECK_NETWORKS = 20
"""Training networks a re-check times (20: re-calibrations from 5 or 10 of them were as
likely to do harm as good, docs/results/latency-notebook.md)."""
RECHECK_AFTER_HOURS = 1.0
"""``predictor_path=auto`` re-checks a predictor last timed longer ago than this."""


def last_timed(predictor: Predictor) -> float | None:
    """When the predictor's networks were last timed (seconds since the epoch): its
    latest re-check, else its build; None for a predictor that does not say."""
    recheck = predictor.data.get("recheck") or {}
    return recheck.get("at") or predictor.data.get("timed_at")


def recheck_predictor(
    predictor: Predictor,
    evaluator: OrtLatency,
    networks: int = RECHECK_NETWORKS,
    passes: int = TIMING_PASSES,
) -> Predictor:
    """``predictor`` re-checked on ``evaluator`` (this machine, now): ``networks`` of its
    training networks (evenly spread over them) re-timed, and a calibration of its model
    re-fitted to them, kept if its leave-one-out MAPE is below the uncalibrated model's
    MAPE on them (a calibration from an earlier re-check is replaced either way). The
    result records ``recheck``: the networks, their stored and new timings, the median
    ratio new/stored, the share of new timings within +-5% of the stored ones, both
    errors and whether the calibration was applied.

    Raises:
        ValueError: if ``evaluator`` times another set-up than the predictor's (or on
            another machine), if the predictor is itself re-fitted to another set-up (re-fit
            it again instead), or for ``networks`` outside 5 .. its training networks.
        LatencyError: if a network cannot be timed.
    """
    data = predictor.data
    setup = timing_setup(evaluator)
    require_this_machine(predictor, "build one here")
    predictor.check_setup(**{k: setup.get(k) for k in SETUP_KEYS})
    if data.get("calibration") is not None and data.get("recheck") is None:
        raise ValueError(
            f"re-check: predictor {predictor.path} is re-fitted to another set-up; re-fit "
            "it again (scripts/latency_table.py --predictor --refit) instead"
        )
    training = data["training"]
    total = len(training["tokens"])
    if isinstance(networks, bool) or not isinstance(networks, int) or not 5 <= networks <= total:
        raise ValueError(f"re-check networks={networks!r}; allowed: 5 .. {total}")
    index = np.linspace(0, total - 1, networks).round().astype(int)
    space = MnasSpace()
    archs = [space.architecture(training["tokens"][i]) for i in index]
    stored = np.asarray(training["measured_ms"], dtype=np.float64)[index]
    timed = time_networks(evaluator, archs, 0, passes)
    new = np.asarray(timed.ms)
    raw = Predictor({**data, "calibration": None, "recheck": None}, predictor.path)
    raw_scores = scores([raw.predict(a) for a in archs], new)
    refit = refit_to_timings(raw, predictor.setup, archs, timed.ms)
    loo = min(refit.data["calibration"]["leave_one_out_mape"].values())
    applied = loo < raw_scores["mape"]
    out = refit if applied else raw
    ratio = new / stored
    out.data["recheck"] = {
        "at": time.time(),
        "networks": int(networks),
        "passes": passes,
        "seconds": timed.seconds,
        "archs": [a.key for a in archs],
        "stored_ms": stored.tolist(),
        "measured_ms": timed.ms,
        "median_ratio": float(np.median(ratio)),
        "within_5_of_stored": float(np.mean(np.abs(ratio - 1) <= 0.05)),
        "model_mape": raw_scores["mape"],
        "calibrated_loo_mape": loo,
        "calibration_kind": refit.data["calibration"]["kind"],
        "applied": bool(applied),
    }
    out.path = predictor.path
    log.info(
        "latency predictor re-checked on %d networks in %.0f s: today's timings are %.3fx "
        "the stored ones (median), %.0f%% within +-5%%; the model is off by %.1f%% (MAPE), "
        "re-calibrated (%s) by %.1f%% (leave-one-out): %s",
        networks,
        timed.seconds,
        float(np.median(ratio)),
        100 * out.data["recheck"]["within_5_of_stored"],
        raw_scores["mape"],
        refit.data["calibration"]["kind"],
        loo,
        "applied" if applied else "not applied",
    )
    return out
