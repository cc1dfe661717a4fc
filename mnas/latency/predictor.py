"""A latency predictor fitted to whole networks timed on this machine (issue 19).

Building (``scripts/latency_table.py --predictor`` or :func:`build_predictor`): random
architectures of the space are timed with the search's own evaluator (drift-corrected,
never from the cache) and profiled (their blocks' times, :mod:`mnas.latency.profile`), their
operator features are counted (:mod:`mnas.latency.features`) and a model is chosen by
cross-validation (:mod:`mnas.latency.fit`). The JSON file holds
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

from mnas.latency.calibration import Calibration
from mnas.latency.features import FEATURES, BlockFeatures, NetSetup
from mnas.latency.fit import (
    BLOCK_KINDS,
    MODEL_KINDS,
    VECTOR_KINDS,
    LatencyModel,
    fit_model,
    rank_models,
    select_model,
)
from mnas.latency.layout import nchwc_block
from mnas.latency.ort import OrtLatency, describe_arch
from mnas.latency.references import AUTO_LARGE
from mnas.latency.session import machine_description, machine_fingerprint
from mnas.latency.stats import LatencyError, LatencyStats
from mnas.latency.timed import TIMING_PASSES, time_networks
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
PROFILE_RUNS = 20
"""Runs of ONNX Runtime's profiler per training network (their per-node medians)."""
QUERY_BUDGET_US = 50.0
"""What a query may cost a predictor ``model=auto`` chooses (issue 19's goal: <= 50 us per
architecture): where cross-validation prefers a kind whose query is slower, the best kind
within it is kept."""
QUERY_SAMPLE = 100
"""Training networks :func:`fit_predictor` times queries on."""


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
        elif c.get("kind") == "kind_scales":  # already in the re-fitted linear model
            self.calibration = Calibration()
        else:
            self.calibration = Calibration(
                c.get("kind", "identity"), c.get("intercept_ms", 0.0), c.get("slope", 1.0)
            )
        self.low = np.asarray(data["range"]["low"], dtype=np.float64)
        self.high = np.asarray(data["range"]["high"], dtype=np.float64)
        self.net = net_setup(self.setup)
        self.features = BlockFeatures(self.net, MnasSpace())
        # Every block row extended by its share of the linear model, of the range's
        # aggregates and of the linear model's per-node part (all additive over blocks), so
        # a query sums seven rows once.
        m = self.features.matrix
        w = self.model.weights
        self._node_weights = np.where(_NODE, w, 0.0)
        columns = [m, (m @ w)[:, None], m @ _AGG.T, (m @ self._node_weights)[:, None]]
        if self.model.blocks is not None:
            # a blocks model's time of every block of the space, computed once
            position = np.array([key[0] for key in self.features.index])
            columns.append(self.model.blocks.block_ms(m, position)[:, None])
        self._rows = np.hstack(columns)
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
            if model.blocks is not None:
                ms = model.predict_blocks(self.features.block_vectors(arch))
            else:
                ms = model.from_linear(x, lin)
        else:
            total = self._rows.take(rows, axis=0).sum(axis=0)
            x = total[: self._n]
            checked = total[self._n :].tolist()
            if model.blocks is not None:
                ms = model.blocks.network(checked.pop())
            node = checked.pop()
            lin = checked[0] = model.intercept + checked[0]
            if model.blocks is None:
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
        if self.model.blocks is not None:
            ms = self.model.predict_blocks(self.features.block_vectors(arch))
        else:
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


def net_setup(setup: dict) -> NetSetup:
    """The network set-up a predictor's features are counted for (``nchwc_block``: 0 in a
    set-up that does not name one)."""
    batch, chans, size, _ = setup["input_shape"]
    return NetSetup(
        size,
        chans,
        setup["num_classes"],
        setup["width_mult"],
        setup["stem_stride"],
        int(setup.get("nchwc_block", 0)),
    )


def with_layout(setup: dict) -> dict:
    """``setup`` naming this machine's NCHWc block (:func:`nchwc_block`) where its graph
    optimisation level runs the layout rewrite (``all`` only)."""
    if setup.get("graph_optimization") == "all":
        setup = {**setup, "nchwc_block": nchwc_block()}
    return setup


def timing_setup(evaluator: OrtLatency) -> dict:
    """The set-up a predictor records: the evaluator's (input shape, classes, width, stem
    stride, threads, clock, ONNX Runtime, machine, opset, nominal) and the graph
    optimisation level its sessions use."""
    setup = with_layout(
        {
            **evaluator.setup(),
            "graph_optimization": evaluator.graph_optimization,
            "reference": evaluator.reference,
        }
    )
    if evaluator.reference and evaluator.references != AUTO_LARGE:
        # (left out for MobileNetV2 alone: the set-up predictors were built with before)
        setup["references"] = list(evaluator.references)
    return setup


def build_predictor(
    evaluator: OrtLatency,
    archs: Sequence[Architecture],
    max_seconds: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    model: str = "auto",
    profile_runs: int = PROFILE_RUNS,
    query_budget_us: float | None = QUERY_BUDGET_US,
    passes: int = TIMING_PASSES,
) -> Predictor:
    """Time ``archs`` afresh with ``evaluator`` in ``passes`` passes (each network's
    geometric mean; within ``max_seconds``, if given: :func:`mnas.latency.timed.
    time_networks`), profile each once with ONNX Runtime's profiler over ``profile_runs``
    runs (its blocks' times inside the network, :mod:`mnas.latency.profile`; 0: not
    profiled, and no block model) and fit a predictor to them (``model``,
    ``query_budget_us``: as :func:`fit_predictor`). ``progress(done, total, seconds)``
    counts timings.

    Raises:
        LatencyError: if a network cannot be timed or profiled.
        ValueError: if fewer than 10 networks were timed, for an unknown ``model``, a
            block model without profiles, or ``passes`` < 1.
    """
    _model_kinds(model)  # refused before any timing
    if profile_runs < 0:
        raise ValueError(f"profile_runs={profile_runs}; allowed: >= 0 (0: no profiles)")
    if profile_runs == 0 and model in BLOCK_KINDS:
        raise ValueError(f"model={model!r} is fitted to profiles; profile_runs=0 has none")
    timed = time_networks(evaluator, archs, profile_runs, passes, max_seconds, progress)
    predictor = fit_predictor(
        timing_setup(evaluator),
        timed.archs,
        timed.ms,
        timing_seconds=timed.seconds,
        model=model,
        block_ms=timed.block_ms,
        query_budget_us=query_budget_us,
        passes_ms=timed.passes_ms,
    )
    predictor.data["build_seconds"] = timed.seconds + predictor.data["fit_seconds"]
    return predictor


def fit_predictor(
    setup: dict,
    archs: Sequence[Architecture],
    measured_ms: Sequence[float],
    timing_seconds: float | None = None,
    model: str = "auto",
    block_ms: Sequence[Sequence[float]] | None = None,
    query_budget_us: float | None = QUERY_BUDGET_US,
    passes_ms: Sequence[Sequence[float]] | None = None,
) -> Predictor:
    """A predictor for ``setup`` (:func:`timing_setup`) fitted to measured networks.
    ``model``: one of :data:`MODEL_KINDS` (a forest kind's query costs about twice a
    linear one's), or ``auto`` for the kind cross-validation prefers among those whose
    query (:func:`query_us`, on the training networks) costs at most ``query_budget_us``
    (None: any; where none does, the fastest). ``block_ms``: each network's profiled time
    per block (ms; :func:`mnas.latency.profile.block_times`), which the block kinds are
    fitted to (without it they are not candidates). How the kind was chosen is recorded
    under ``selection``. ``passes_ms``: each network's timings, when
    ``measured_ms`` is their mean (recorded with the training data).

    Raises:
        ValueError: for an unknown ``model``, a block kind without ``block_ms``, or
            ``block_ms`` that does not give seven blocks of each architecture of the space.
    """
    kinds = _model_kinds(model)
    feats = BlockFeatures(net_setup(setup), MnasSpace())
    x = np.array([feats(a) for a in archs])
    y = np.asarray(measured_ms, dtype=np.float64)
    rows = [feats.rows(a) for a in archs]
    # the networks' block vectors (networks of the space only) and, profiled, block times
    blocks = None if any(r is None for r in rows) else (feats.matrix[np.asarray(rows)], None)
    if block_ms is not None:
        t = np.asarray(block_ms, dtype=np.float64)
        if blocks is None or t.shape != (len(archs), 7):
            raise ValueError(
                f"block_ms must hold 7 block times for each of the {len(archs)} "
                f"architectures of the MnasNet space; got shape {t.shape}"
            )
        blocks = (blocks[0], t)
    elif model in BLOCK_KINDS:
        raise ValueError(f"model={model!r} is fitted to profiled block times; none were given")
    if blocks is None and model in VECTOR_KINDS:
        raise ValueError(f"model={model!r} is fitted to networks of the MnasNet space only")
    t0 = time.perf_counter()
    fitted, cv = select_model(x, y, kinds, blocks)
    training = {
        "archs": [a.key for a in archs],
        "tokens": [list(a.tokens) for a in archs],
        "measured_ms": y.tolist(),
        "block_ms": None if block_ms is None else blocks[1].tolist(),
        "passes_ms": None if passes_ms is None else [list(t) for t in passes_ms],
    }

    def make(m: LatencyModel) -> Predictor:
        agg = np.array([_aggregates(r, m.linear(r)) for r in x])
        return Predictor(
            {
                "format": PREDICTOR_FORMAT,
                "setup": setup,
                "machine_description": machine_description(),
                "features": list(FEATURES),
                "model": m.to_dict(),
                "calibration": None,
                "range": {
                    "names": list(AGGREGATES),
                    "low": agg.min(0).tolist(),
                    "high": agg.max(0).tolist(),
                },
                "cross_validation": cv,
                "training": training,
                "timing_seconds": timing_seconds,
                "timed_at": time.time(),
            }
        )

    predictor = make(fitted)
    selection = {"by": "cross_validation" if model == "auto" else "asked", "query_us": {}}
    if model == "auto" and query_budget_us is not None:
        selection["query_budget_us"] = query_budget_us
        tried = []
        for kind in rank_models(cv):
            if kind != predictor.model.kind:
                predictor = make(fit_model(kind, x, y, blocks))
            us = selection["query_us"][kind] = query_us(predictor, archs[:QUERY_SAMPLE])
            tried.append((us, predictor))
            if us <= query_budget_us:
                break
        else:  # none within the budget: the fastest
            predictor = min(tried, key=lambda t: t[0])[1]
        if predictor.model.kind != fitted.kind:
            selection["by"] = "query budget"
            log.info(
                "latency predictor: %s queries in %.0f us, over the budget of %.0f us: %s kept",
                fitted.kind,
                selection["query_us"][fitted.kind],
                query_budget_us,
                predictor.model.kind,
            )
    predictor.data["selection"] = selection
    predictor.data["fit_seconds"] = time.perf_counter() - t0
    c = cv[predictor.model.kind]
    log.info(
        "latency predictor: %s on %d networks; cross-validated within +-10%% %.0f%%, "
        "+-5%% %.0f%%, MAPE %.1f%%, tau %.3f",
        predictor.model.kind,
        len(y),
        100 * c["within_10"],
        100 * c["within_5"],
        c["mape"],
        c["kendall_tau"],
    )
    return predictor


def query_us(predictor: Predictor, archs: Sequence[Architecture], passes: int = 5) -> float:
    """Microseconds per ``predictor.predict(arch)`` over ``archs``: the fastest of
    ``passes`` passes after a first one (which computes the rows a query then reuses): what
    a search's queries cost once warm, without other processes' interruptions."""
    for a in archs:
        predictor.predict(a)
    best = math.inf
    for _ in range(passes):
        t0 = time.perf_counter()
        for a in archs:
            predictor.predict(a)
        best = min(best, time.perf_counter() - t0)
    return best / max(1, len(archs)) * 1e6


def _model_kinds(model: str) -> tuple[str, ...]:
    if model == "auto":
        return MODEL_KINDS
    if model not in MODEL_KINDS:
        raise ValueError(f"model={model!r}; allowed: auto, {', '.join(MODEL_KINDS)}")
    return (model,)


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
