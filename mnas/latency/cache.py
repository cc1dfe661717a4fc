"""A persistent latency cache in SQLite, safe with several processes writing at once.

Write-ahead logging lets readers proceed while one writer commits, and the busy timeout
makes a second writer wait for the lock instead of failing. Every call opens its own
short-lived connection, and nothing is opened (nor ``~`` expanded) before the first call,
so a cache object can cross ``fork`` and pickling boundaries, and another machine (a
latency device) opens the file under its own home folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass

from mnas.latency.stats import LatencyStats

log = logging.getLogger(__name__)

# Where the search, retraining and ``python -m mnas latency`` keep measurements and the
# drift-correction nominal unless told otherwise: one file, so all three share one scale.
DEFAULT_CACHE_PATH = "~/.cache/mnas/latency.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    key TEXT PRIMARY KEY,
    arch_hash TEXT NOT NULL,
    blocks TEXT NOT NULL,
    fields TEXT NOT NULL,
    stats TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nominal (
    key TEXT PRIMARY KEY,
    ms REAL NOT NULL,
    created REAL NOT NULL,
    load REAL
)
"""


@dataclass(frozen=True)
class Nominal:
    """A reference network's nominal median: the unit of drift-corrected figures.

    Attributes:
        ms: the median.
        created: when it was timed (seconds since the epoch); None if it was given.
        load: the machine's 1-minute load average then (None where unknown).
    """

    ms: float
    created: float | None
    load: float | None = None


def cache_key(fields: Mapping[str, object]) -> str:
    """SHA-256 of the canonical JSON of everything that identifies one measurement."""
    text = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LatencyCache:
    """Measured latencies keyed by :func:`cache_key` of (architecture, setup, machine).

    Every method raises ``sqlite3.Error`` or ``OSError`` when the file cannot be used;
    :class:`mnas.latency.OrtLatency` turns that into a miss with a warning.

    Args:
        path: the SQLite file, ``~`` allowed; expanded, and its folder created, by the
            process that first uses it.
        timeout_s: how long a writer waits for another process's lock.
    """

    def __init__(self, path: str | os.PathLike, timeout_s: float = 10.0) -> None:
        self.path = os.fspath(path)
        self.timeout_s = timeout_s
        self._ready_in: int | None = None

    def __getstate__(self) -> dict:
        # the copy's process has not created the schema (it may be another machine)
        return {**self.__dict__, "_ready_in": None}

    @property
    def file(self) -> str:
        """The path with ``~`` expanded in this process."""
        return os.path.expanduser(self.path)

    def _connect(self) -> sqlite3.Connection:
        if self._ready_in != os.getpid():
            os.makedirs(os.path.dirname(os.path.abspath(self.file)), exist_ok=True)
        conn = sqlite3.connect(self.file, timeout=self.timeout_s)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            if self._ready_in != os.getpid():
                conn.execute("PRAGMA journal_mode=WAL")
                with conn:
                    conn.executescript(_SCHEMA)
                self._ready_in = os.getpid()
        except BaseException:
            conn.close()
            raise
        return conn

    def get(self, key: str) -> LatencyStats | None:
        conn = self._connect()
        try:
            row = conn.execute("SELECT stats FROM latency WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        try:
            return LatencyStats.from_dict(json.loads(row[0]))
        except (KeyError, TypeError, ValueError) as e:
            log.warning("ignoring unreadable cache row %s in %s: %s", key[:12], self.path, e)
            return None

    def put(
        self,
        key: str,
        arch_hash: str,
        blocks: str,
        fields: Mapping[str, object],
        stats: LatencyStats,
    ) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        arch_hash,
                        blocks,
                        json.dumps(dict(fields), sort_keys=True),
                        json.dumps(stats.to_dict()),
                        time.time(),
                    ),
                )
        finally:
            conn.close()

    def get_nominal(self, key: str) -> Nominal | None:
        """The nominal stored under ``key``, if any."""
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT ms, created, load FROM nominal WHERE key = ?", (key,)
            ).fetchone()
        finally:
            conn.close()
        return None if row is None else Nominal(float(row[0]), row[1], row[2])

    def put_nominal(self, key: str, nominal: Nominal, replace: bool = False) -> Nominal:
        """Store a nominal unless another process stored one first (or, with ``replace``,
        in any case); returns the one now stored, so that every process uses the same."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    f"{verb} INTO nominal VALUES (?, ?, ?, ?)",
                    (key, nominal.ms, nominal.created, nominal.load),
                )
        finally:
            conn.close()
        return self.get_nominal(key)

    def __len__(self) -> int:
        conn = self._connect()
        try:
            return int(conn.execute("SELECT COUNT(*) FROM latency").fetchone()[0])
        finally:
            conn.close()
