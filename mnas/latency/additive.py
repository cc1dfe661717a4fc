"""The ``additive`` latency model's learned part: a small network on each block's features.

A network's time is modelled as ``a + sum_i lin(f_i) * exp(g(f_i, i))`` over its seven
blocks, where ``f_i`` is block ``i``'s operator features (:mod:`mnas.latency.features`),
``lin`` the non-negative linear model's share of it, and ``g`` a one-hidden-layer
network (:class:`BlockMlp`) of the block's features, its position and ``log lin``: what
the sum of per-operator costs misses *inside a block* (small maps, few channels, what
stays in cache), learnt from whole networks' times alone — no profile of the blocks is
needed, unlike the ``blocks`` model. Since ``g`` depends only on the block, a predictor
computes every block of the space once and a query sums seven numbers.

Fitting minimises the mean squared log error of the networks' predicted times plus an
L2 penalty on the network's weights (:data:`PENALTY`), by L-BFGS from a fixed seed:
deterministic, numpy and scipy only. ``g`` is bounded (``|g| <= sum |w2| + |b2|``), so a
block's factor never vanishes or explodes on a network unlike the training ones, and every
prediction is > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

HIDDEN = 16
"""Units of the hidden layer."""
PENALTY = 2e-4
"""L2 penalty on the weights, against a loss of squared log errors (~0.0005 for a 2%
error). Hidden size and penalty were chosen by 5-fold cross-validation on the training
networks of the 600-network builds at 16x16, 32x32 and 224x224
(docs/results/latency-notebook.md)."""
MAX_ITER = 2000


def _inputs(block_x: np.ndarray, position: np.ndarray, lin: np.ndarray, blocks: int):
    """Rows of the network's input: ``log1p(10 f)`` of every feature (standardised later),
    the position one-hot and ``log lin``."""
    onehot = np.eye(blocks)[np.clip(position, 0, blocks - 1)]
    return np.log1p(10 * block_x), onehot, np.log(np.maximum(lin, 1e-9))[:, None]


@dataclass(frozen=True)
class BlockMlp:
    """``g(f, i) = tanh(z @ w1 + b1) @ w2 + b2`` with ``z`` the block's standardised
    ``log1p(10 f)`` (``mu``, ``sd``), the one-hot of its position ``i`` (of ``blocks``)
    and ``log lin(f)``."""

    mu: np.ndarray
    sd: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    blocks: int

    def __call__(self, block_x: np.ndarray, position: np.ndarray, lin: np.ndarray) -> np.ndarray:
        """``g`` of each row of ``block_x`` (its position and linear share given)."""
        logs, onehot, loglin = _inputs(np.atleast_2d(block_x), position, lin, self.blocks)
        z = np.hstack([(logs - self.mu) / self.sd, onehot, loglin])
        return np.tanh(z @ self.w1 + self.b1) @ self.w2 + self.b2

    def to_dict(self) -> dict:
        return {
            "mu": self.mu.tolist(),
            "sd": self.sd.tolist(),
            "w1": self.w1.tolist(),
            "b1": self.b1.tolist(),
            "w2": self.w2.tolist(),
            "b2": self.b2,
            "blocks": self.blocks,
        }

    @classmethod
    def from_dict(cls, d: dict) -> BlockMlp:
        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("mu", "sd", "w1", "b1", "w2")}
        return cls(**arr, b2=float(d["b2"]), blocks=int(d["blocks"]))


def fit_block_mlp(
    block_x: np.ndarray,
    lin: np.ndarray,
    y: np.ndarray,
    a0: float,
    hidden: int = HIDDEN,
    penalty: float = PENALTY,
    seed: int = 0,
) -> tuple[BlockMlp, float]:
    """``g`` and ``a`` fitted so that ``a + sum_i lin_i * exp(g(f_i, i))`` matches each
    network's time ``y`` (``block_x``: networks x blocks x features, ``lin``: networks x
    blocks, the linear model's share of each block; ``a0 > 0``: the starting ``a``, e.g.
    the linear model's intercept). ``g`` starts at 0, i.e. at the linear model.

    Raises:
        ValueError: if the shapes disagree or a time is <= 0.
    """
    n, blocks, f = block_x.shape
    y = np.asarray(y, dtype=np.float64)
    if lin.shape != (n, blocks) or y.shape != (n,):
        raise ValueError(f"block_x {block_x.shape}, lin {lin.shape} and y {y.shape} disagree")
    if not np.all(y > 0):
        raise ValueError(f"measured latencies must be > 0, got {y.min()}")
    position = np.tile(np.arange(blocks), n)
    logs, onehot, loglin = _inputs(block_x.reshape(-1, f), position, lin.reshape(-1), blocks)
    mu, sd = logs.mean(axis=0), logs.std(axis=0) + 1e-6
    z = np.hstack([(logs - mu) / sd, onehot, loglin]).reshape(n, blocks, -1)
    d = z.shape[2]
    w1 = np.random.default_rng(seed).normal(0.0, 1 / math.sqrt(d), (d, hidden))
    sizes = [d * hidden, hidden, hidden, 1, 1]
    cuts = np.cumsum(sizes)[:-1]
    start = np.concatenate([w1.ravel(), np.zeros(2 * hidden + 1), [math.log(max(a0, 1e-9))]])
    log_y = np.log(y)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w1f, b1, w2, b2, log_a = np.split(theta, cuts)
        w1 = w1f.reshape(d, hidden)
        h = np.tanh(z @ w1 + b1)
        block = lin * np.exp(h @ w2 + b2[0])
        a = math.exp(log_a[0])
        pred = a + block.sum(axis=1)
        r = np.log(pred) - log_y
        value = float(np.mean(r**2) + penalty * (np.sum(w1**2) + np.sum(w2**2)))
        d_pred = 2 * r / (n * pred)
        d_g = d_pred[:, None] * block
        d_pre = d_g[..., None] * w2 * (1 - h**2)
        grad = np.concatenate(
            [
                (np.einsum("nbd,nbh->dh", z, d_pre) + 2 * penalty * w1).ravel(),
                d_pre.sum(axis=(0, 1)),
                np.einsum("nbh,nb->h", h, d_g) + 2 * penalty * w2,
                [d_g.sum()],
                [d_pred.sum() * a],
            ]
        )
        return value, grad

    res = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITER})
    w1f, b1, w2, b2, log_a = np.split(res.x, cuts)
    mlp = BlockMlp(mu, sd, w1f.reshape(d, hidden), b1, w2, float(b2[0]), blocks)
    return mlp, math.exp(log_a[0])
