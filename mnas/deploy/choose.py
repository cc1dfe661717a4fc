"""Choosing architectures to retrain: from a search run, by hash, by reference name or as
block strings.

Which architecture (``arch=`` of ``scripts/retrain.py``, :func:`resolve_choices`):

- ``<run>/pareto.json:<index>``: one point of a search's Pareto front (0 = fastest);
- ``<run>/pareto.json:all`` (or ``all=true`` with ``run=<run>``): every front point;
- a hash (or a unique prefix of at least 6 hex digits) of an architecture in
  ``<run>/results.jsonl`` or ``<run>/pareto.json`` (with ``run=<run>``);
- a reference name (``mobilenetv2``, ``mnasnet_a1``, ``mnasnet_b1``);
- comma-separated block strings (``ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24,...``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mnas.search.records import latency_of, load_result_rows
from mnas.space import REFERENCE_BLOCKS, Architecture, reference, resolve_arch

logger = logging.getLogger(__name__)


ARCH_FORMS = (
    "'<run>/pareto.json:<index>', '<run>/pareto.json:all' (or all=true with run=<run>), "
    "a hash from <run>/results.jsonl (with run=<run>), a reference name "
    f"({', '.join(sorted(REFERENCE_BLOCKS))}), or comma-separated block strings "
    "such as 'ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24'"
)
_HASH = re.compile(r"[0-9a-f]{6,16}")


@dataclass(frozen=True)
class ArchChoice:
    """One architecture to retrain and where it came from.

    Attributes:
        label: short name for tables and folders (``front0``, ``mobilenetv2``, ``a1b2c3d4``).
        arch: the architecture.
        source: ``pareto``, ``results``, ``reference`` or ``blocks``.
        run_dir: the search run it came from, if any.
        search_accuracy: the accuracy the search scored it by (a proxy training's validation
            accuracy, or a supernet's score), if known.
        search_latency_ms: its latency in the search in ms, if known (None for a search on
            MACs).
        search_latency_scale: the scale of ``search_latency_ms`` (``drift-corrected``,
            ``raw``), if known.
        search_latency_nominal_ms: the nominal that scale was drift-corrected with.
    """

    label: str
    arch: Architecture
    source: str
    run_dir: str | None = None
    search_accuracy: float | None = None
    search_latency_ms: float | None = None
    search_latency_scale: str | None = None
    search_latency_nominal_ms: float | None = None


def _split_pareto(text: str) -> tuple[Path, str] | None:
    """``(pareto path, selector)`` if ``text`` names a pareto.json, else None."""
    path, sep, selector = text.rpartition(":")
    if sep and Path(path).name == "pareto.json":
        return Path(path), selector.strip()
    if Path(text).name == "pareto.json":
        return Path(text), ""
    return None


def _read_pareto(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"arch={str(path)!r}: no such file; allowed forms: {ARCH_FORMS}")
    try:
        points = json.loads(path.read_text())["points"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a search's pareto.json (needs a 'points' list): {e}"
        ) from e
    if not isinstance(points, list):
        raise ValueError(f"{path}: 'points' must be a list, got {type(points).__name__}")
    return points


def _choice_from_record(record: dict, label: str, source: str, run_dir: Path) -> ArchChoice:
    arch = Architecture.from_dict(record)
    if arch.space == "nasbench201":
        raise ValueError(
            f"architecture {arch.hash} is a NAS-Bench-201 cell: it has a table entry, "
            "not a network to retrain"
        )

    def num(key: str) -> float | None:
        value = record.get(key)
        return float(value) if isinstance(value, int | float) else None

    stats = record.get("latency") if isinstance(record.get("latency"), dict) else {}
    if record.get("latency_unit", "ms") != "ms" or stats.get("source") == "macs":
        return ArchChoice(label, arch, source, str(run_dir), num("accuracy"))
    scale = stats.get("scale")
    if scale is None and "drift_factor" in stats:  # written before records named their scale
        scale = "raw" if stats["drift_factor"] == 1.0 else "drift-corrected"
    return ArchChoice(
        label,
        arch,
        source,
        str(run_dir),
        num("accuracy"),
        latency_of(record) if isinstance(latency_of(record), int | float) else None,
        scale,
        stats.get("nominal_ms"),
    )


def front_choices(pareto_path: str | os.PathLike) -> list[ArchChoice]:
    """Every point of a run's ``pareto.json``, labelled ``front<i>`` in file order."""
    path = Path(pareto_path)
    return [
        _choice_from_record(r, f"front{i}", "pareto", path.parent)
        for i, r in enumerate(_read_pareto(path))
    ]


def _find_hash(prefix: str, run_dir: Path) -> ArchChoice:
    files = [run_dir / "results.jsonl", run_dir / "pareto.json"]
    if not any(f.is_file() for f in files):
        raise ValueError(f"run={str(run_dir)!r} has neither results.jsonl nor pareto.json")
    found: dict[str, dict] = {}
    # read-only and tolerant: a killed run's torn last line (or a garbage line) is skipped
    for record in load_result_rows(run_dir):
        if str(record["hash"]).startswith(prefix):
            found.setdefault(record["hash"], record)
    if files[1].is_file():
        for record in _read_pareto(files[1]):
            if str(record.get("hash", "")).startswith(prefix):
                found.setdefault(record["hash"], record)
    if not found:
        raise ValueError(f"arch={prefix!r}: no architecture with that hash in {run_dir}")
    if len(found) > 1:
        raise ValueError(f"arch={prefix!r} is ambiguous in {run_dir}: {sorted(found)}")
    ((full, record),) = found.items()
    return _choice_from_record(record, full[:8], "results", run_dir)


def resolve_choices(
    arch: str, run: str | os.PathLike | None = None, all_points: bool = False
) -> list[ArchChoice]:
    """The architectures that ``arch=`` (with ``run=`` and ``all=``) names.

    Args:
        arch: one of the forms in the module docstring.
        run: a search run directory (for a hash, or for ``all_points``).
        all_points: every point of the run's Pareto front (``run`` or a pareto.json ``arch``).

    Raises:
        ValueError: naming the bad value and the allowed forms.
    """
    text = arch.strip() if isinstance(arch, str) else arch
    if not isinstance(text, str) or not text:
        raise ValueError(f"arch={arch!r} is empty; allowed forms: {ARCH_FORMS}")
    pareto = _split_pareto(text)
    if all_points:
        if pareto is not None:
            return front_choices(pareto[0])
        if run is None:
            raise ValueError("all=true needs run=<run directory> or arch=<run>/pareto.json")
        return front_choices(Path(run) / "pareto.json")
    if pareto is not None:
        path, selector = pareto
        if selector == "all":
            return front_choices(path)
        points = _read_pareto(path)
        if not re.fullmatch(r"\d+", selector):
            raise ValueError(
                f"arch={text!r}: after 'pareto.json:' give an index 0..{len(points) - 1} or 'all'"
            )
        index = int(selector)
        if index >= len(points):
            raise ValueError(
                f"arch={text!r}: index {index} out of range; {path} has {len(points)} "
                f"points (0..{len(points) - 1})"
            )
        return [_choice_from_record(points[index], f"front{index}", "pareto", path.parent)]
    if text in REFERENCE_BLOCKS:
        return [ArchChoice(text, reference(text), "reference")]
    if _HASH.fullmatch(text):
        if run is None:
            raise ValueError(f"arch={text!r} looks like a hash: give run=<run directory> too")
        return [_find_hash(text, Path(run))]
    try:
        found = resolve_arch(text)
    except ValueError as e:
        raise ValueError(f"arch={text!r} is not valid ({e}); allowed forms: {ARCH_FORMS}") from e
    return [ArchChoice(found.hash[:8], found, "blocks")]


def read_run_json(run_dir: str | os.PathLike) -> dict:
    """A search's ``run.json`` (data and model settings), or ``{}`` when it has none."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        logger.warning("%s not found: using the configured data and model settings", path)
        return {}
    return json.loads(path.read_text())
