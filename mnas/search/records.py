"""A search's run directory: ``results.jsonl`` rows, ``pareto.json``, atomic writes.

- ``results.jsonl``: one :class:`EvalRecord` per evaluated architecture, a flushed line each;
- ``pareto.json``: the non-dominated set (max accuracy, min latency), by latency;
- ``checkpoint.pt``: strategy state and step, written atomically after every step;
- ``run.json``: the settings needed to rebuild and retrain children.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from mnas.evaluate import OK
from mnas.search.pareto import pareto_indices

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
PARETO = "pareto.json"
CHECKPOINT = "checkpoint.pt"
RUN_INFO = "run.json"
STANDALONE = "standalone.jsonl"


@dataclass(frozen=True)
class EvalRecord:
    """One row of ``results.jsonl``: an evaluated architecture and its reward.

    Attributes:
        step: the search step that evaluated it (0-based).
        hash, space, tokens, key, blocks: the architecture.
        accuracy: top-1 in [0, 1] on the search split; None when not ok.
        latency_ms: median latency (millions of MACs for ``latency=macs``); None if unknown.
        latency: the full latency statistics (median, p10, p90, cv, runs, ...).
        params, macs: size of the network.
        reward: the MnasNet reward (0.0 when not ok).
        target_ms, alpha, beta: the reward's settings.
        seconds, train_seconds, latency_seconds: wall times.
        status: ``ok``, ``diverged`` or ``failed``; reason: why, when not ok.
        extra: source-specific numbers (the 200-epoch test accuracy of a table row), written
            after the fields above; a key that names one of them is refused.
    """

    step: int
    hash: str
    space: str
    tokens: tuple[int, ...]
    key: str
    blocks: tuple[str, ...]
    accuracy: float | None
    latency_ms: float | None
    latency: dict
    params: int
    macs: int
    reward: float
    target_ms: float
    alpha: float
    beta: float
    seconds: float
    train_seconds: float
    latency_seconds: float
    status: str
    reason: str
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        clash = sorted(set(self.extra) & _CORE)
        if clash:
            raise ValueError(f"extra keys {clash} would overwrite fields of the record")

    def to_dict(self) -> dict:
        core = {f: getattr(self, f) for f in _CORE_ORDER}
        core["tokens"], core["blocks"] = list(self.tokens), list(self.blocks)
        return {**core, **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> EvalRecord:
        missing = [f for f in _CORE_ORDER if f not in data]
        if missing:
            raise ValueError(f"results record lacks {missing}")
        extra = {k: v for k, v in data.items() if k not in _CORE}
        return cls(**{f: data[f] for f in _CORE_ORDER}, extra=extra)

    @classmethod
    def from_json(cls, text: str | bytes) -> EvalRecord:
        return cls.from_dict(json.loads(text))


_CORE_ORDER = tuple(f.name for f in fields(EvalRecord) if f.name != "extra")
_CORE = frozenset(_CORE_ORDER)


def finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a reader (or a kill) never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_result(run_dir: Path, record: EvalRecord) -> None:
    """Append one line to ``results.jsonl`` and flush it to disk."""
    with open(Path(run_dir) / RESULTS, "a", encoding="utf-8") as f:
        f.write(record.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_results(run_dir: Path) -> list[EvalRecord]:
    """Records of ``results.jsonl``; a torn last line (killed mid-write) is dropped."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return []
    records, good_bytes = [], 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                records.append(EvalRecord.from_json(raw))
            except json.JSONDecodeError:
                log.warning("dropping a torn line at the end of %s", path)
                break
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return records


def append_standalone(run_dir: Path, row: dict) -> None:
    """Append one stand-alone check (``standalone.jsonl``) and flush it to disk."""
    with open(Path(run_dir) / STANDALONE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_standalone(run_dir: Path) -> dict[str, dict]:
    """Stand-alone checks of a run by hash; a torn last line is ignored."""
    path = Path(run_dir) / STANDALONE
    rows: dict[str, dict] = {}
    if path.exists():
        for raw in path.read_bytes().splitlines():
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                break
            rows[row["hash"]] = row
    return rows


def front_of(records: Sequence[EvalRecord]) -> list[EvalRecord]:
    """The non-dominated ``ok`` records (max accuracy, min latency), by latency."""
    ok = [r for r in records if r.status == OK]
    idx = pareto_indices([(r.latency_ms, r.accuracy) for r in ok])
    return [ok[i] for i in idx]


def front_markdown(records: Sequence[EvalRecord], unit: str = "ms") -> str:
    lines = [f"| accuracy | latency ({unit}) | reward | params | blocks |", "|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {100 * r.accuracy:.2f}% | {r.latency_ms:.3f} | {r.reward:.4f} | "
            f"{r.params:,} | {' '.join(r.blocks)} |"
        )
    return "\n".join(lines)
