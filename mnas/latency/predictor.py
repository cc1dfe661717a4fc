"""A latency predictor fitted to whole networks timed on this machine (issue 19).

Building (``scripts/latency_table.py --predictor`` or :func:`build_predictor`): random
architectures of the space are timed with the search's own evaluator (drift-corrected,
never from the cache), their operator features are counted (:mod:`mnas.latency.features`)
and a model is chosen by cross-validation (:mod:`mnas.latency.fit`). The JSON file holds
the model, the timing set-up it answers for, the range it was fitted on and the training
data.

Querying (:class:`Predictor`, or ``latency=predictor`` through :class:`PredictorLatency`):
``predict(arch) -> ms`` sums seven precomputed block vectors and evaluates the model, in
tens of microseconds. A prediction is never <= 0 (the model's form guarantees it) and one
outside the fitted range is flagged (:attr:`Prediction.in_range`), logged, or refused with
``out_of_range="refuse"``. A predictor answers only for its timing set-up (input shape,
classes, width, stem stride, threads, clock, graph optimisation): another is refused. The
host's CPU and ONNX Runtime version are no reason to refuse a query (a GPU machine may
search for this CPU), but :func:`refit_predictor`, which times networks, refuses to mix
machines.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort
from scipy.optimize import nnls

from mnas.latency.calibration import Calibration, Floor, fit_calibration
from mnas.latency.features import FEATURES, BlockFeatures, NetSetup
from mnas.latency.fit import MODEL_KINDS, LatencyModel, scores, select_model
from mnas.latency.ort import OrtLatency, describe_arch, machine_description, machine_fingerprint
from mnas.latency.stats import LatencyError, LatencyStats
from mnas.space import Architecture, MnasSpace

log = logging.getLogger(__name__)

PREDICTOR_FORMAT = "mnas-latency-predictor/1"
# What a query must match: the timing set-up. Machine and runtime version are recorded, and
# only re-measuring (refit) insists on them.
SETUP_KEYS = (
    "input_shape",
    "num_classes",
    "width_mult",
    "stem_stride",
    "threads",
    "clock",
    "graph_optimization",
    "opset",
    "export_format",
)
OUT_OF_RANGE = ("warn", "refuse")


@dataclass(frozen=True)
class Prediction:
    """One prediction: ``ms``, and whether the network lies in the range the model was
    fitted on (every aggregate of :meth:`Predictor.aggregates` within the training
    networks' minimum and maximum)."""

    ms: float
    in_range: bool


def _aggregate_matrix() -> np.ndarray:
    rows = [
        [f.endswith(suffix) for f in FEATURES]
        for suffix in ("_macs", "_weights", "_write", "_nodes")
    ]
    return np.asarray(rows, dtype=np.float64)


_AGG = _aggregate_matrix()
# Which features are per-operator counts (the runtime's fixed cost per node); the rest is
# work (multiply-adds, elements, weights). A ``split`` re-fit scales the two apart.
_NODE = np.array([f.endswith("_nodes") for f in FEATURES])


def _aggregates(x: np.ndarray, linear_ms: float) -> np.ndarray:
    """What the range is checked on (:data:`AGGREGATES`): total multiply-adds, weights,
    elements written, operators, and the linear model's ms."""
    return np.append(_AGG @ x, linear_ms)


AGGREGATES = ("mmacs", "mweights", "mwrites", "nodes", "linear_ms")


class Predictor:
    """Predicted latency from a fitted model, for one timing set-up.

    Args:
        data: the predictor as :meth:`to_dict` writes it.
        path: where it was read from (for messages).
    """

    def __init__(self, data: dict, path: str | None = None) -> None:
        if not isinstance(data, dict) or data.get("format") != PREDICTOR_FORMAT:
            raise ValueError(f"{path or 'data'} is not a latency predictor ({PREDICTOR_FORMAT})")
        if list(data["features"]) != list(FEATURES):
            raise ValueError(
                f"{path or 'predictor'} counts other features than this mnas; rebuild it"
            )
        self.data = data
        self.path = path
        self.setup = data["setup"]
        self.model = LatencyModel.from_dict(data["model"])
        c = data.get("calibration") or {}
        self.split: tuple[float, float] | None = None
        if c.get("kind") == "split":
            self.split = (float(c["node_scale"]), float(c["work_scale"]))
            self.calibration = Calibration()
        else:
            self.calibration = Calibration(
                c.get("kind", "identity"), c.get("intercept_ms", 0.0), c.get("slope", 1.0)
            )
        self.low = np.asarray(data["range"]["low"], dtype=np.float64)
        self.high = np.asarray(data["range"]["high"], dtype=np.float64)
        batch, chans, size, _ = self.setup["input_shape"]
        self.net = NetSetup(
            size,
            chans,
            self.setup["num_classes"],
            self.setup["width_mult"],
            self.setup["stem_stride"],
        )
        self.features = BlockFeatures(self.net, MnasSpace())
        # Every block row extended by its share of the linear model, of the range's
        # aggregates and of the linear model's per-node part (all additive over blocks), so
        # a query sums seven rows once.
        m = self.features.matrix
        w = self.model.weights
        self._node_weights = np.where(_NODE, w, 0.0)
        self._rows = np.hstack((m, (m @ w)[:, None], m @ _AGG.T, (m @ self._node_weights)[:, None]))
        self._n = len(FEATURES)
        # (linear ms first, then the aggregates), widened by a relative 1e-9: a training
        # network on the boundary stays inside whatever order its rows are summed in
        low, high = self.low.tolist(), self.high.tolist()
        self._range = [
            (lo - 1e-9 * abs(lo), hi + 1e-9 * abs(hi))
            for lo, hi in zip(low[-1:] + low[:-1], high[-1:] + high[:-1], strict=True)
        ]

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f), path)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON, atomically (temporary file + rename)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        self.path = path

    def check_setup(self, **wanted) -> None:
        """Refuse a query for another timing set-up. ``wanted`` holds any of
        :data:`SETUP_KEYS`, or ``input_size``, ``in_channels``, ``batch_size`` (parts of
        ``input_shape``); None values are not checked. The host's CPU and ONNX Runtime
        version are only logged when they differ.

        Raises:
            ValueError: naming every differing value, what the predictor was built for and
                how to build one.
        """
        have = dict(self.setup)
        batch, chans, size, _ = have["input_shape"]
        have.update(input_size=size, in_channels=chans, batch_size=batch)
        wrong = {}
        for k, v in wanted.items():
            if v is None:
                continue
            if k not in have:
                raise ValueError(f"unknown set-up key {k!r}; known: {', '.join(sorted(have))}")
            h = have[k]
            same = (
                math.isclose(v, h)
                if isinstance(v, int | float) and isinstance(h, int | float)
                else v == h
            )
            if not same:
                wrong[k] = (v, h)
        if wrong:
            text = ", ".join(f"{k}={v!r} (predictor: {h!r})" for k, (v, h) in wrong.items())
            raise ValueError(
                f"latency predictor {self.path or ''} was built for another timing set-up: "
                f"{text}. Build one for this set-up with scripts/latency_table.py --predictor"
            )
        if self.setup.get("machine") != machine_fingerprint():
            log.info(
                "latency predictor %s was built on %s (onnxruntime %s); this host is %s",
                self.path,
                self.data.get("machine_description", {}).get("cpu", "?"),
                self.setup.get("onnxruntime"),
                machine_description()["cpu"],
            )

    def predict_detail(self, arch: Architecture) -> Prediction:
        """:class:`Prediction` of ``arch`` (ms on the predictor's scale, and the range flag)."""
        model = self.model
        rows = self.features.rows(arch)
        if rows is None:  # not in the token space: counted layer by layer
            x = self.features(arch)
            lin = model.linear(x)
            checked = [lin, *(_AGG @ x).tolist()]
            node = float(x @ self._node_weights) if self.split else 0.0
        else:
            total = self._rows.take(rows, axis=0).sum(axis=0)
            x = total[: self._n]
            checked = total[self._n :].tolist()
            node = checked.pop()
            lin = checked[0] = model.intercept + checked[0]
        ms = model.from_linear(x, lin)
        if self.split is None:
            ms = self.calibration.predict(ms)
        else:
            node += model.intercept
            ms *= (self.split[0] * node + self.split[1] * (lin - node)) / lin
        in_range = all(lo <= v <= hi for v, (lo, hi) in zip(checked, self._range, strict=True))
        if not ms > 0:
            # the model's form rules this out; a hand-edited file could still do it
            raise LatencyError(f"{describe_arch(arch)}: predictor {self.path} gives {ms:.4g} ms")
        return Prediction(ms, in_range)

    def predict(self, arch: Architecture) -> float:
        """Predicted latency of ``arch`` in ms (flagged or refused outside the fitted range
        only through :meth:`predict_detail` and :class:`PredictorLatency`)."""
        return self.predict_detail(arch).ms

    def parts(self, arch: Architecture) -> tuple[float, float]:
        """The model's prediction of ``arch`` (before any calibration) as ``(node_ms,
        work_ms)``: shared in the proportion of the linear model's per-operator part
        (intercept and ``*_nodes`` features) to the rest."""
        x = self.features(arch)
        lin = self.model.linear(x)
        node = self.model.intercept + float(x @ self._node_weights)
        ms = self.model.from_linear(x, lin)
        return ms * node / lin, ms * (lin - node) / lin


def load_predictor(path: str | os.PathLike, **setup) -> Predictor:
    """The predictor in ``path``, refused unless it answers for ``setup`` (any of
    :meth:`Predictor.check_setup`'s keys: ``input_size``, ``in_channels``, ``num_classes``,
    ``width_mult``, ``stem_stride``, ``threads``, ``batch_size``, ``clock``, ...). Then
    ``predictor.predict(arch) -> ms``."""
    predictor = Predictor.load(path)
    predictor.check_setup(**setup)
    return predictor


def timing_setup(evaluator: OrtLatency) -> dict:
    """The set-up a predictor records: the evaluator's (input shape, classes, width, stem
    stride, threads, clock, ONNX Runtime, machine, opset, nominal) and the graph
    optimisation level its sessions use."""
    return {
        **evaluator.setup(),
        "graph_optimization": evaluator.graph_optimization,
        "reference": evaluator.reference,
    }


def build_predictor(
    evaluator: OrtLatency,
    archs: Sequence[Architecture],
    max_seconds: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    model: str = "auto",
) -> Predictor:
    """Time ``archs`` afresh with ``evaluator`` (until ``max_seconds``, if given) and fit a
    predictor to them (``model``: as :func:`fit_predictor`).

    Raises:
        LatencyError: if a network cannot be timed.
        ValueError: if fewer than 10 networks were timed, or for an unknown ``model``.
    """
    _model_kinds(model)  # refused before any timing
    t0 = time.perf_counter()
    timed: list[tuple[Architecture, float]] = []
    for i, arch in enumerate(archs):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            log.info("predictor: time budget of %.0f s reached after %d networks", max_seconds, i)
            break
        timed.append((arch, evaluator.measure_afresh(arch).median_ms))
        if progress is not None:
            progress(i + 1, len(archs), time.perf_counter() - t0)
    predictor = fit_predictor(
        timing_setup(evaluator),
        [a for a, _ in timed],
        [ms for _, ms in timed],
        timing_seconds=time.perf_counter() - t0,
        model=model,
    )
    predictor.data["build_seconds"] = time.perf_counter() - t0
    return predictor


def fit_predictor(
    setup: dict,
    archs: Sequence[Architecture],
    measured_ms: Sequence[float],
    timing_seconds: float | None = None,
    model: str = "auto",
) -> Predictor:
    """A predictor for ``setup`` (:func:`timing_setup`) fitted to measured networks.
    ``model``: one of :data:`MODEL_KINDS` (a forest kind's query costs about twice a
    linear one's), or ``auto`` for the kind cross-validation prefers."""
    kinds = _model_kinds(model)
    batch, chans, size, _ = setup["input_shape"]
    net = NetSetup(size, chans, setup["num_classes"], setup["width_mult"], setup["stem_stride"])
    feats = BlockFeatures(net, MnasSpace())
    x = np.array([feats(a) for a in archs])
    y = np.asarray(measured_ms, dtype=np.float64)
    t0 = time.perf_counter()
    fitted, cv = select_model(x, y, kinds)
    agg = np.array([_aggregates(r, fitted.linear(r)) for r in x])
    data = {
        "format": PREDICTOR_FORMAT,
        "setup": setup,
        "machine_description": machine_description(),
        "features": list(FEATURES),
        "model": fitted.to_dict(),
        "calibration": None,
        "range": {
            "names": list(AGGREGATES),
            "low": agg.min(0).tolist(),
            "high": agg.max(0).tolist(),
        },
        "cross_validation": cv,
        "training": {
            "archs": [a.key for a in archs],
            "tokens": [list(a.tokens) for a in archs],
            "measured_ms": y.tolist(),
        },
        "timing_seconds": timing_seconds,
        "fit_seconds": time.perf_counter() - t0,
    }
    log.info(
        "latency predictor: %s on %d networks; cross-validated %s",
        fitted.kind,
        len(y),
        cv[fitted.kind],
    )
    return Predictor(data)


def _model_kinds(model: str) -> tuple[str, ...]:
    if model == "auto":
        return MODEL_KINDS
    if model not in MODEL_KINDS:
        raise ValueError(f"model={model!r}; allowed: auto, {', '.join(MODEL_KINDS)}")
    return (model,)


def refit_predictor(
    base: Predictor | Sequence[Predictor],
    evaluator: OrtLatency,
    archs: Sequence[Architecture],
    same_machine: bool = True,
) -> Predictor:
    """``base`` re-fitted to the timing set-up of ``evaluator`` (another input size, thread
    count, ...) from a few networks timed with it: ``base``'s model applied to the features
    of the new set-up, then one of two re-fits, whichever predicts the left-out network
    better over leave-one-out on the timed networks (:func:`choose_refit`):

    - a calibration of the whole prediction: scaled, or scaled and shifted
      (:func:`fit_calibration`, itself chosen by leave-one-out);
    - ``split``: the model's per-operator (node) part and its work part scaled apart,
      ``node_scale * node + work_scale * work``, both scales > 0 — what changes when the
      maps grow (work) or threads are added (work shrinks, a node's overhead grows).

    Given several bases (e.g. this machine's 16x16, 32x32 and 224x224 predictors), the
    networks are timed once and the base whose re-fit has the lowest leave-one-out error is
    kept (a 32x32 model orders 28x28 networks better than a 16x16 one); every base's error
    is recorded (``calibration.bases``).

    The re-fit's range (what :attr:`Prediction.in_range` checks) is that of the base's
    training networks and the timed ones, counted at the new set-up: the architectures the
    model has seen, not the old set-up's feature values, which every network of a larger
    input would exceed.

    Raises:
        ValueError: if a base was built on another kind of machine (``same_machine``:
            mixing machines' timings in one predictor is refused), with < 3 networks, or
            with no base.
    """
    bases = [base] if isinstance(base, Predictor) else list(base)
    if not bases:
        raise ValueError("re-fitting needs at least one base predictor")
    for b in bases:
        if same_machine and b.setup.get("machine") != machine_fingerprint():
            raise ValueError(
                f"predictor {b.path} was built on machine {b.setup.get('machine')} "
                f"({b.data.get('machine_description', {}).get('cpu', '?')}); this is "
                f"{machine_fingerprint()} ({machine_description()['cpu']}): re-fit it there"
            )
    if len(archs) < 3:
        raise ValueError(f"re-fitting needs at least 3 timed networks, got {len(archs)}")
    setup = timing_setup(evaluator)
    measured = [evaluator.measure_afresh(a).median_ms for a in archs]
    fits = [_refit_one(b, setup, archs, measured) for b in bases]
    best = min(fits, key=lambda f: min(f.data["calibration"]["leave_one_out_mape"].values()))
    best.data["calibration"]["bases"] = [
        {
            "path": b.path,
            "input_shape": b.setup.get("input_shape"),
            "threads": b.setup.get("threads"),
            "leave_one_out_mape": f.data["calibration"]["leave_one_out_mape"],
            "chosen": f is best,
        }
        for b, f in zip(bases, fits, strict=True)
    ]
    return best


def _refit_one(
    base: Predictor, setup: dict, archs: Sequence[Architecture], measured: Sequence[float]
) -> Predictor:
    """:func:`refit_predictor` of one base to networks already timed."""
    data = {**base.data, "setup": setup, "calibration": None}
    moved = Predictor(data, base.path)
    space = MnasSpace()
    seen = [space.architecture(t) for t in base.data["training"]["tokens"]] + list(archs)
    agg = np.array([_aggregates(x, moved.model.linear(x)) for x in map(moved.features, seen)])
    data["range"] = {
        "names": list(AGGREGATES),
        "low": agg.min(0).tolist(),
        "high": agg.max(0).tolist(),
        "networks": "the base predictor's training networks and the re-fit's, at this set-up",
    }
    parts = np.array([moved.parts(a) for a in archs])
    # the least a calibrated prediction may give at the bottom of the range
    low = float(agg[:, AGGREGATES.index("linear_ms")].min())
    floor = Floor(low, 0.0, low * 0.1)
    choice = choose_refit(parts, measured, floor)
    raw = parts.sum(axis=1)
    common = {
        "from_setup": base.setup,
        "archs": [a.key for a in archs],
        "measured_ms": measured,
        "leave_one_out_mape": choice.loo_mape,
    }
    if choice.split is not None:
        data["calibration"] = {
            "kind": "split",
            "node_scale": choice.split[0],
            "work_scale": choice.split[1],
            **common,
            "in_sample": scores(list(parts @ np.asarray(choice.split)), measured),
        }
    else:
        cal = choice.calibration
        data["calibration"] = {
            "kind": cal.kind,
            "intercept_ms": cal.intercept_ms,
            "slope": cal.slope,
            **common,
            "in_sample": scores([cal.predict(r) for r in raw], measured),
        }
    return Predictor(data)


@dataclass(frozen=True)
class Refit:
    """What :func:`choose_refit` chose: a ``split`` (node and work scales) or else a
    ``calibration`` of the whole prediction, and each candidate's leave-one-out MAPE (%)."""

    calibration: Calibration
    split: tuple[float, float] | None
    loo_mape: dict


def fit_split(parts: np.ndarray, measured: Sequence[float]) -> tuple[float, float] | None:
    """Scales ``(node, work) >= 0`` minimising the squared relative error of
    ``parts @ scales`` against ``measured`` (``parts``: one ``(node_ms, work_ms)`` row per
    network); None unless both are > 0."""
    y = np.asarray(measured, dtype=np.float64)
    coef, _ = nnls(np.asarray(parts, dtype=np.float64) / y[:, None], np.ones(len(y)))
    if not (coef[0] > 0 and coef[1] > 0):
        return None
    return float(coef[0]), float(coef[1])


def choose_refit(parts: np.ndarray, measured: Sequence[float], floor: Floor | None) -> Refit:
    """The re-fit of a moved predictor's ``(node_ms, work_ms)`` parts to ``measured``
    that predicts each network best when fitted without it: :func:`fit_calibration` of the
    summed parts (its own choice redone without the left-out network) or
    :func:`fit_split` (a candidate from 4 networks on, and only if every fit is valid).
    On a tie the calibration, the simpler, is kept."""
    parts = np.asarray(parts, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    raw = parts.sum(axis=1)
    n = len(y)
    cal_errors, split_errors = [], []
    for i in range(n):
        keep = np.arange(n) != i
        cal = fit_calibration(raw[keep], y[keep], floor=floor)
        cal_errors.append(abs(cal.predict(raw[i]) / y[i] - 1))
        s = fit_split(parts[keep], y[keep]) if n >= 4 else None
        split_errors.append(math.inf if s is None else abs(parts[i] @ s / y[i] - 1))
    loo = {"calibration": 100 * float(np.mean(cal_errors))}
    split = fit_split(parts, y) if n >= 4 else None
    if split is not None and math.isfinite(max(split_errors)):
        loo["split"] = 100 * float(np.mean(split_errors))
    if "split" in loo and loo["split"] < loo["calibration"]:
        return Refit(Calibration(), split, loo)
    return Refit(fit_calibration(raw, y, floor=floor), None, loo)


class PredictorLatency:
    """``latency=predictor``: :class:`LatencyStats` from a :class:`Predictor` file.

    Args:
        path: the predictor's JSON file.
        out_of_range: ``warn`` (log a warning naming the network, and predict) or
            ``refuse`` (:class:`LatencyError`) for a network outside the fitted range.
        input_size, in_channels, num_classes, width_mult, stem_stride, batch_size,
        threads: the set-up asked for; a predictor built for another is refused.

    Attributes:
        out_of_range_count: networks predicted outside the fitted range so far.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        out_of_range: str = "warn",
        **wanted,
    ) -> None:
        if out_of_range not in OUT_OF_RANGE:
            raise ValueError(f"out_of_range={out_of_range!r}; allowed: {', '.join(OUT_OF_RANGE)}")
        self.predictor = Predictor.load(path)
        self.predictor.check_setup(**wanted)
        self.out_of_range = out_of_range
        self.out_of_range_count = 0
        if ort.__version__ != self.predictor.setup.get("onnxruntime"):
            log.info(
                "predictor %s: timed with onnxruntime %s",
                path,
                self.predictor.setup.get("onnxruntime"),
            )

    def measure(self, arch: Architecture) -> LatencyStats:
        p = self.predictor.predict_detail(arch)
        if not p.in_range:
            self.out_of_range_count += 1
            text = (
                f"{describe_arch(arch)} lies outside the range latency predictor "
                f"{self.predictor.path} was fitted on ({p.ms:.4g} ms predicted)"
            )
            if self.out_of_range == "refuse":
                raise LatencyError(text)
            log.warning("%s; the figure is an extrapolation", text)
        setup = self.predictor.setup
        return replace(
            LatencyStats.point(p.ms, "predictor"),
            nominal_ms=setup.get("nominal_ms"),
            clock=setup.get("clock", "wall"),
        )
