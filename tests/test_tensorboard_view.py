"""TensorBoard as a user opens it: a tiny real search, TensorBoard started with the
commands the search printed, headless Chromium on the URLs TensorBoard printed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tb_browser", ROOT / "scripts" / "tb_browser.py")
tb_browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb_browser)

pytestmark = pytest.mark.skipif(
    tb_browser.chromium_path() is None,
    reason="chromium is not installed (apt-get install chromium): TensorBoard browser test skipped",
)

TINY = [
    "data.image_size=8",
    "model.width_mult=0.25",
    "trainer.epochs=0.1",
    "trainer.batch_size=32",
    "trainer.bn_recalibrate_batches=1",
    "latency=macs",
    "steps=2",
    "batch_size=2",
]
HEADLINE_SCALARS = {
    "reward/mean",
    "reward/max",
    "reward/best",
    "reward/accuracy_mean",
    "reward/latency_mmacs_mean",
    "pareto/front_size",
    "pareto/hypervolume",
}
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def tiny_search(run_dir: Path) -> tuple[list[tuple[str, str]], list[dict]]:
    """Runs ``scripts/search.py``; returns the printed TensorBoard commands as (view, log
    directory) pairs, in order, and the records of ``results.jsonl``."""
    out = subprocess.run(
        [sys.executable, "scripts/search.py", *TINY, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    printed = re.findall(r"^(tensorboard|hparams): +tensorboard --logdir (\S+)", out.stdout, re.M)
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return printed, [json.loads(line) for line in lines]


def test_tensorboard_opens_on_the_search_and_lists_every_architecture(tmp_path):
    printed, records = tiny_search(tmp_path)
    logdirs = {"tensorboard": str(tmp_path / "tb"), "hparams": str(tmp_path / "hparams")}
    # printed at the start (to watch the search live) and again at the end
    assert printed == 2 * list(logdirs.items())
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    hashes = {r["hash"] for r in records}

    with (
        tb_browser.TensorBoard(logdirs["tensorboard"]) as main,
        tb_browser.TensorBoard(logdirs["hparams"]) as hparams,
        tb_browser.Browser(width=1400, height=2400) as browser,
    ):
        # The search's view holds one run, so every run selector ticks it by default.
        best = main.wait_for("data/plugin/scalars/scalars?run=.&tag=reward/best", lambda a: a)
        assert main.get("data/runs") == ["."]
        enabled = {name for name, p in main.get("data/plugins_listing").items() if p["enabled"]}
        assert {"timeseries", "scalars", "images", "text"} <= enabled and "hparams" not in enabled
        assert HEADLINE_SCALARS <= set(main.get("data/plugin/scalars/tags")["."])
        assert [step for _, step, _ in best] == [1, 2]
        assert best[-1][2] == pytest.approx(max(r["reward"] for r in records), rel=1e-6)
        figures = main.get("data/plugin/images/images?run=.&tag=pareto")
        assert [f["step"] for f in figures] == [1, 2]  # one per step: the slider moves the front
        png = main.get("data/plugin/images/individualImage?" + figures[-1]["query"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        text = main.get("data/plugin/text/text?run=.&tag=best_architectures/text_summary")
        top = max(records, key=lambda r: r["reward"])
        assert f"{100 * top['accuracy']:.2f}%" in text[-1]["text"]

        browser.goto(main.url)
        page = browser.wait_for(tb_browser.TIME_SERIES_STATE, timeout=60)
        assert page, "the default view never showed the Pareto figure"
        assert page["runs"] == [{"name": ".", "selected": True}]
        # Time Series unfolds the first two tag groups: the figure and the reward curves.
        assert [g["name"] for g in page["groups"]] == ["pareto", "reward", "search", "strategy"]
        cards = {g["name"]: g["cards"] for g in page["groups"]}
        assert cards["pareto"] == ["pareto", "pareto/front_size", "pareto/hypervolume"]
        assert {"reward/accuracy_mean", "reward/latency_mmacs_mean", "reward/best"} <= set(
            cards["reward"]
        )

        # HParams: one session per evaluated architecture, with its accuracy and latency.
        hparams.wait_for("data/runs", lambda runs: hashes <= set(runs))
        experiment = hparams.post("data/plugin/hparams/experiment", {"experimentName": ""})
        metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
        assert metrics == ["accuracy", "latency_mmacs", "reward", "params"]
        assert len(experiment["hparamInfos"]) == 42
        groups = hparams.post(
            "data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ALL_STATUSES,
                "startIndex": 0,
                "sliceSize": 1000,
            },
        )["sessionGroups"]
        served = {
            g["name"]: {m["name"]["tag"]: m["value"] for m in g["metricValues"]} for g in groups
        }
        assert set(served) == hashes
        for r in records:
            assert served[r["hash"]]["accuracy"] == pytest.approx(r["accuracy"], rel=1e-6)
            assert served[r["hash"]]["latency_mmacs"] == pytest.approx(r["latency_mmacs"], rel=1e-6)

        browser.goto(hparams.url + "#hparams")
        rows = browser.wait_for(tb_browser.HPARAMS_STATE, timeout=60)
        assert rows, "the HParams dashboard listed no session"
        assert {row["name"] for row in rows} == hashes
        for row in rows:
            assert row["metrics"]["accuracy"] == pytest.approx(served[row["name"]]["accuracy"])
            assert row["metrics"]["latency_mmacs"] == pytest.approx(
                served[row["name"]]["latency_mmacs"]
            )
