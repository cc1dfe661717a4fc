"""Fault injection on a tiny real search: does it survive, what is lost, does it resume exactly?

Every fault runs on the same tiny search (digits at 8 px, x0.25 children, 0.1 epoch, MACs
as latency, PPO, 2 steps x 2 architectures, serial) and is compared with one uninterrupted
run of it:

- SIGKILL at random moments (``--kills``), then ``resume=``; and SIGKILL exactly inside a
  ``results.jsonl`` write and inside a checkpoint write;
- a truncated checkpoint; a results file with a garbage line and a torn last line;
- a child that hangs (serial, pool, Ray) and a child whose loss goes NaN;
- a worker process killed mid-task (pool and Ray);
- a corrupted and a locked latency cache (``latency=measured``);
- bad command-line inputs to ``scripts/search.py``, ``scripts/retrain.py``, ``mnas describe``.

For each fault: survived (the search finished, resumed by plain ``resume=<run>`` where it
was killed), lost (records written before the fault that are gone or changed after it; a
child in flight when killed is re-run, not lost), equal (the finished run has the
uninterrupted run's records, the same architectures, accuracies, latencies and rewards in
the same order, and the same final controller state, so the same sampled sequence).

    python bench/faults.py                  # everything (~15-25 min on 2 loaded cores)
    python bench/faults.py --kills 5 --skip-ray --only kills,files,inputs
    python bench/faults.py --only inputs --reference <work>/reference   # reuse a reference

It prints the fault table and the bad-input table (input -> first line of the error).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bad_inputs import TINY_SETTINGS, bad_inputs  # noqa: E402  (bench/, next to this script)
from bad_inputs import print_table as print_input_table  # noqa: E402

from mnas.search.records import (  # noqa: E402
    CHECKPOINT,
    RESULTS,
    latency_of,
    load_result_rows,
)

STEPS, BATCH = 2, 2
TINY = [*TINY_SETTINGS, f"steps={STEPS}", f"batch_size={BATCH}"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@dataclasses.dataclass
class Row:
    fault: str
    survived: bool
    lost: int | None  # records lost; None where nothing was written before the fault
    equal: bool | None  # None where a run cannot equal the reference (a child is changed)
    note: str


# ---------------------------------------------------------------- running and comparing


def search_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "search.py"), *overrides]


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def fresh(run_dir: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run(search_cmd(*TINY, *extra, f"hydra.run.dir={run_dir}"), timeout)


def resume(run_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return run(search_cmd(f"resume={run_dir}"), timeout)


def inner(fault: str, run_dir: Path, *extra: str, timeout: float = 600):
    """This script in ``--inner`` mode: the search in-process with ``fault`` patched in."""
    cmd = [sys.executable, __file__, "--inner", fault, str(run_dir), *extra]
    return run(cmd, timeout)


def records(run_dir: Path) -> list[tuple]:
    return [
        (r["hash"], r["status"], r["accuracy"], latency_of(r), r["reward"])
        for r in load_result_rows(run_dir)
    ]


def complete_lines(run_dir: Path) -> list[bytes]:
    path = run_dir / RESULTS
    if not path.exists():
        return []
    return [x for x in path.read_bytes().splitlines(keepends=True) if x.endswith(b"\n")]


def same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def strategy_state(run_dir: Path):
    return torch.load(run_dir / CHECKPOINT, weights_only=False)["strategy"]


def equals_reference(run_dir: Path, ref: Path, ordered: bool = True) -> bool:
    a, b = records(run_dir), records(ref)
    if not ordered:
        a, b = sorted(a), sorted(b)
    return a == b and same_state(strategy_state(run_dir), strategy_state(ref))


def lost_lines(before: list[bytes], run_dir: Path) -> int:
    """Complete lines written before a fault that are not in the file afterwards."""
    after = set(complete_lines(run_dir))
    return sum(line not in after for line in before)


def tail(p: subprocess.CompletedProcess) -> str:
    lines = [
        x
        for x in (p.stderr or "").splitlines()
        if x.strip() and "%|" not in x and "HYDRA_FULL_ERROR" not in x
    ]
    return lines[-1][:120] if lines else ""


# ---------------------------------------------------------------- the faults


def reference(work: Path) -> tuple[Path, float, float]:
    """The uninterrupted run; returns it, when its run.json appeared, and its duration."""
    ref = work / "reference"
    start = time.perf_counter()
    proc = subprocess.Popen(
        search_cmd(*TINY, f"hydra.run.dir={ref}"),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = None
    while proc.poll() is None:
        if ready is None and (ref / "run.json").exists():
            ready = time.perf_counter() - start
        time.sleep(0.05)
    duration = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed:\n{proc.stderr.read()[-2000:]}")
    return ref, ready or 0.0, duration


def random_kills(work: Path, ref: Path, ready: float, duration: float, n: int, seed: int):
    """``n`` SIGKILLs in chains: a chain starts a run and kills it at a random moment,
    resumes it and kills the resumed process at a random moment, and so on (at most ten
    kills), then lets it finish and compares it with the reference. A chain whose run
    finishes before its next kill ends there and a new chain starts. A moment is drawn
    from start-up (before the run directory exists, or before the run is loaded) to well
    into the search."""
    rng = random.Random(seed)
    rows: list[Row] = []
    chain = 0
    while len(rows) < n:
        run_dir = work / f"chain{chain}"
        pending: list[tuple[str, str, list[bytes]]] = []
        while len(rows) + len(pending) < n and len(pending) < 10:
            at = rng.uniform(0.5 * ready, ready + 4 * (duration - ready) / 10)
            started = (run_dir / "config.yaml").exists()
            cmd = (
                search_cmd(f"resume={run_dir}")
                if started
                else search_cmd(*TINY, f"hydra.run.dir={run_dir}")
            )
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            time.sleep(at)
            if proc.poll() is not None:
                break  # the run finished before this kill: the chain is complete
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            before = complete_lines(run_dir)
            raw = (run_dir / RESULTS).read_bytes() if (run_dir / RESULTS).exists() else b""
            torn = bool(raw) and not raw.endswith(b"\n")
            tmp = (run_dir / (CHECKPOINT + ".tmp")).exists()
            step = (
                torch.load(run_dir / CHECKPOINT, weights_only=False)["step"]
                if (run_dir / CHECKPOINT).exists()
                else 0
            )
            extras = [x for x, on in (("torn line", torn), ("checkpoint.pt.tmp", tmp)) if on]
            note = (
                f"chain {chain}: {'resumed' if started else 'fresh'} run killed {at:.1f}s in, "
                f"at step {step} with {len(before)} records" + "".join(f", {x}" for x in extras)
            )
            pending.append((f"SIGKILL #{len(rows) + len(pending) + 1}", note, before))
            print(f"  {note}", flush=True)
        out = resume(run_dir) if (run_dir / "config.yaml").exists() else fresh(run_dir)
        ok = out.returncode == 0
        equal = equals_reference(run_dir, ref) if ok else False
        for label, note, before in pending:
            if not ok:
                note += f"; final resume failed: {tail(out)}"
            rows.append(Row(label, ok, lost_lines(before, run_dir) if ok else None, equal, note))
        chain += 1
    return rows


def kill_inside(work: Path, ref: Path, fault: str, label: str) -> Row:
    run_dir = work / fault.replace(":", "_")
    first = inner(fault, run_dir)
    killed = first.returncode == -signal.SIGKILL
    before = complete_lines(run_dir)
    raw = (run_dir / RESULTS).read_bytes()
    tmp = run_dir / (CHECKPOINT + ".tmp")
    evidence = []
    if not raw.endswith(b"\n"):
        evidence.append("torn results line")
    if tmp.exists():
        evidence.append(f"half-written {tmp.name} ({tmp.stat().st_size} bytes)")
    out = resume(run_dir)
    survived = killed and out.returncode == 0
    note = f"killed: {killed}; {', '.join(evidence) or 'no partial file'}"
    if out.returncode != 0:
        note += f"; resume failed: {tail(out)}"
    return Row(
        label,
        survived,
        lost_lines(before, run_dir),
        equals_reference(run_dir, ref) if out.returncode == 0 else False,
        note,
    )


def truncated_checkpoint(work: Path, ref: Path) -> Row:
    run_dir = work / "truncated_ckpt"
    fresh(run_dir, "steps=1")
    ckpt = run_dir / CHECKPOINT
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    before = complete_lines(run_dir)
    out = resume(run_dir)  # the saved config says steps=1: extend to the reference's steps
    if out.returncode == 0:
        out = run(search_cmd(f"resume={run_dir}", f"steps={STEPS}"))
    ok = out.returncode == 0
    aside = (run_dir / (CHECKPOINT + ".corrupt")).exists()
    return Row(
        "truncated checkpoint.pt",
        ok,
        lost_lines(before, run_dir),
        equals_reference(run_dir, ref) if ok else False,
        f"moved aside: {aside}; strategy replayed {len(before)} records"
        + ("" if ok else f"; {tail(out)}"),
    )


def damaged_results(work: Path, ref: Path) -> Row:
    run_dir = work / "damaged_results"
    fresh(run_dir, "steps=1")
    path = run_dir / RESULTS
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(1, b"\x00\x17garbage {not json\n")
    path.write_bytes(b"".join(lines) + b'{"step": 1, "hash": "3f0')
    before = [x for x in complete_lines(run_dir) if not x.startswith(b"\x00")]
    out = run(search_cmd(f"resume={run_dir}", f"steps={STEPS}"))
    ok = out.returncode == 0
    rejected = run_dir / "results.rejected.jsonl"
    kept = len(rejected.read_bytes().splitlines()) if rejected.exists() else 0
    return Row(
        "results.jsonl: garbage line + torn line",
        ok,
        lost_lines(before, run_dir),
        equals_reference(run_dir, ref) if ok else False,
        f"{kept} bad lines moved to {rejected.name}" + ("" if ok else f"; {tail(out)}"),
    )


def hang_or_train(task):
    """``train_child``, except that the architecture named by MNAS_FAULT_HANG hangs and the
    one named by MNAS_FAULT_NAN trains with a learning rate that sends its loss to NaN."""
    from mnas.evaluate.trained import train_child

    if task.arch.hash == os.environ.get("MNAS_FAULT_HANG"):
        time.sleep(10**6)
    if task.arch.hash == os.environ.get("MNAS_FAULT_NAN"):
        task = dataclasses.replace(task, train=dataclasses.replace(task.train, lr=1e9, epochs=1.0))
    return train_child(task)


def changed_child(
    work: Path, ref: Path, name: str, kind: str, expected: str, overrides: list[str]
) -> Row:
    """A search where one child (the second of step 0) hangs or diverges: it must be
    recorded as ``expected`` and the search must finish every step."""
    victim = records(ref)[1][0]
    run_dir = work / name.replace(" ", "_").replace("(", "").replace(")", "")
    start = time.perf_counter()
    out = run(
        [sys.executable, __file__, "--inner", f"{kind}:{victim}", str(run_dir), *overrides],
        timeout=900,
    )
    seconds = time.perf_counter() - start
    recs = {r["hash"]: r for r in load_result_rows(run_dir)}
    status = recs.get(victim, {}).get("status", "missing")
    others = sorted({r["status"] for h, r in recs.items() if h != victim})
    steps = (
        torch.load(run_dir / CHECKPOINT, weights_only=False)["step"]
        if (run_dir / CHECKPOINT).exists()
        else 0
    )
    ok = out.returncode == 0 and status == expected and steps == STEPS and others == ["ok"]
    reason = recs.get(victim, {}).get("reason", "")
    return Row(
        name,
        ok,
        None,
        None,
        f"child {victim[:8]}: {status} ({reason[:50]}); others {others}; "
        f"{len(recs)} records, {steps} steps, {seconds:.0f}s"
        + ("" if out.returncode == 0 else f"; {tail(out)}"),
    )


def killed_worker(work: Path, ref: Path, executor: str) -> Row:
    run_dir = work / f"killed_worker_{executor}"
    out = run(
        [sys.executable, __file__, "--inner", f"killworker:{executor}", str(run_dir)], timeout=900
    )
    ok = out.returncode == 0
    note = next((x for x in out.stdout.splitlines() if x.startswith("killed")), "no kill")
    retried = load_result_rows(run_dir)
    return Row(
        f"worker killed mid-task ({executor})",
        ok,
        0 if ok else None,
        equals_reference(run_dir, ref, ordered=False) if ok else False,
        f"{note}; {len(retried)} records, statuses {sorted({r['status'] for r in retried})}"
        + ("" if ok else f"; {tail(out)}"),
    )


MEASURED = [
    "latency=measured",
    "latency.reference=false",
    "latency.warmup=1",
    "latency.min_runs=5",
    "latency.max_runs=20",
    "latency.time_cap_s=0.05",
    "steps=1",
    "batch_size=2",
]


def bad_cache(work: Path, kind: str) -> Row:
    run_dir = work / f"cache_{kind}"
    cache = work / f"cache_{kind}.sqlite"
    holder = None
    if kind == "corrupted":
        cache.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    else:  # another process holds an exclusive lock for the whole run
        sqlite3.connect(cache).execute(
            "CREATE TABLE IF NOT EXISTS latency (key TEXT PRIMARY KEY)"
        ).connection.commit()
        holder = sqlite3.connect(cache, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
    start = time.perf_counter()
    try:
        out = fresh(run_dir, *MEASURED, f"latency.cache={cache}", timeout=400)
        code, err = out.returncode, tail(out)
    except subprocess.TimeoutExpired:
        code, err = None, "still running after 400 s (killed)"
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    seconds = time.perf_counter() - start
    recs = load_result_rows(run_dir)
    statuses = sorted({r["status"] for r in recs})
    ok = code == 0 and len(recs) == 2 and statuses == ["ok"]
    reasons = {r["reason"][:60] for r in recs if r["status"] != "ok"}
    return Row(
        f"latency cache {kind}",
        ok,
        None,
        None,
        f"exit {code}, {len(recs)} records {statuses}, {seconds:.0f}s"
        + (f"; {sorted(reasons)}" if reasons else "")
        + ("" if code == 0 else f"; {err}"),
    )


# ---------------------------------------------------------------- inner mode


def _inner(fault: str, run_dir: Path, extra: list[str]) -> None:
    """Run the tiny search in this process with ``fault`` patched in."""
    import logging

    from hydra import compose, initialize_config_dir

    import mnas.search.loop
    from mnas.conf import register_configs
    from mnas.conf.runner import build_search

    logging.basicConfig(level=logging.WARNING)
    kind, _, arg = fault.partition(":")
    overrides = list(extra)
    if kind in ("hang", "nan"):
        os.environ["MNAS_FAULT_HANG" if kind == "hang" else "MNAS_FAULT_NAN"] = arg
    if kind == "killworker":
        overrides += [f"executor={arg}", "executor.workers=2"]
    if kind == "killworker" and arg == "ray":
        import ray

        path = f"{ROOT}:{Path(__file__).parent}"
        ray.init(
            num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}}
        )
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="search", overrides=[*TINY, *overrides])
    search = build_search(cfg, run_dir)
    calls = {"n": 0}

    def die_halfway(data: bytes, path: Path) -> None:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    if kind == "append":  # SIGKILL inside the arg-th results.jsonl write
        original = mnas.search.loop.Search._append

        def append(self, rec):
            calls["n"] += 1
            if calls["n"] == int(arg):
                line = (rec.to_json() + "\n").encode()
                with open(self.run_dir / RESULTS, "ab") as f:
                    f.write(line[: len(line) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            original(self, rec)

        mnas.search.loop.Search._append = append
    if kind == "checkpoint":  # SIGKILL inside the arg-th checkpoint write
        original_save = torch.save

        def save(obj, path, *a, **k):
            calls["n"] += 1
            if calls["n"] == int(arg):
                buf = io.BytesIO()
                original_save(obj, buf)
                die_halfway(buf.getvalue(), Path(path))
            original_save(obj, path, *a, **k)

        mnas.search.loop.torch.save = save
    if kind in ("hang", "nan"):
        ex = search.evaluator.executor
        search.evaluator.executor = SwapFn(ex, hang_or_train)
    if kind == "killworker":
        threading.Thread(target=kill_one_worker, args=(search, arg), daemon=True).start()
    try:
        search.run()
    finally:
        search.evaluator.close()


class SwapFn:
    """An executor that runs ``fn`` in place of the function it is given."""

    def __init__(self, inner, fn) -> None:
        self.inner, self.fn = inner, fn

    def map(self, fn, tasks, on_result, timeout_s=None):
        return self.inner.map(self.fn, tasks, on_result, timeout_s=timeout_s)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def kill_one_worker(search, executor: str) -> None:
    """SIGKILL one worker process while it trains a child of step 1."""
    while search.step < 1:
        time.sleep(0.01)
    while True:
        pid = None
        if executor == "pool":
            pool = search.evaluator.executor._pool
            busy = [w for w in pool if w.task is not None and w.started is not None]
            pid = busy[0].process.pid if busy else None
        else:
            for proc in Path("/proc").iterdir():
                try:
                    if proc.name.isdigit() and b"ray::_ray_run" in (proc / "cmdline").read_bytes():
                        pid = int(proc.name)
                        break
                except OSError:
                    continue
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            print(f"killed worker {pid} at step {search.step}", flush=True)
            return
        time.sleep(0.01)


# ---------------------------------------------------------------- main


def print_tables(rows: list[Row], inputs: list[tuple[str, int, str]]) -> None:
    def yn(x):
        return "n/a" if x is None else ("yes" if x is True else "no" if x is False else str(x))

    if rows:
        print("\n| fault | survived | lost | equal to uninterrupted | what happened |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r.fault} | {yn(r.survived)} | {yn(r.lost)} | {yn(r.equal)} | {r.note} |")
        print(
            f"\n{sum(r.survived for r in rows)}/{len(rows)} survived; "
            f"{sum(r.lost or 0 for r in rows)} records lost; "
            f"{sum(r.equal is True for r in rows)}/{sum(r.equal is not None for r in rows)} "
            "equal to the uninterrupted run"
        )
    if inputs:
        print_input_table(inputs)


class Rows(list):
    """The fault rows, each printed as it is added (a long run's partial table survives)."""

    def append(self, row: Row) -> None:
        super().append(row)
        print(
            f"  row: {row.fault} | survived {row.survived} | lost {row.lost} | "
            f"equal {row.equal} | {row.note}",
            flush=True,
        )

    def __iadd__(self, rows):
        for row in rows:
            self.append(row)
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="random SIGKILLs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs")
    parser.add_argument(
        "--reference", type=Path, default=None, help="an uninterrupted run made by this script"
    )
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument(
        "--only", default="kills,writes,files,children,workers,cache,inputs", help="sections"
    )
    parser.add_argument("--inner", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        fault, run_dir, *extra = args.inner
        _inner(fault, Path(run_dir), extra)
        return
    only = set(args.only.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="mnas-faults-"))
    print(f"runs in {work}", flush=True)
    if args.reference:
        ref = args.reference
        ready, duration = json.loads((ref / "timing.json").read_text()).values()
    else:
        ref, ready, duration = reference(work)
        (ref / "timing.json").write_text(json.dumps({"ready": ready, "duration": duration}))
    print(f"reference: {len(records(ref))} records, {duration:.1f}s (run.json at {ready:.1f}s)")
    rows = Rows()
    if "kills" in only:
        rows += random_kills(work, ref, ready, duration, args.kills, args.seed)
    if "writes" in only:
        rows.append(kill_inside(work, ref, "append:3", "SIGKILL inside a results.jsonl write"))
        rows.append(kill_inside(work, ref, "checkpoint:2", "SIGKILL inside a checkpoint write"))
    if "files" in only:
        rows.append(truncated_checkpoint(work, ref))
        rows.append(damaged_results(work, ref))
    if "children" in only:
        limit = "executor.child_timeout_s=30"
        pool = ["executor=pool", "executor.workers=2"]
        rows.append(changed_child(work, ref, "child hangs (serial)", "hang", "timeout", [limit]))
        rows.append(
            changed_child(work, ref, "child hangs (pool)", "hang", "timeout", [limit, *pool])
        )
        if not args.skip_ray:
            rows.append(
                changed_child(
                    work, ref, "child hangs (ray)", "hang", "timeout", [limit, "executor=ray"]
                )
            )
        rows.append(changed_child(work, ref, "child loss goes NaN", "nan", "diverged", []))
    if "workers" in only:
        rows.append(killed_worker(work, ref, "pool"))
        if not args.skip_ray:
            rows.append(killed_worker(work, ref, "ray"))
    if "cache" in only:
        rows.append(bad_cache(work, "corrupted"))
        rows.append(bad_cache(work, "locked"))
    inputs = bad_inputs(ref, work, TINY, search_cmd, run) if "inputs" in only else []
    print_tables(rows, inputs)


if __name__ == "__main__":
    main()
