"""Normalization: what a call becomes as a row, and how bad input is coerced (or refused in strict mode)."""

from __future__ import annotations

import enum
import math
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cofi_eventlog.events import LIMITS, MAX_METADATA_BYTES, Coercion, EventIds, Raw, normalize


def raw(**fields: Any) -> Raw:
    base: dict[str, Any] = dict(etype="error", batch="b-1", stage="lid", file="a.wav", message="boom",
                                gpu="10.0.0.12", processed=None, total=None, payload=None, metadata=None,
                                ns=1_700_000_000_123_456_789, seq=7)
    base.update(fields)
    return tuple(base.values())  # type: ignore[return-value]


def norm(**fields: Any) -> tuple[tuple[Any, ...], list[Coercion], dict[str, Any]]:
    row, notes = normalize(raw(**fields), EventIds())
    return row, notes, orjson.loads(row[9]) if row[9] else {}


def test_plain_event_has_no_coercion_and_keeps_call_time() -> None:
    row, notes, _meta = norm()
    assert notes == []
    assert row[1:9] == ("b-1", "lid", "error", "a.wav", "boom", "10.0.0.12", None, None)
    assert row[9] is None
    assert row[10] == 1_700_000_000_123_456  # microseconds of the call


def test_event_ids_are_16_bytes_time_ordered_and_repeatable() -> None:
    ids = EventIds()
    a = ids.make(1_000, 1)
    b = ids.make(2_000, 0)
    assert len(a) == 16 and a < b
    assert ids.make(1_000, 1) == a  # the same call normalized twice gets the same id
    assert EventIds().make(1_000, 1) != a  # another logger or process draws another node


def test_int_batch_id_is_stored_as_text() -> None:
    row, notes, _ = norm(batch=42)
    assert row[1] == "42" and notes == []


@pytest.mark.parametrize("batch", [None, ""])
def test_missing_batch_id_is_recorded_as_unknown_and_counted(batch: Any) -> None:
    row, notes, meta = norm(batch=batch)
    assert row[1] == "unknown"
    assert [n.argument for n in notes] == ["batch_id"]
    assert meta["coerced"] and "batch_id" in meta["coerced"][0]


def test_exception_keeps_type_and_short_traceback() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        error = exc
    row, notes, meta = norm(message=error)
    assert row[5] == "'missing'"
    assert meta["error_type"] == "KeyError"
    assert "test_exception_keeps_type_and_short_traceback" in meta["traceback"]
    assert notes == []


def test_exception_with_empty_text_uses_its_type_name() -> None:
    row, _, meta = norm(message=TimeoutError())
    assert row[5] == "TimeoutError"
    assert meta["error_type"] == "TimeoutError"


def test_payload_is_stored_under_payload_key() -> None:
    _, notes, meta = norm(payload={"lang": "de", "scores": [0.5, 1], "none": None})
    assert notes == []
    assert meta == {"payload": {"lang": "de", "scores": [0.5, 1], "none": None}}


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_non_json_payload_is_coerced_and_every_change_noted() -> None:
    cyclic: dict[str, Any] = {"name": "x"}
    cyclic["self"] = cyclic
    payload = {"nan": math.nan, "inf": -math.inf, "raw": b"\xff\x00", "text": b"ok", "set": {3, 1},
               "obj": Opaque(), "broken": BrokenRepr(), 5: "int key", "cycle": cyclic, "big": 1 << 80}
    _row, notes, meta = norm(payload=payload)
    got = meta["payload"]
    assert got["nan"] == "nan" and got["inf"] == "-inf"
    assert got["raw"] == "hex:ff00" and got["text"] == "ok"
    assert got["set"] == [1, 3]
    assert got["obj"] == "<Opaque thing>"
    assert "failing repr" in got["broken"]
    assert got["5"] == "int key"
    assert got["cycle"]["self"] == "…[cycle]"
    assert got["big"] == str(1 << 80)
    assert len(notes) == len(meta["coerced"]) >= 10


def test_lone_surrogate_is_replaced_and_counted() -> None:
    row, notes, _ = norm(message="a\ud800b", file="f\udfff.wav")
    assert row[5] == "a\ufffdb" and row[4] == "f\ufffd.wav"
    assert {n.argument for n in notes} == {"message", "file_name"}


def test_ten_megabyte_message_is_bounded_with_a_visible_marker() -> None:
    row, notes, meta = norm(message="x" * 10_000_000)
    assert len(row[5]) == LIMITS["message"]
    assert row[5].endswith(f"…[truncated {10_000_000 - LIMITS['message']} chars]")
    assert notes[0].argument == "message"
    assert "truncated" in meta["coerced"][0]


def test_huge_payload_is_bounded() -> None:
    row, _notes, meta = norm(payload={"blob": "y" * (3 * MAX_METADATA_BYTES)})
    assert len(row[9].encode()) <= MAX_METADATA_BYTES + 4096
    assert "truncated" in meta
    assert any("truncated" in c for c in meta["coerced"])


def test_counts_are_checked() -> None:
    row, notes, _ = norm(etype="progress", processed="12", total=3.5)
    assert row[7] == 12 and row[8] is None
    assert [n.argument for n in notes] == ["processed", "total"]


@pytest.mark.parametrize(("field", "value", "error", "argument"), [
    ("batch", None, ValueError, "batch_id"),
    ("batch", 3.5, TypeError, "batch_id"),
    ("stage", ["lid"], TypeError, "stage"),
    ("message", "a\ud800", ValueError, "message"),
    ("message", "m" * 70_000, ValueError, "message"),
    ("payload", {"x": math.nan}, ValueError, "metadata.payload.x"),
    ("payload", {"x": object()}, ValueError, "metadata.payload.x"),
    ("processed", "many", TypeError, "processed"),
])
def test_strict_mode_names_the_bad_argument(field: str, value: Any, error: type[Exception], argument: str) -> None:
    _, notes, _ = norm(**{field: value})
    assert notes, "the bad input must be noticed"
    raised = notes[0].as_error()
    assert isinstance(raised, error)
    assert str(raised).startswith(argument)


def test_a_live_event_id_never_carries_the_mark_of_a_migrated_one() -> None:
    """Without the rule, 200,000 loggers would draw the mark about three times."""
    from cofi_eventlog.events import MIGRATED_MARK

    assert not any(EventIds().make(1, 1)[8:10] == MIGRATED_MARK for _ in range(200_000))


class Half(float):
    pass


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_well_known_types_become_their_natural_json_each_change_noted() -> None:
    payload = {"price": Decimal("1.10"), "exact": Decimal("1.2345678901234567890123"), "count": Decimal("10"),
               "nan": Decimal("NaN"), "path": PurePosixPath("/data/a.wav"), "id": uuid.UUID(int=5),
               "colour": Colour.RED, "level": Level.HIGH, "took": timedelta(minutes=1, microseconds=500),
               "half": Half(0.5)}
    _, notes, meta = norm(payload=payload)
    assert meta["payload"] == {"price": 1.1, "exact": "1.2345678901234567890123", "count": 10, "nan": "NaN",
                               "path": "/data/a.wav", "id": "00000000-0000-0000-0000-000000000005",
                               "colour": "red", "level": 3, "took": 60.0005, "half": 0.5}
    noted = {n.argument.rsplit(".", 1)[1] for n in notes}
    assert noted == {"price", "exact", "count", "nan", "path", "took", "half"}  # uuid and enum as orjson has them
    assert len(meta["coerced"]) == len(notes)


def test_uuid_and_enum_alone_are_no_coercion() -> None:
    _, notes, meta = norm(payload={"id": uuid.UUID(int=1), "colour": Colour.RED}, metadata={"level": Level.HIGH})
    assert notes == [] and "coerced" not in meta
    assert meta == {"level": 3, "payload": {"id": "00000000-0000-0000-0000-000000000001", "colour": "red"}}


def test_numpy_arrays_and_scalars_become_lists_and_numbers() -> None:
    payload = {"arr": np.arange(3), "grid": np.ones((2, 2)), "f64": np.float64(0.25), "i64": np.int64(-7),
               "u64": np.uint64(2**64 - 1), "flag": np.bool_(True), "long": np.longdouble("0.1"),
               "objects": np.array([Decimal("2.5"), None], dtype=object)}
    _, notes, meta = norm(payload=payload)
    assert meta["payload"] == {"arr": [0, 1, 2], "grid": [[1.0, 1.0], [1.0, 1.0]], "f64": 0.25, "i64": -7,
                               "u64": 2**64 - 1, "flag": True, "long": str(np.longdouble("0.1")),
                               "objects": [2.5, None]}
    assert len(notes) == 9  # one per value, and the Decimal inside the object array
    _, notes, meta = norm(payload=np.arange(4), metadata={"scores": np.array([0.5])})
    assert meta == {"scores": [0.5], "payload": [0, 1, 2, 3],
                    "coerced": ["metadata.scores: ndarray stored as a list",
                                "metadata.payload: ndarray stored as a list"]}


def test_a_payload_cut_for_size_keeps_the_error() -> None:
    try:
        raise KeyError("lang")
    except KeyError as exc:
        error = exc
    row, _, meta = norm(message=error, payload={"blob": "y" * (3 * MAX_METADATA_BYTES)},
                        metadata={"n": Decimal("1.5")})
    assert len(row[9].encode()) <= MAX_METADATA_BYTES + 4096
    assert meta["error_type"] == "KeyError" and "raise KeyError" in meta["traceback"]
    assert meta["truncated"].startswith('{"n":1.5,"payload":{"blob":"yyy')
    assert meta["coerced"][0] == "metadata.n: Decimal stored as a number"  # notes before the cut are kept
    assert "truncated to" in meta["coerced"][-1]
    assert row[5] == "'lang'"


def test_an_exception_of_the_main_script_has_one_name_in_every_process() -> None:
    names = set()
    for module in ("__main__", "__mp_main__"):
        kind = type("StageFailed", (Exception,), {"__module__": module})
        names.add(norm(message=kind("x"))[2]["error_type"])
    assert names == {"__main__.StageFailed"}


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.one_of(st.decimals(), st.integers(), st.floats(), st.text(max_size=5),
                              st.builds(np.float64, st.floats()), st.builds(np.int32, st.integers(-2**31, 2**31 - 1)),
                              st.builds(timedelta, seconds=st.integers(-10**6, 10**6)),
                              st.builds(np.array, st.lists(st.integers(-2**60, 2**60), max_size=3))),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner,
                                                                                          max_size=3)),
                    max_leaves=10))
def test_any_mix_of_known_types_stores_as_json_with_every_change_noted(payload: Any) -> None:
    row, notes, meta = norm(payload=payload)
    assert row[9] is not None and "payload" in meta
    stored = orjson.dumps(meta["payload"])  # plain JSON, no repr anywhere
    assert b"Decimal(" not in stored and b"array(" not in stored and b"timedelta(" not in stored
    assert len(notes) == len(meta.get("coerced", []))
