"""Re-fitting a latency predictor to a changed timing set-up from a few networks (issue 19).

Another input size, thread count or optimisation level changes what every network costs;
:func:`refit_predictor` times (and profiles) a few networks there and re-fits a built
predictor's model to them (a calibration of its whole prediction, its per-operator and work
parts scaled apart, or each operator kind scaled apart on the profiled blocks), choosing by
leave-one-out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import nnls

from mnas.latency.calibration import Calibration, Floor, fit_calibration
from mnas.latency.features import FEATURES, KINDS
from mnas.latency.fit import LatencyModel, scaled_to_networks, scores
from mnas.latency.ort import OrtLatency
from mnas.latency.predictor import (
    AGGREGATES,
    PROFILE_RUNS,
    Predictor,
    _aggregates,
    timing_setup,
)
from mnas.latency.session import machine_description, machine_fingerprint
from mnas.latency.timed import TIMING_PASSES, time_networks
from mnas.space import Architecture, MnasSpace


def refit_predictor(
    base: Predictor | Sequence[Predictor],
    evaluator: OrtLatency,
    archs: Sequence[Architecture],
    same_machine: bool = True,
    profile_runs: int = PROFILE_RUNS,
    passes: int = TIMING_PASSES,
) -> Predictor:
    """``base`` re-fitted to the timing set-up of ``evaluator`` (another input size, thread
    count, ...) from a few networks timed with it (in ``passes`` passes, each network's
    geometric mean, :func:`mnas.latency.timed.time_networks`): ``base``'s model applied to
    the features of the new set-up, then one of three re-fits, whichever predicts the
    left-out network best over leave-one-out on the timed networks (:func:`choose_refit`):

    - a calibration of the whole prediction: scaled, or scaled and shifted
      (:func:`fit_calibration`, itself chosen by leave-one-out);
    - ``split``: the model's per-operator (node) part and its work part scaled apart,
      ``node_scale * node + work_scale * work``, both scales > 0 — what changes when the
      maps grow (work) or threads are added (work shrinks, a node's overhead grows);
    - ``kind_scales`` (when the networks are profiled, ``profile_runs`` > 0): the linear
      model's contribution of every operator kind (and its intercept) scaled apart, fitted
      to every block's time inside its network (:func:`fit_kind_scales`: seven samples per
      network, shrunk towards one common scale), then scaled to whole networks; the
      re-fitted predictor is then that linear model.

    Given several bases (e.g. this machine's 16x16, 32x32 and 224x224 predictors), the
    networks are timed for all of them and, among the bases whose fitted range holds the most of the
    timed networks (:func:`covered`), the one whose re-fit has the lowest leave-one-out
    error is kept (a 32x32 model orders 28x28 networks better than a 16x16 one); every
    base's error and count is recorded (``calibration.bases``).

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
    for b in bases if same_machine else ():
        require_this_machine(b, "re-fit it there")
    if len(archs) < 3:
        raise ValueError(f"re-fitting needs at least 3 timed networks, got {len(archs)}")
    if profile_runs < 0:
        raise ValueError(f"profile_runs={profile_runs}; allowed: >= 0 (0: no profiles)")
    setup = timing_setup(evaluator)
    timed = time_networks(evaluator, archs, profile_runs, passes)
    fits = [refit_to_timings(b, setup, archs, timed.ms, timed.block_ms) for b in bases]
    covers = [f.data["calibration"]["timed_in_range"] for f in fits]
    eligible = [f for f, c in zip(fits, covers, strict=True) if c == max(covers)]
    best = min(eligible, key=lambda f: min(f.data["calibration"]["leave_one_out_mape"].values()))
    best.data["calibration"]["bases"] = [
        {
            "path": b.path,
            "input_shape": b.setup.get("input_shape"),
            "threads": b.setup.get("threads"),
            "leave_one_out_mape": f.data["calibration"]["leave_one_out_mape"],
            "timed_in_range": c,
            "chosen": f is best,
        }
        for b, f, c in zip(bases, fits, covers, strict=True)
    ]
    return best


def require_this_machine(predictor: Predictor, advice: str) -> None:
    """Refuse (``ValueError``, ending with ``advice``) to time networks for ``predictor``
    here when it was built on another machine: one predictor never mixes machines'
    timings."""
    if predictor.setup.get("machine") != machine_fingerprint():
        raise ValueError(
            f"predictor {predictor.path} was built on machine {predictor.setup.get('machine')} "
            f"({predictor.data.get('machine_description', {}).get('cpu', '?')}); this is "
            f"{machine_fingerprint()} ({machine_description()['cpu']}): {advice}"
        )


def covered(moved: Predictor, archs: Sequence[Architecture]) -> int:
    """How many of ``archs`` lie inside the range a base was fitted on, counted at the new
    set-up (``moved``: the base with the new set-up; :attr:`Prediction.in_range`): a base
    is re-fitted by scaling what it predicts, and outside its range it extrapolates — a
    224x224 model applied to 16x16 networks is off by 4x before any re-fit, and ten
    networks' leave-one-out cannot tell."""
    return sum(moved.predict_detail(a).in_range for a in archs)


def refit_to_timings(
    base: Predictor,
    setup: dict,
    archs: Sequence[Architecture],
    measured: Sequence[float],
    block_ms: Sequence[Sequence[float]] | None = None,
) -> Predictor:
    """:func:`refit_predictor` of one base to networks already timed (and profiled:
    ``block_ms``, each network's time per block)."""
    data = {**base.data, "setup": setup, "calibration": None}
    moved = Predictor(data, base.path)
    space = MnasSpace()
    seen = [space.architecture(t) for t in base.data["training"]["tokens"]] + list(archs)
    parts = np.array([moved.parts(a) for a in archs])
    blocks = None
    if block_ms is not None:
        vectors = [moved.features.block_vectors(a) for a in archs]
        contrib = np.array([kind_contributions(moved.model, v) for v in vectors])
        blocks = (contrib, np.asarray(block_ms, dtype=np.float64))
    agg = np.array([_aggregates(x, moved.model.linear(x)) for x in map(moved.features, seen)])
    # the least a calibrated prediction may give at the bottom of the range
    low = float(agg[:, AGGREGATES.index("linear_ms")].min())
    floor = Floor(low, 0.0, low * 0.1)
    choice = choose_refit(parts, measured, floor, blocks)
    raw = parts.sum(axis=1)
    common = {
        "from_setup": base.setup,
        "archs": [a.key for a in archs],
        "measured_ms": measured,
        "block_ms": None if block_ms is None else [list(b) for b in block_ms],
        "leave_one_out_mape": choice.loo_mape,
        "timed_in_range": covered(moved, archs),
    }
    if choice.kind_scales is not None:
        scales, a, c = choice.kind_scales
        model = scaled_model(moved.model, scales, a, c)
        data["model"] = model.to_dict()
        agg = np.array([_aggregates(x, model.linear(x)) for x in map(moved.features, seen)])
        in_sample = [model.predict_blocks(moved.features.block_vectors(x)) for x in archs]
        data["calibration"] = {
            "kind": "kind_scales",
            "scales": dict(zip([*KINDS, "intercept"], scales.tolist(), strict=True)),
            "network_intercept_ms": a,
            "network_scale": c,
            "prior": choice.prior,
            "from_model": base.data["model"]["kind"],
            **common,
            "in_sample": scores(in_sample, measured),
        }
    elif choice.split is not None:
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
    data["range"] = {
        "names": list(AGGREGATES),
        "low": agg.min(0).tolist(),
        "high": agg.max(0).tolist(),
        "networks": "the base predictor's training networks and the re-fit's, at this set-up",
    }
    return Predictor(data)


KIND_PRIORS = (0.0, 0.1, 0.3, 1.0)
"""How strongly :func:`fit_kind_scales` may pull each kind's scale towards the common one
(ridge strength on the relative error); :func:`choose_refit` keeps the one with the lowest
leave-one-out error."""
_KIND_OF = np.array([KINDS.index(f.rsplit("_", 1)[0]) for f in FEATURES])


def kind_contributions(model: LatencyModel, block_x: np.ndarray) -> np.ndarray:
    """The linear part of ``model`` on each block (blocks x features) split by operator
    kind: blocks x (:data:`KINDS` + 1), the last column each block's share of the
    intercept. Of a ``blocks`` model: its block linear form split so, each block's times
    its ``exp(forest)`` (the columns sum to the block's time)."""
    if model.blocks is not None:
        intercept, weights = model.blocks.linear_form()
        factor = model.blocks.multiplier(block_x)
    else:
        intercept, weights = model.intercept / len(block_x), model.weights
        factor = np.ones(len(block_x))
    out = np.zeros((len(block_x), len(KINDS) + 1))
    for k in range(len(KINDS)):
        mask = _KIND_OF == k
        out[:, k] = block_x[:, mask] @ weights[mask]
    out[:, -1] = intercept
    return out * factor[:, None]


def fit_kind_scales(
    contrib: np.ndarray, block_ms: np.ndarray, y: np.ndarray, prior: float = 0.3
) -> tuple[np.ndarray, float, float] | None:
    """Scales ``>= 0`` of each operator kind's contribution (``contrib``: networks x blocks
    x kinds, :func:`kind_contributions`) fitted to the blocks' times (least relative
    squares, shrunk by ``prior`` towards the one scale that fits all of them), then
    ``a, c >= 0`` that turn the blocks' sum into the networks' ``y``: ``(scales, a, c)``,
    or None where nothing fits (no positive network scale)."""
    flat = contrib.reshape(-1, contrib.shape[-1])
    t = scaled_to_networks(block_ms, y).reshape(-1)
    total = flat.sum(axis=1)
    common = float(np.sum(t * total) / np.sum(total**2))
    if not common > 0:
        return None
    k = flat.shape[1]
    lhs = np.vstack([flat / common / t[:, None], prior * np.eye(k)])
    rhs = np.concatenate([np.ones(len(t)), prior * np.ones(k)])
    scales, _ = nnls(lhs, rhs)
    scales = scales / common
    s = (contrib @ scales).sum(axis=1)
    n = len(y)
    (a, c), _ = nnls(np.column_stack([np.ones(n), s]) / y[:, None], np.ones(n))
    if not c > 0:
        return None
    return scales, float(a), float(c)


def scaled_model(model: LatencyModel, scales: np.ndarray, a: float, c: float) -> LatencyModel:
    """The linear model whose every operator kind's weights are ``model``'s times its
    scale (:func:`fit_kind_scales`), its intercept scaled by the last, then ``a + c * ...``;
    of a ``blocks`` model, the blocks model whose block linear form is scaled so (its
    forest kept), the blocks' sum then ``a + c * ...``."""
    if model.blocks is not None:
        part = model.blocks
        intercept, weights = part.linear_form()
        weights = scales[_KIND_OF] * weights
        intercept = scales[-1] * intercept
        if not intercept > 0:  # keeps every block > 0
            intercept = 1e-3 * max(part.intercept, 1e-3)
        blocks = MnasSpace().num_blocks
        return LatencyModel(
            model.kind,
            a + c * blocks * intercept,
            c * weights,
            blocks=replace(part, a=a, c=c, scaled=(float(intercept), weights)),
        )
    weights = c * scales[_KIND_OF] * model.weights
    intercept = a + c * scales[-1] * model.intercept
    if not intercept > 0:  # keeps every prediction > 0 (all scales and weights are >= 0)
        intercept = 1e-3 * max(model.intercept, 1e-3)
    return LatencyModel("linear", float(intercept), weights)


@dataclass(frozen=True)
class Refit:
    """What :func:`choose_refit` chose: a ``split`` (node and work scales) or else a
    ``calibration`` of the whole prediction, and each candidate's leave-one-out MAPE (%)."""

    calibration: Calibration
    split: tuple[float, float] | None
    loo_mape: dict
    kind_scales: tuple[np.ndarray, float, float] | None = None
    prior: float | None = None


def fit_split(parts: np.ndarray, measured: Sequence[float]) -> tuple[float, float] | None:
    """Scales ``(node, work) >= 0`` minimising the squared relative error of
    ``parts @ scales`` against ``measured`` (``parts``: one ``(node_ms, work_ms)`` row per
    network); None unless both are > 0."""
    y = np.asarray(measured, dtype=np.float64)
    coef, _ = nnls(np.asarray(parts, dtype=np.float64) / y[:, None], np.ones(len(y)))
    if not (coef[0] > 0 and coef[1] > 0):
        return None
    return float(coef[0]), float(coef[1])


def choose_refit(
    parts: np.ndarray,
    measured: Sequence[float],
    floor: Floor | None,
    blocks: tuple[np.ndarray, np.ndarray] | None = None,
) -> Refit:
    """The re-fit of a moved predictor's ``(node_ms, work_ms)`` parts to ``measured``
    that predicts each network best when fitted without it: :func:`fit_calibration` of the
    summed parts (its own choice redone without the left-out network), :func:`fit_split`
    (a candidate from 4 networks on, and only if every fit is valid) or, given ``blocks =
    (contributions, block_ms)`` of the networks, :func:`fit_kind_scales` (likewise). On a
    tie the simpler is kept (calibration, then split)."""
    parts = np.asarray(parts, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    raw = parts.sum(axis=1)
    n = len(y)
    priors = KIND_PRIORS if blocks is not None and n >= 4 else ()
    errors: dict[str, list[float]] = {"calibration": [], "split": []}
    errors.update({f"kind_scales_{p}": [] for p in priors})
    for i in range(n):
        keep = np.arange(n) != i
        cal = fit_calibration(raw[keep], y[keep], floor=floor)
        errors["calibration"].append(abs(cal.predict(raw[i]) / y[i] - 1))
        s = fit_split(parts[keep], y[keep]) if n >= 4 else None
        errors["split"].append(math.inf if s is None else abs(parts[i] @ s / y[i] - 1))
        for p in priors:
            k = fit_kind_scales(blocks[0][keep], blocks[1][keep], y[keep], p)
            ms = math.inf if k is None else k[1] + k[2] * float((blocks[0][i] @ k[0]).sum())
            errors[f"kind_scales_{p}"].append(abs(ms / y[i] - 1))
    loo = {"calibration": 100 * float(np.mean(errors["calibration"]))}
    split = fit_split(parts, y) if n >= 4 else None
    if split is not None and math.isfinite(max(errors["split"])):
        loo["split"] = 100 * float(np.mean(errors["split"]))
    kinds = {}
    for p in priors:
        k = fit_kind_scales(blocks[0], blocks[1], y, p)
        if k is not None and math.isfinite(max(errors[f"kind_scales_{p}"])):
            kinds[f"kind_scales_{p}"] = k
            loo[f"kind_scales_{p}"] = 100 * float(np.mean(errors[f"kind_scales_{p}"]))
    best = min(loo, key=lambda name: (loo[name], list(loo).index(name)))
    if best in kinds:
        return Refit(Calibration(), None, loo, kinds[best], float(best.rsplit("_", 1)[1]))
    if best == "split":
        return Refit(Calibration(), split, loo)
    return Refit(fit_calibration(raw, y, floor=floor), None, loo)
