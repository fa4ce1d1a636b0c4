"""Objects that fail while being read, payloads nested past what the server accepts, keys that collide:
every path (the writer, the spool journal, a full queue) keeps the event, coerced and counted."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from conftest import landed, rows_of

from cofi_eventlog import EventLogger
from cofi_eventlog.events import EventIds, normalize


class DetachedRow:
    """An ORM object whose session is gone: any look at it raises."""

    def __repr__(self) -> str:
        raise RuntimeError("DetachedInstanceError: not bound to a Session")

    __str__ = __repr__


class RaisingKeys(dict):  # type: ignore[type-arg]
    def keys(self) -> Any:
        raise RuntimeError("lazy load failed")

    def __iter__(self) -> Any:
        raise RuntimeError("lazy load failed")

    def items(self) -> Any:
        raise RuntimeError("lazy load failed")


class RaisingList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("cursor closed")


def hostile() -> list[Any]:
    return [DetachedRow(), RaisingKeys(a=1), RaisingList([1, 2]), {"row": DetachedRow(), "rows": RaisingList([1])}]


def log_hostile(log: EventLogger, batch: str) -> None:
    for i, payload in enumerate(hostile()):
        log.file_error(batch, "lid", f"p{i}", DetachedRow(), "10.0.0.1", payload=payload)  # type: ignore[arg-type]
        log.file_completed(batch, "lid", f"m{i}", metadata=RaisingKeys(x=1) if i % 2 else payload)
        log.file_started(batch, "lid", f"ok{i}")


@pytest.mark.parametrize("durability", ["memory", "spool"])
def test_objects_that_raise_when_read_cost_nothing_but_a_coercion(
        backend: tuple[str, str], spool_dir: str, durability: str) -> None:
    dsn, table = backend
    with EventLogger(dsn, table=table, spool_dir=spool_dir, durability=durability) as log:
        log_hostile(log, "hostile")  # never raises into the caller
        assert log.flush(30)
        stats = log.stats()
    assert landed(dsn, table) == (12, 12, 12)
    assert stats["dead_lettered"] == 0 and stats["dropped"] == 0 and stats["coerced"] == 8
    for row in rows_of(dsn, table):
        if not str(row["fileName"]).startswith("ok"):
            assert json.loads(str(row["metadata"]))["coerced"], row


def test_a_full_queue_spills_hostile_objects_without_raising(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, max_queue=2, batch_size=1_000_000,
                      flush_interval=3600)
    log_hostile(log, "full")
    stats = log.stats()
    assert stats["dropped"] == 0  # past the queue's 2, through the spool (or the journal): none lost
    assert log.flush(30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (12, 12, 12)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def depth_of(value: Any) -> int:
    return 1 + max((depth_of(v) for v in value), default=0) if isinstance(value, list) else 0


@pytest.mark.parametrize("durability", ["memory", "spool"])
def test_payloads_are_bounded_to_the_nesting_the_server_accepts(
        mysql_dsn: str, mysql_table: str, spool_dir: str, durability: str) -> None:
    """MariaDB's JSON check refuses 32 levels; the metadata object around the payload is one of them."""
    with EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, durability=durability) as log:
        for depth in (29, 30, 31, 40, 100, 300):
            log.file_error("deep", "lid", f"d{depth}", "x", payload=nested(depth))
        assert log.flush(30)
        stats = log.stats()
    assert stats["dead_lettered"] == 0 and stats["coerced"] == 4
    stored = {r["fileName"]: json.loads(str(r["metadata"])) for r in rows_of(mysql_dsn, mysql_table)}
    assert stored["d29"]["payload"] == nested(29) and "coerced" not in stored["d29"]
    assert stored["d30"]["payload"] == nested(30) and "coerced" not in stored["d30"]
    for depth in (31, 40, 100, 300):
        assert depth_of(stored[f"d{depth}"]["payload"]) == 30  # the 31st list is the "…[too deep]" marker
        assert "nested deeper than 31" in stored[f"d{depth}"]["coerced"][0]


def test_strict_mode_refuses_a_payload_too_deep() -> None:
    log = EventLogger("sqlite:///:memory:", strict=True)
    with pytest.raises(ValueError, match="nested deeper"):
        log.file_error("b", "lid", "f", "x", payload=nested(31))
    log.close()


def test_keys_that_collide_once_made_text_are_all_kept_and_noted() -> None:
    row, notes = normalize(("error", "b", "lid", "f", "x", None, None, None, {1: "a", "1": "b", 2: "c"}, None,
                            1_700_000_000_000_000_000, 1), EventIds())
    meta = json.loads(str(row[9]))
    assert meta["payload"] == {"1": "b", "1 (int)": "a", "2": "c"}
    assert any("collides" in n for n in meta["coerced"]) and len(notes) == 3


@pytest.mark.parametrize("durability", ["memory", "spool"])
def test_one_numpy_array_among_a_thousand_events_lands_them_all(
        backend: tuple[str, str], spool_dir: str, durability: str) -> None:
    dsn, table = backend
    with EventLogger(dsn, table=table, spool_dir=spool_dir, durability=durability, batch_size=1000,
                     flush_interval=3600) as log:
        for i in range(1000):
            payload = np.array([[1, 2], [3, 4]]) if i == 500 else ({"cost": Decimal("1.10")} if i == 501 else None)
            log.event("file_complete", "np", "lid", f"f{i:04d}", payload=payload)
        assert log.flush(30)
        stats = log.stats()
    assert landed(dsn, table) == (1000, 1000, 1000)
    assert stats["dropped"] == 0 and stats["dead_lettered"] == 0 and stats["coerced"] == 2
    stored = {r["fileName"]: r["metadata"] for r in rows_of(dsn, table, "WHERE fileName IN ('f0500', 'f0501')")}
    assert json.loads(str(stored["f0500"])) == {"payload": [[1, 2], [3, 4]],
                                                "coerced": ["metadata.payload: ndarray stored as a list"]}
    assert json.loads(str(stored["f0501"]))["payload"] == {"cost": 1.1}
