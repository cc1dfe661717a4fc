"""Bad command-line inputs (issue 12): each runs its script in a process and keeps the
first line of the error it prints. Also the ``inputs`` section of ``bench/faults.py``.

    python bench/bad_inputs.py                     # makes a one-step tiny run to resume first
    python bench/bad_inputs.py --reference <run>   # reuse a finished run

Prints the table: input -> exit code -> first line of the error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# The tiny real search of this bench and bench/faults.py (which adds its own steps and batch).
TINY_SETTINGS = [
    "data.image_size=8",
    "model.width_mult=0.25",
    "trainer.epochs=0.1",
    "trainer.batch_size=32",
    "trainer.bn_recalibrate_batches=1",
    "latency=macs",
    "reward.target_ms=0.5",
    "tensorboard=false",
]
TINY = [*TINY_SETTINGS, "steps=1", "batch_size=2"]


def bad_inputs(
    ref: Path,
    work: Path,
    tiny: list[str],
    search_cmd: Callable[..., list[str]],
    run: Callable[..., subprocess.CompletedProcess],
) -> list[tuple[str, int, str]]:
    """(input, exit code, first line of the error) of each bad input; ``ref`` is a finished
    run (for bad resumes and retrain hashes), ``tiny`` the search's small settings."""
    search = [
        "stepz=3",
        "trainer.lrr=0.1",
        "latency.kindd=macs",
        "executor.worker=2",
        "+foo=1",
        "+trainer.bar=2",
        "++seedz=1",
        "steps=abc",
        "batch_size=2.5",
        "trainer.epochs=fast",
        "tensorboard=maybe",
        "executor.workers=two",
        "steps=0",
        "batch_size=-1",
        "seed=-5",
        "reward.alpha=0.5",
        "reward.beta=1",
        "reward.target_ms=-3",
        "reward.target_ms=fast",
        "reward.preset=medium",
        "strategy.lr=0",
        "strategy.clip_eps=1.5",
        "strategy.epochs=0",
        "strategy.name=bayes",
        "trainer.batch_size=0",
        "trainer.lr=-1",
        "trainer.optimizer=lbfgs",
        "model.width_mult=0",
        "data.image_size=0",
        "executor.retries=-1",
        "executor.workers=0",
        "executor.name=mpi",
        "executor.child_timeout_s=-5",
        "executor.child_timeout_s=soon",
        "latency.kind=flops",
        "latency=lut",
        "space.name=darts",
        "space=nasbench201",
        "data=fashion_mnist data.root=/nonexistent",
        "data=imagefolder data.root=/nonexistent",
        "data.name=imagenet",
        "evaluator=tabular space=nasbench201 evaluator.table=/nonexistent.csv",
        f"resume={work / 'no_such_run'}",
        f"resume={ref} trainer.epochs=1",
        f"resume={ref} latency=measured",
        f"resume={ref} strategy=random",
        f"resume={ref} seed=3",
        f"resume={ref} +foo=1",
        f"resume={ref} executor.latency_resource=lat",
    ]
    retrain = [
        "arch=xx_r1_k3_s1_c16",
        "arch=ir_r1_k3_s1_c16",
        "arch=resnet50",
        "arch=ds_r1_k4_s1_c16",
        f"arch={ref}/pareto.json:99",
        "arch=abcdef12",
        f"arch=ffffffff run={ref}",
    ]
    jobs = []
    for text in search:
        args = [*tiny, *text.split(), f"hydra.run.dir={work / 'bad'}"]
        if text.startswith("resume="):
            args = text.split()
        jobs.append((f"search.py {text}", search_cmd(*args)))
    for text in retrain:
        cmd = [sys.executable, str(ROOT / "scripts" / "retrain.py"), *text.split()]
        jobs.append((f"retrain.py {text}", [*cmd, f"hydra.run.dir={work / 'bad_retrain'}"]))
    jobs.append(
        (
            "mnas describe ir_r1_k3_s1_e6",
            [sys.executable, "-m", "mnas", "describe", "ir_r1_k3_s1_e6"],
        )
    )

    def one(job):
        label, cmd = job
        try:
            out = run(cmd, timeout=300)
        except subprocess.TimeoutExpired:  # not refused: it started real work
            return label, None, "NOT REFUSED: still running after 300 s"
        return label, out.returncode, first_error(out)

    # One at a time: the machine is shared.
    return [one(job) for job in jobs]


def first_error(out: subprocess.CompletedProcess) -> str:
    lines = [x.strip() for x in out.stderr.splitlines() if x.strip() and "%|" not in x]
    if not lines:
        return "(no error)"
    if lines[0].startswith("Traceback"):
        return "TRACEBACK: " + lines[-1][:140]
    return lines[0][:160]


def search_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "search.py"), *overrides]


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def print_table(inputs: list[tuple[str, int | None, str]]) -> None:
    print("\n| input | exit | first line of the error |")
    print("|---|---|---|")
    for text, code, err in inputs:
        print(f"| `{text}` | {code} | {err.replace('|', '/')} |")
    clean = sum(
        code not in (0, None) and not err.startswith("TRACEBACK") for _, code, err in inputs
    )
    print(f"\n{clean}/{len(inputs)} refused with a clear error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None, help="a finished search run")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mnas-bad-inputs-"))
    ref = args.reference
    if ref is None:
        ref = work / "reference"
        out = run(search_cmd(*TINY, f"hydra.run.dir={ref}"))
        if out.returncode != 0:
            raise SystemExit(f"reference run failed:\n{out.stderr[-2000:]}")
    print(f"runs in {work}; reference run {ref}", flush=True)
    print_table(bad_inputs(ref, work, TINY, search_cmd, run))


if __name__ == "__main__":
    main()
