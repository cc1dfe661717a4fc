"""A search's run directory: ``results.jsonl`` rows, ``pareto.json``, atomic writes.

- ``results.jsonl``: one :class:`EvalRecord` per evaluated architecture, a flushed line each;
  reading it never changes it (:func:`load_results` skips a torn or garbage line); only a
  resumed run repairs it (:func:`repair_results`), keeping bad lines in
  ``results.rejected.jsonl``;
- ``pareto.json``: the non-dominated set (max accuracy, min latency), by latency;
- ``checkpoint.pt``: strategy state and step, written atomically after every step;
- ``run.json``: the settings needed to rebuild and retrain children.
"""

from __future__ import annotations

import hashlib
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
REJECTED = "results.rejected.jsonl"

# Latency units and the suffix of the fields that hold them: no ``*_ms`` field ever holds
# multiply-adds.
UNITS = {"ms": "ms", "MMACs": "mmacs"}


def unit_key(name: str, unit: str) -> str:
    """A field named by its unit: ``latency_ms``, or ``latency_mmacs`` for ``latency=macs``."""
    if unit not in UNITS:
        raise ValueError(f"latency unit {unit!r}; allowed: {list(UNITS)}")
    return f"{name}_{UNITS[unit]}"


def latency_of(row: dict) -> float | None:
    """The latency of a ``results.jsonl`` or ``pareto.json`` row, in its ``latency_unit``
    (rows written before records named their unit are in ms)."""
    return row.get(unit_key("latency", row.get("latency_unit", "ms")))


STANDALONE = "standalone.jsonl"


@dataclass(frozen=True)
class EvalRecord:
    """One row of ``results.jsonl``: an evaluated architecture and its reward.

    Attributes:
        step: the search step that evaluated it (0-based).
        hash, space, tokens, key, blocks: the architecture.
        accuracy: top-1 in [0, 1] on the search split; None when not ok.
        latency_value: median latency in ``latency_unit``; None if unknown. Written as
            ``latency_ms``, or ``latency_mmacs`` when the unit is millions of MACs.
        latency: the full latency statistics (median, p10, p90, cv, runs, ...).
        params, macs: size of the network.
        reward: the MnasNet reward (0.0 when not ok).
        target_value, alpha, beta: the reward's settings (the target T in ``latency_unit``,
            written as ``target_ms`` or ``target_mmacs``).
        seconds, train_seconds, latency_seconds: wall times.
        status: ``ok``, ``diverged``, ``failed`` or ``timeout``; reason: why, when not ok.
        latency_unit: ``ms`` or ``MMACs`` (``latency=macs``).
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
    latency_value: float | None
    latency: dict
    params: int
    macs: int
    reward: float
    target_value: float
    alpha: float
    beta: float
    seconds: float
    train_seconds: float
    latency_seconds: float
    status: str
    reason: str
    latency_unit: str = "ms"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        clash = sorted(set(self.extra) & (_CORE | set(_written_names(self.latency_unit).values())))
        if clash:
            raise ValueError(f"extra keys {clash} would overwrite fields of the record")

    def to_dict(self) -> dict:
        names = _written_names(self.latency_unit)
        core = {names.get(f, f): getattr(self, f) for f in _CORE_ORDER}
        core["tokens"], core["blocks"] = list(self.tokens), list(self.blocks)
        return {**core, **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> EvalRecord:
        """A record from its ``results.jsonl`` form (one without ``latency_unit``, written
        before records named their unit, is in ms)."""
        unit = data.get("latency_unit", "ms")
        names = _written_names(unit)
        missing = [names.get(f, f) for f in _CORE_ORDER if names.get(f, f) not in data]
        missing = [m for m in missing if m != "latency_unit"]
        if missing:
            raise ValueError(f"results record lacks {missing}")
        written = {names.get(f, f) for f in _CORE_ORDER}
        extra = {k: v for k, v in data.items() if k not in written}
        core = {f: data[names.get(f, f)] for f in _CORE_ORDER if f != "latency_unit"}
        return cls(**core, latency_unit=unit, extra=extra)

    @classmethod
    def from_json(cls, text: str | bytes) -> EvalRecord:
        return cls.from_dict(json.loads(text))


_CORE_ORDER = tuple(f.name for f in fields(EvalRecord) if f.name != "extra")
_CORE = frozenset(_CORE_ORDER)


def _written_names(unit: str) -> dict[str, str]:
    """Fields whose name in ``results.jsonl`` carries the unit."""
    return {"latency_value": unit_key("latency", unit), "target_value": unit_key("target", unit)}


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


def _scan(path: Path) -> tuple[list[EvalRecord], list[bytes], list[bytes], bool]:
    """(records, their lines, lines that are not records, whether the file ends mid-line)."""
    data = path.read_bytes() if path.exists() else b""
    records, good, rejected = [], [], []
    for raw in data.splitlines(keepends=True):
        try:
            rec = EvalRecord.from_json(raw)
        except (ValueError, TypeError, KeyError, AttributeError):  # JSON errors included
            if raw.strip():
                rejected.append(raw)
            continue
        records.append(rec)
        good.append(raw if raw.endswith(b"\n") else raw + b"\n")
    return records, good, rejected, bool(data) and not data.endswith(b"\n")


def load_results(run_dir: str | Path) -> list[EvalRecord]:
    """The records of a run's ``results.jsonl``, read without changing the file.

    A run killed mid-write leaves a torn last line, and a damaged file may hold lines that
    are not records; both are skipped with a warning, so any reader (a notebook,
    ``retrain``, a monitor of a running search) can read a live or killed run.
    """
    path = Path(run_dir) / RESULTS
    records, _, rejected, _ = _scan(path)
    if rejected:
        log.warning("%s: skipped %d line(s) that are not records", path, len(rejected))
    return records


def load_result_rows(run_dir: str | Path) -> list[dict]:
    """Every line of ``results.jsonl`` that is a JSON object with a ``hash``, as written
    (for readers that need only some fields); other lines are skipped. Never changes it."""
    path = Path(run_dir) / RESULTS
    rows = []
    for raw in path.read_bytes().splitlines() if path.exists() else []:
        try:
            row = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(row, dict) and "hash" in row:
            rows.append(row)
    return rows


def repair_results(run_dir: str | Path) -> list[EvalRecord]:
    """Make ``results.jsonl`` appendable again before a resumed run writes to it, and return
    its records. Lines that are not records (a torn tail, garbage) move to
    ``results.rejected.jsonl``, so nothing is silently lost; the good lines keep their
    bytes. Only a resumed search calls this: every other reader is read-only."""
    path = Path(run_dir) / RESULTS
    records, good, rejected, torn = _scan(path)
    if rejected:
        with open(path.with_name(REJECTED), "ab") as f:
            f.writelines(r if r.endswith(b"\n") else r + b"\n" for r in rejected)
            f.flush()
            os.fsync(f.fileno())
        write_atomic(path, b"".join(good))
        log.warning(
            "%s: moved %d line(s) that are not records to %s", path, len(rejected), REJECTED
        )
    elif torn:
        with open(path, "ab") as f:
            f.write(b"\n")
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
    idx = pareto_indices([(r.latency_value, r.accuracy) for r in ok])
    return [ok[i] for i in idx]


def front_markdown(records: Sequence[EvalRecord], unit: str | None = None) -> str:
    """A markdown table of records; the latency header names their unit."""
    unit = unit or (records[0].latency_unit if records else "ms")
    lines = [f"| accuracy | latency ({unit}) | reward | params | blocks |", "|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {100 * r.accuracy:.2f}% | {r.latency_value:.3f} | {r.reward:.4f} | "
            f"{r.params:,} | {' '.join(r.blocks)} |"
        )
    return "\n".join(lines)


def measured_markdown(
    records: Sequence[EvalRecord], measured: dict[str, dict], unit: str | None = None
) -> str:
    """A markdown table of the front re-timed on ONNX Runtime (``measured``: hash -> the
    ``measured_latency_ms`` entry) beside the search's own latency of each record."""
    unit = unit or (records[0].latency_unit if records else "ms")
    lines = [
        f"| accuracy | latency ({unit}, the search's source) | measured on ONNX Runtime (ms) "
        "| blocks |",
        "|---|---|---|---|",
    ]
    for r in records:
        m = measured.get(r.hash, {})
        lines.append(
            f"| {_pct(r.accuracy)} | {r.latency_value:.4g} | "
            f"{_num(m.get('measured_latency_ms'))} | {' '.join(r.blocks)} |"
        )
    return "\n".join(lines)


def standalone_markdown(rows: Sequence[tuple[EvalRecord, dict]]) -> str:
    """A markdown table of the end-of-search stand-alone checks: each front record and its
    ``standalone.jsonl`` row."""
    lines = [
        "| accuracy (search) | standalone_accuracy | latency_ms | standalone_latency_ms | blocks |",
        "|---|---|---|---|---|",
    ]
    for r, c in rows:
        lines.append(
            f"| {_pct(r.accuracy)} | {_pct(c['standalone_accuracy'])} | "
            f"{r.latency_value:.4g} | {_num(c['standalone_latency_ms'])} | "
            f"{' '.join(r.blocks)} |"
        )
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def fingerprint(experiment: dict) -> str:
    """A short hash of the settings that decide a run's results."""
    return hashlib.sha256(json.dumps(experiment, sort_keys=True).encode()).hexdigest()[:16]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_experiment(run_dir: str | Path, experiment: dict) -> None:
    """Raise ValueError, naming each setting that differs, if ``run_dir`` holds a run of
    another experiment (by its ``run.json``); a fresh directory, or a run written before
    fingerprints existed (warned), passes."""
    path = Path(run_dir) / RUN_INFO
    if not path.exists():
        return
    stored = json.loads(path.read_text())
    if "fingerprint" not in stored:
        log.warning("%s has no experiment fingerprint (an older run): not checked", path)
        return
    if stored["fingerprint"] == fingerprint(experiment):
        return
    old, new = _flatten(stored.get("experiment", {})), _flatten(experiment)
    diffs = [
        f"{k}={old.get(k, '<unset>')!r} in the run, {new.get(k, '<unset>')!r} now"
        for k in sorted(old.keys() | new.keys())
        if old.get(k, "<unset>") != new.get(k, "<unset>")
    ]
    raise ValueError(
        f"{run_dir} holds a run of another experiment ({'; '.join(diffs) or 'fingerprint'}): "
        "a run continues only the experiment it started; use a new run directory"
    )
