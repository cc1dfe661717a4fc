"""Fitting a latency model to measured whole networks (no torch, no ONNX Runtime here).

The candidates compete on the training networks by K-fold cross-validation; of those
within one standard error of the most predictions within +-5%, the one with the lowest
MAPE wins (:func:`rank_models`):

- ``linear``: ``intercept + w . features``, every weight >= 0 (non-negative least squares
  on the *relative* error): additive over operators, so over blocks; never <= 0, since
  the intercept and every feature are >= 0 and not all of them are 0;
- ``linear+trees``: the linear model times ``exp(r)``, where ``r`` is a small
  gradient-boosted forest on the network-level features and the linear prediction (what
  the sum misses: fusion, cache effects, tiny maps), fitted to ``log(measured / linear)``;
- ``trees``: ``exp`` of a forest fitted to ``log(measured)`` alone;
- ``blocks`` (when the networks were profiled, :mod:`mnas.latency.profile`): a model of
  every *block's* time inside its network (seven samples per network instead of one): the
  linear form per block times ``exp`` of a forest on the block's features, its position
  and its linear prediction (:class:`BlockPart`); the blocks' sum is then scaled to whole
  networks (``a + c * sum``, both >= 0: what the profile does not see, the run's own
  overhead and the profiler's). A block's prediction depends only on the block, so a
  predictor computes it once for every block of the space and a query sums seven numbers.
- ``additive`` (for networks of the space: it needs their block vectors, not profiles):
  ``a + sum`` over the blocks of the linear model's share of each block times ``exp`` of a
  small network on the block's features and position (:mod:`mnas.latency.additive`),
  fitted to the whole networks' times alone; stored and queried like ``blocks``.

Forests are stored as plain arrays of complete binary trees (:class:`Forest`), so a saved
model needs no pickle and one prediction is a handful of numpy operations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import nnls

from mnas.latency.additive import BlockMlp, fit_block_mlp

MODEL_KINDS = ("linear", "linear+trees", "trees", "blocks", "additive")
BLOCK_KINDS = ("blocks",)
"""The kinds fitted to profiled block times (they need them)."""
VECTOR_KINDS = ("additive",)
"""The kinds fitted to the networks' block vectors (networks of the space), not to
profiles."""
TREES = dict(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=0)
# the block forest learns from seven samples per network: deeper, and more trees
BLOCK_TREES = dict(n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.8, random_state=0)


@dataclass(frozen=True)
class Forest:
    """A gradient-boosted forest as complete binary trees of one depth: ``feature`` and
    ``threshold`` (trees x internal nodes, level order; go right when ``x > threshold``),
    ``leaf`` (trees x leaves), summed as ``offset + scale * sum(leaves reached)``."""

    depth: int
    feature: np.ndarray
    threshold: np.ndarray
    leaf: np.ndarray
    offset: float
    scale: float

    def __post_init__(self) -> None:
        # One query compares x with every node's threshold at once; the bits of a tree's
        # comparisons index a table of the leaf they lead to (2 ** 7 entries at depth 3).
        trees, internal = self.feature.shape
        table = np.zeros(2**internal, dtype=np.intp)
        for bits in range(2**internal):
            node = 0
            for _ in range(self.depth):
                node = 2 * node + 1 + ((bits >> node) & 1)
            table[bits] = node - internal
        if internal <= 8:
            # Up to depth 3 a tree's comparisons fit one byte: padded to eight nodes (the
            # padding never goes right), packed by np.packbits, and that byte indexes the
            # tree's own row of 256 leaf values directly (no table, no multiplication).
            pad = 8 - internal
            feature = np.pad(self.feature, ((0, 0), (0, pad)))
            threshold = np.pad(self.threshold, ((0, 0), (0, pad)), constant_values=math.inf)
            value = self.leaf[:, table[np.arange(256) & (2**internal - 1)]]
            object.__setattr__(self, "_feature", feature.ravel())
            object.__setattr__(self, "_threshold", threshold.ravel())
            object.__setattr__(self, "_value", value.ravel())
            object.__setattr__(self, "_base", np.arange(trees) * 256)
            return
        object.__setattr__(self, "_feature", self.feature.ravel())
        object.__setattr__(self, "_threshold", self.threshold.ravel())
        object.__setattr__(self, "_powers", 1 << np.arange(internal))
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_leaf", self.leaf.ravel())
        object.__setattr__(self, "_leaf_base", np.arange(trees) * (internal + 1))

    def __call__(self, x: np.ndarray) -> float:
        # trees decide on float32 inputs, as scikit-learn's do (a no-op for float32 x)
        right = x.astype(np.float32, copy=False)[self._feature] > self._threshold
        if hasattr(self, "_value"):
            code = np.packbits(right, bitorder="little")
            return self.offset + self.scale * float(self._value[self._base + code].sum())
        bits = right.reshape(len(self._leaf_base), -1) @ self._powers
        return self.offset + self.scale * float(
            self._leaf[self._leaf_base + self._table[bits]].sum()
        )

    def batch(self, x: np.ndarray) -> np.ndarray:
        """The forest's value for every row of ``x`` (what :meth:`__call__` gives each)."""
        x = np.asarray(x).astype(np.float32, copy=False)
        trees, internal = self.feature.shape
        rows = np.arange(len(x))[:, None]
        node = np.zeros((len(x), trees), dtype=np.intp)
        t = np.arange(trees)
        for _ in range(self.depth):
            right = x[rows, self.feature[t, node]] > self.threshold[t, node]
            node = 2 * node + 1 + right
        return self.offset + self.scale * self.leaf[t, node - internal].sum(axis=1)

    def to_dict(self) -> dict:
        return {
            "depth": self.depth,
            "feature": self.feature.tolist(),
            "threshold": [[t if math.isfinite(t) else None for t in r] for r in self.threshold],
            "leaf": self.leaf.tolist(),
            "offset": self.offset,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Forest:
        thr = [[math.inf if t is None else t for t in r] for r in d["threshold"]]
        return cls(
            int(d["depth"]),
            np.asarray(d["feature"], dtype=np.intp),
            np.asarray(thr, dtype=np.float64),
            np.asarray(d["leaf"], dtype=np.float64),
            float(d["offset"]),
            float(d["scale"]),
        )


def fit_forest(x: np.ndarray, y: np.ndarray, params: dict | None = None) -> Forest:
    """A scikit-learn gradient-boosted forest fitted to ``y``, as a :class:`Forest`
    (``params``: scikit-learn's, :data:`TREES` by default)."""
    from sklearn.ensemble import GradientBoostingRegressor

    params = TREES if params is None else params
    gbr = GradientBoostingRegressor(**params).fit(x, y)
    depth = params["max_depth"]
    internal, leaves = 2**depth - 1, 2**depth
    n = len(gbr.estimators_)
    feature = np.zeros((n, internal), dtype=np.intp)
    threshold = np.full((n, internal), math.inf)
    leaf = np.zeros((n, leaves))
    for t, (est,) in enumerate(gbr.estimators_):
        tree = est.tree_

        def fill(sk: int, node: int, level: int, t: int = t, tree=tree) -> None:
            if level == depth:
                leaf[t, node - internal] = tree.value[sk][0][0]
                return
            if tree.children_left[sk] == -1:
                # a leaf above full depth: a split that always goes left, to the same leaf
                fill(sk, 2 * node + 1, level + 1)
                fill(sk, 2 * node + 2, level + 1)
                return
            feature[t, node] = tree.feature[sk]
            threshold[t, node] = tree.threshold[sk]
            fill(tree.children_left[sk], 2 * node + 1, level + 1)
            fill(tree.children_right[sk], 2 * node + 2, level + 1)

        fill(0, 0, 0)
    forest = Forest(depth, feature, threshold, leaf, 0.0, float(gbr.learning_rate))
    offset = float(gbr.predict(x[:1])[0]) - forest(x[0])
    return Forest(depth, feature, threshold, leaf, offset, forest.scale)


@dataclass(frozen=True)
class LatencyModel:
    """A fitted model: ``linear(x) * exp(forest(z))`` for ``linear+trees``, ``linear(x)`` or
    ``exp(forest(z))``, where ``z`` is ``x`` followed by ``log(linear(x))``."""

    kind: str
    intercept: float
    weights: np.ndarray
    forest: Forest | None = None
    blocks: BlockPart | None = None

    def linear(self, x: np.ndarray) -> float:
        return self.intercept + float(x @ self.weights)

    def __call__(self, x: np.ndarray) -> float:
        """The prediction from network features ``x``; a ``blocks`` model needs
        :meth:`predict_blocks`."""
        if self.blocks is not None:
            raise ValueError("a blocks model predicts from block features (predict_blocks)")
        return self.from_linear(x, self.linear(x))

    def predict_blocks(self, block_x: np.ndarray) -> float:
        """The prediction from one feature vector per block (blocks x features)."""
        if self.blocks is None:
            return self(block_x.sum(axis=0))
        return self.blocks.network(float(self.blocks.block_ms(block_x).sum()))

    def from_linear(self, x: np.ndarray, lin: float) -> float:
        """The prediction, given ``lin = self.linear(x)`` already computed."""
        if self.kind == "linear" or self.blocks is not None:  # a block model: its linear part
            return lin
        z = np.empty(len(x) + 1, dtype=np.float32)  # the forest's inputs, in float32
        z[:-1] = x
        z[-1] = math.log(lin)
        r = self.forest(z)
        return math.exp(r) if self.kind == "trees" else lin * math.exp(r)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "intercept": self.intercept,
            "weights": self.weights.tolist(),
            "forest": self.forest.to_dict() if self.forest is not None else None,
            "blocks": self.blocks.to_dict() if self.blocks is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LatencyModel:
        forest = Forest.from_dict(d["forest"]) if d.get("forest") else None
        blocks = BlockPart.from_dict(d["blocks"]) if d.get("blocks") else None
        weights = np.asarray(d["weights"], float)
        return cls(d["kind"], float(d["intercept"]), weights, forest, blocks)


@dataclass(frozen=True)
class BlockPart:
    """The ``blocks`` model: a block's time is ``linear(f) * exp(forest(f, i, log
    linear(f)))`` for its features ``f`` and position ``i``; a network's is ``a + c *`` the
    sum over its blocks. The ``additive`` model is the same with a small network
    (``mlp``, :class:`mnas.latency.additive.BlockMlp`) in the forest's place (``forest``
    None).

    ``scaled``: a re-fit's ``(intercept, weights)`` of the block's linear form (each
    operator kind's part scaled apart, :func:`mnas.latency.refit.fit_kind_scales`), which
    then takes the fitted form's place as the factor of ``exp(forest)``; the forest still
    reads the fitted form, so what it learnt of the blocks is kept."""

    intercept: float
    weights: np.ndarray
    forest: Forest | None
    a: float
    c: float
    scaled: tuple[float, np.ndarray] | None = None
    mlp: BlockMlp | None = None

    def multiplier(self, block_x: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Each row's ``exp(forest)`` (or ``exp(mlp)``), the factor of its linear form
        (``position``: each row's block index; by default the rows are one network's
        blocks, in order)."""
        block_x = np.atleast_2d(block_x)
        if position is None:
            position = np.arange(len(block_x))
        lin = self.intercept + block_x @ self.weights
        if self.mlp is not None:
            return np.exp(self.mlp(block_x, np.asarray(position, dtype=np.intp), lin))
        z = np.column_stack([block_x, position, np.log(lin)])
        return np.exp(self.forest.batch(z))

    def linear_form(self) -> tuple[float, np.ndarray]:
        """The ``(intercept, weights)`` that :meth:`multiplier` multiplies."""
        return (self.intercept, self.weights) if self.scaled is None else self.scaled

    def block_ms(self, block_x: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Each row's block time (ms); ``position`` as for :meth:`multiplier`."""
        block_x = np.atleast_2d(block_x)
        intercept, weights = self.linear_form()
        return (intercept + block_x @ weights) * self.multiplier(block_x, position)

    def network(self, block_sum: float) -> float:
        return self.a + self.c * block_sum

    def to_dict(self) -> dict:
        return {
            "intercept": self.intercept,
            "weights": self.weights.tolist(),
            "forest": None if self.forest is None else self.forest.to_dict(),
            "mlp": None if self.mlp is None else self.mlp.to_dict(),
            "a": self.a,
            "c": self.c,
            "scaled": None
            if self.scaled is None
            else {"intercept": self.scaled[0], "weights": self.scaled[1].tolist()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> BlockPart:
        scaled = d.get("scaled")
        return cls(
            float(d["intercept"]),
            np.asarray(d["weights"], float),
            Forest.from_dict(d["forest"]) if d.get("forest") else None,
            float(d["a"]),
            float(d["c"]),
            None
            if scaled is None
            else (float(scaled["intercept"]), np.asarray(scaled["weights"], float)),
            BlockMlp.from_dict(d["mlp"]) if d.get("mlp") else None,
        )


def fit_linear(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """``intercept, weights`` >= 0 minimising the squared *relative* error of
    ``intercept + x @ weights`` (small networks count as much as large ones)."""
    a = np.column_stack([np.ones(len(y)), x]) / y[:, None]
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    coef, _ = nnls(a / norms, np.ones(len(y)), maxiter=50 * a.shape[1])
    coef = coef / norms
    intercept = float(coef[0])
    if intercept <= 0:
        # keeps every prediction > 0 even for a network whose features are all 0
        intercept = float(np.min(y)) * 1e-3
    return intercept, coef[1:]


def scaled_to_networks(block_ms: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each network's profiled block times (networks x blocks) scaled to sum to its
    measured time ``y``: the profile is another run than the timing (minutes apart, not
    drift-corrected, with the profiler's own cost per node), so its total scatters around
    the timing (10th-90th percentile 0.82-1.12x on 300 networks at 224x224) while its split
    between the blocks is what it tells.

    Raises:
        ValueError: if a network's block times do not sum to > 0.
    """
    t = np.asarray(block_ms, dtype=np.float64)
    total = t.sum(axis=1)
    if not np.all(total > 0):
        bad = int(np.flatnonzero(~(total > 0))[0])
        raise ValueError(f"network {bad}'s profiled block times sum to {total[bad]}; need > 0")
    return t * (np.asarray(y, dtype=np.float64) / total)[:, None]


def fit_blocks(block_x: np.ndarray, block_ms: np.ndarray, y: np.ndarray) -> LatencyModel:
    """The ``blocks`` model (:class:`BlockPart`) fitted to every block's time (``block_x``:
    networks x blocks x features, ``block_ms``: networks x blocks, first scaled to each
    network's time, :func:`scaled_to_networks`) and scaled to the whole networks' ``y`` as
    ``a + c * sum`` (``a, c >= 0``, least relative squares). Its linear
    part (for the range and a re-fit's parts) is the block linear form summed and scaled
    the same way."""
    n, blocks, f = block_x.shape
    block_ms = scaled_to_networks(block_ms, y)
    flat_x, flat_t = block_x.reshape(-1, f), block_ms.reshape(-1)
    b_int, b_w = fit_linear(flat_x, flat_t)
    lin = b_int + flat_x @ b_w
    position = np.tile(np.arange(blocks), n)
    z = np.column_stack([flat_x, position, np.log(lin)])
    part = BlockPart(b_int, b_w, fit_forest(z, np.log(flat_t / lin), BLOCK_TREES), 0.0, 1.0)
    s = part.block_ms(flat_x, position).reshape(n, blocks).sum(axis=1)
    (a, c), _ = nnls(np.column_stack([np.ones(n), s]) / y[:, None], np.ones(n))
    if not c > 0:  # the blocks say nothing about the networks: a scale of the mean
        a, c = 0.0, float(np.mean(y / s))
    part = replace(part, a=float(a), c=float(c))
    intercept = a + c * blocks * b_int
    return LatencyModel("blocks", float(intercept), c * b_w, blocks=part)


def fit_additive(block_x: np.ndarray, y: np.ndarray) -> LatencyModel:
    """The ``additive`` model (:mod:`mnas.latency.additive`) fitted to the networks' times
    ``y`` from their block vectors (``block_x``: networks x blocks x features): the linear
    model first, then the factor of each block's share of it. Its linear part (range,
    parts) is that linear model."""
    y = np.asarray(y, dtype=np.float64)
    intercept, weights = fit_linear(block_x.sum(axis=1), y)
    lin = block_x @ weights
    mlp, a = fit_block_mlp(block_x, lin, y, max(intercept, 1e-4 * float(y.min())))
    part = BlockPart(0.0, weights, None, a, 1.0, mlp=mlp)
    return LatencyModel("additive", intercept, weights, blocks=part)


def fit_model(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    blocks: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> LatencyModel:
    """One candidate (:data:`MODEL_KINDS`) fitted to features ``x`` and latencies ``y``;
    ``blocks = (block_x, block_ms)``: the networks' block vectors (``block_x`` sums over
    its blocks to ``x``; :data:`VECTOR_KINDS` need them) and their profiled block times
    (:data:`BLOCK_KINDS` need them, :func:`fit_blocks`; None where not profiled).

    Raises:
        ValueError: for an unknown kind, or a kind without what it needs.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind {kind!r}; allowed: {', '.join(MODEL_KINDS)}")
    if kind in BLOCK_KINDS:
        if blocks is None or blocks[1] is None:
            raise ValueError(f"model kind {kind!r} needs profiled block times")
        return fit_blocks(blocks[0], blocks[1], y)
    if kind in VECTOR_KINDS:
        if blocks is None:
            raise ValueError(
                f"model kind {kind!r} needs the networks' block vectors (networks of the space)"
            )
        return fit_additive(blocks[0], y)
    intercept, weights = fit_linear(x, y)
    linear = LatencyModel("linear", intercept, weights)
    if kind == "linear":
        return linear
    lin = np.array([linear.linear(r) for r in x])
    z = np.column_stack([x, np.log(lin)])
    target = np.log(y) if kind == "trees" else np.log(y / lin)
    return LatencyModel(kind, intercept, weights, fit_forest(z, target))


def scores(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """Share within +-10% and +-5%, MAPE (%) and Kendall tau of predictions against
    measurements."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    rel = np.abs(p / m - 1)
    return {
        "n": int(m.size),
        "within_10": float(np.mean(rel <= 0.10)),
        "within_5": float(np.mean(rel <= 0.05)),
        "mape": float(np.mean(rel) * 100),
        "kendall_tau": kendall_tau(p, m),
    }


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def pearson_from_tau(tau: float) -> float:
    """Pearson's r of a bivariate normal pair whose Kendall tau is ``tau``
    (``tau = 2 / pi * asin(r)``)."""
    return math.sin(math.pi * tau / 2)


def tau_from_pearson(r: float) -> float:
    """Kendall's tau of a bivariate normal pair correlated at ``r`` (clipped to [-1, 1])."""
    return 2 / math.pi * math.asin(max(-1.0, min(1.0, r)))


def cross_validate(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    blocks: tuple[np.ndarray, np.ndarray | None] | None = None,
    against: np.ndarray | None = None,
) -> dict:
    """:func:`scores` of ``kind`` on each network predicted by a model fitted without it
    (``folds``-fold, networks in a fixed shuffled order), against ``y`` or, given, against
    ``against`` (other timings of the same networks)."""
    order = np.random.default_rng(0).permutation(len(y))
    predicted = np.empty(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        part = None
        if blocks is not None:
            part = (blocks[0][train], None if blocks[1] is None else blocks[1][train])
        model = fit_model(kind, x[train], y[train], part)
        if model.blocks is not None:
            predicted[test] = [model.predict_blocks(b) for b in blocks[0][test]]
        else:
            predicted[test] = [model(r) for r in x[test]]
    return scores(predicted, y if against is None else against)


def select_model(
    x: np.ndarray,
    y: np.ndarray,
    kinds: Sequence[str] = MODEL_KINDS,
    blocks: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> tuple[LatencyModel, dict]:
    """The candidate :func:`rank_models` puts first (about the most cross-validated
    predictions within +-5%, then the lowest MAPE), refitted on all networks, and every
    candidate's cross-validated scores.
    ``blocks``: as :func:`fit_model`; without block times the :data:`BLOCK_KINDS` are left
    out, without ``blocks`` the :data:`VECTOR_KINDS` too.

    Raises:
        ValueError: with fewer than 10 networks, a latency <= 0, or no kind left.
    """
    asked = list(kinds)
    if blocks is None or blocks[1] is None:
        kinds = [k for k in kinds if k not in BLOCK_KINDS]
    if blocks is None:
        kinds = [k for k in kinds if k not in VECTOR_KINDS]
    if not kinds:
        raise ValueError(
            f"model kinds {', '.join(asked)} need profiled block times or the networks' "
            "block vectors; none were given"
        )
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 10 or x.shape[0] != len(y):
        raise ValueError(f"need >= 10 networks with features, got {len(y)} ({x.shape[0]} rows)")
    if np.any(y <= 0):
        raise ValueError(f"measured latencies must be > 0, got {y.min()}")
    cv = {k: cross_validate(k, x, y, blocks=blocks) for k in kinds}
    return fit_model(rank_models(cv)[0], x, y, blocks), cv


def rank_models(cv: dict) -> list[str]:
    """The kinds of cross-validated scores ``cv`` ({kind: :func:`scores`}), best first:
    those whose share within +-5% is within one standard error of the best share
    (``sqrt(p (1 - p) / n)``, ``p`` the best share, ``n`` the networks: a difference no
    larger is the draw of networks) by the lowest MAPE, then the others by the most within
    +-5% and the lowest MAPE (ties in the order given)."""
    best = max(c["within_5"] for c in cv.values())
    n = max(int(c.get("n", 0)) for c in cv.values())
    band = math.sqrt(best * (1 - best) / n) if n else 0.0

    def key(k: str) -> tuple:
        near = cv[k]["within_5"] >= best - band - 1e-12
        return (not near, 0.0 if near else -cv[k]["within_5"], cv[k]["mape"])

    return sorted(cv, key=key)
