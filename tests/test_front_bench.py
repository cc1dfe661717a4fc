"""bench/front.py (issue 15): which searched networks are retrained, and their labels."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _front():
    spec = importlib.util.spec_from_file_location("bench_front", ROOT / "bench" / "front.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TARGETS = {"MobileNetV2 x0.35": 0.5, "MobileNetV2 x0.5": 0.8, "MobileNetV2 x0.75": 1.6}
TARGETS["MobileNetV2 x1.0"] = 2.4


def _searched(out: Path, children: list[tuple[str, float, float]], width: float = 0.5) -> None:
    """A finished search under ``out/search``: (hash, predicted ms, proxy accuracy) rows, with
    a lookup-table scale of 2 (the table's ms are twice the measured ones)."""
    (out / "targets.json").write_text(json.dumps(TARGETS))
    (out / "lut_scale.json").write_text(json.dumps({str(width): 2.0}))
    run = out / "search" / "w0.5_T1.0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": {"width_mult": width}}))
    lines = [
        json.dumps(
            {
                "status": "ok",
                "hash": h,
                "blocks": [f"ds_r1_k3_s1_c{8 + i}"],
                "accuracy": acc,
                "latency_ms": 2.0 * ms,  # the table's scale
            }
        )
        for i, (h, ms, acc) in enumerate(children)
    ]
    (run / "results.jsonl").write_text("\n".join(lines) + "\n" + '{"torn')  # a torn last line


def _select(front, out: Path, max_: int = 5) -> list[dict]:
    front.cmd_select(argparse.Namespace(out=out, max=max_))
    return json.loads((out / "selected.json").read_text())


def test_selection_picks_distinct_networks_for_the_speedup_bounds(tmp_path):
    front = _front()
    # a: fast and good (the best under every bound), b: the next best under 2.4/1.3 = 1.85 ms,
    # c: fits only "as fast as x1.0", d: too slow for anything
    _searched(tmp_path, [("a", 0.55, 0.6), ("b", 1.2, 0.55), ("c", 2.3, 0.7), ("d", 3.0, 0.9)])
    rows = _select(front, tmp_path)
    picked = [(r["hash"], r["chosen_for"]) for r in rows]
    assert picked == [
        ("a", ">= 1.3x faster than MobileNetV2 x0.5"),
        ("b", ">= 1.3x faster than MobileNetV2 x0.75"),
        ("c", "as fast as MobileNetV2 x1.0"),  # only "a" and "b" fit 2.4/1.3 ms
    ], picked
    assert [r["label"] for r in rows] == ["searched 1", "searched 2", "searched 3"]
    assert abs(rows[0]["predicted_latency_ms"] - 0.55) < 1e-9  # back on the measured scale


def test_reselection_keeps_the_labels_of_trained_rows(tmp_path):
    front = _front()
    _searched(tmp_path, [("a", 0.55, 0.6), ("c", 2.3, 0.7)])
    first = {r["hash"]: r["label"] for r in _select(front, tmp_path)}
    assert first == {"a": "searched 1", "c": "searched 2"}
    # more search: a new, better child under 1.85 ms is picked before "c" in the order
    results = tmp_path / "search" / "w0.5_T1.0" / "results.jsonl"
    text = results.read_text().rsplit("\n", 1)[0]  # drop the torn line
    new = {"status": "ok", "hash": "e", "blocks": ["x"], "accuracy": 0.65, "latency_ms": 2.4}
    results.write_text(text + "\n" + json.dumps(new) + "\n")
    again = {r["hash"]: r["label"] for r in _select(front, tmp_path)}
    assert again == {"a": "searched 1", "e": "searched 3", "c": "searched 2"}


def test_selection_stops_at_max(tmp_path):
    front = _front()
    _searched(tmp_path, [("a", 0.3, 0.6), ("b", 0.35, 0.55), ("c", 0.4, 0.5), ("d", 0.45, 0.4)])
    assert [r["hash"] for r in _select(front, tmp_path, max_=2)] == ["a", "b"]


def _row(out: Path, label: str, source: str, acc: float, device: str = "cpu") -> None:
    recipe = {"epochs": 15.0, "batch_size": 256, "seed": 0, "threads": 1}
    row = {
        "label": label,
        "source": source,
        "blocks": ["ds_r1_k3_s1_c16"],
        "width": 0.5,
        "seed": 0,
        "test_accuracy": acc,
        "params": 1000,
        "macs": 2_000_000,
        "train_seconds": 10.0,
        "device_name": device,
        "precision": "fp32",
        "recipe": recipe,
    }
    (out / "rows").mkdir(exist_ok=True)
    (out / "rows" / f"{label.replace(' ', '_')}.json").write_text(json.dumps(row))


def test_report_writes_the_issue_format_verdicts_figure_and_tensorboard(tmp_path):
    front = _front()
    _row(tmp_path, "MobileNetV2 x0.35", "reference", 0.78)
    _row(tmp_path, "MobileNetV2 x0.5", "reference", 0.81)
    _row(tmp_path, "searched 1", "search", 0.80, device="gpu")  # 1.33x faster than x0.5 but -1
    _row(tmp_path, "searched 2", "search", 0.795)  # as fast as x0.35, 1.5 points better
    lat = {"MobileNetV2 x0.35": 0.6, "MobileNetV2 x0.5": 0.8, "searched 1": 0.6}
    lat["searched 2"] = 0.59
    (tmp_path / "latency.json").write_text(
        json.dumps({k: {"latency_ms": v} for k, v in lat.items()})
    )
    args = argparse.Namespace(
        out=tmp_path, json=tmp_path / "front.json", figure=tmp_path / "front.png"
    )
    front.cmd_report(args)
    doc = json.loads(args.json.read_text())
    assert [r["label"] for r in doc["rows"]][:2] == ["MobileNetV2 x0.35", "MobileNetV2 x0.5"]
    for r in doc["rows"]:
        assert {
            "label",
            "source",
            "blocks",
            "latency_ms",
            "test_accuracy",
            "params",
            "macs",
        } <= set(r)
        assert r["seed"] == 0 and 0 <= r["test_accuracy"] <= 1
    verdicts = {v["reference"]: v for v in doc["verdicts"]}
    assert verdicts["MobileNetV2 x0.5"]["beaten_faster"] == []  # 0.80 < 0.81
    assert verdicts["MobileNetV2 x0.5"]["beaten_more_accurate"] == []  # +0 and -1.5 points
    both = ["searched 1", "searched 2"]  # as fast as x0.35 and >= 1 point more accurate
    assert verdicts["MobileNetV2 x0.35"]["beaten_more_accurate"] == both
    assert verdicts["MobileNetV2 x0.35"]["beaten_faster"] == []
    assert doc["budget"]["training_seconds"] == {"cpu": 30.0, "gpu": 10.0}
    assert doc["budget"]["recipe"] == {"epochs": 15.0, "batch_size": 256}
    assert args.figure.stat().st_size > 10_000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
