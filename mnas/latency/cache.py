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

from mnas.latency.stats import LatencyStats

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    key TEXT PRIMARY KEY,
    arch_hash TEXT NOT NULL,
    blocks TEXT NOT NULL,
    fields TEXT NOT NULL,
    stats TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reference (
    key TEXT PRIMARY KEY,
    ms REAL NOT NULL,
    created REAL NOT NULL
)
"""


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

    def get_reference(self, key: str) -> float | None:
        """The nominal latency of a reference network stored under ``key``, if any."""
        conn = self._connect()
        try:
            row = conn.execute("SELECT ms FROM reference WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        return None if row is None else float(row[0])

    def put_reference(self, key: str, ms: float) -> float:
        """Store a nominal latency unless another process stored one first; returns the
        value that is now stored, so that every process uses the same one."""
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    "INSERT OR IGNORE INTO reference VALUES (?, ?, ?)", (key, ms, time.time())
                )
            return float(
                conn.execute("SELECT ms FROM reference WHERE key = ?", (key,)).fetchone()[0]
            )
        finally:
            conn.close()

    def __len__(self) -> int:
        conn = self._connect()
        try:
            return int(conn.execute("SELECT COUNT(*) FROM latency").fetchone()[0])
        finally:
            conn.close()
