"""A batch of calls built at once gives exactly the rows the calls get one by one, whatever they hold."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from cofi_eventlog.events import EventIds, normalize
from cofi_eventlog.rows import build_rows

IDS = EventIds()

plain_text = st.text(st.characters(codec="utf-8"), max_size=20)
odd_text = st.one_of(st.text(max_size=20), st.text(min_size=65, max_size=70), st.just("x" * 1025),
                     st.just("\ud800"), st.just(""))
texts = st.one_of(plain_text, plain_text, odd_text, st.none(), st.integers(), st.binary(max_size=4),
                  st.builds(ValueError, plain_text))
counts = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(), st.floats(), st.booleans(),
                   st.just("7"), st.just(np.arange(2)), st.builds(np.int64, st.integers(-9, 9)))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), plain_text),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(plain_text, inner, max_size=3)),
                           max_leaves=8)
def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


documents = st.one_of(st.none(), st.none(), st.just(np.zeros(2)), st.dictionaries(plain_text, json_values, max_size=4),
                      st.dictionaries(st.one_of(plain_text, st.integers()), json_values, max_size=3),
                      st.just({"x": math.nan}), st.just([1, 2]), st.builds(lambda d: {"deep": nested(d)},
                                                                            st.integers(25, 35)))
payloads = st.one_of(st.none(), st.none(), json_values, st.just({1, 2}), st.just(b"\xff"),
                     st.builds(np.array, st.lists(st.integers(-9, 9), max_size=3)), st.decimals(allow_nan=False),
                     st.builds(np.float32, st.floats(width=32)))


@st.composite
def calls(draw: Any) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["error", "file_start", "file_complete", "progress"]))
    return (kind, draw(st.one_of(plain_text, texts)), draw(texts), draw(texts), draw(texts), draw(texts),
            draw(counts), draw(counts), draw(payloads), draw(documents),
            draw(st.integers(0, 2**63)), draw(st.integers(0, 2**40)))


@settings(max_examples=300, deadline=None)
@given(st.lists(calls(), max_size=12))
def test_a_batch_is_the_calls_one_by_one(batch: list[tuple[Any, ...]]) -> None:
    expected = [normalize(call, IDS) for call in batch]  # type: ignore[arg-type]
    rows, coerced = build_rows(batch, IDS)
    assert list(rows) == [row for row, _ in expected]
    assert coerced == sum(bool(notes) for _, notes in expected)


def test_rows_made_on_the_callers_thread_keep_their_place() -> None:
    call = ("file_start", "b", "lid", "a.wav", None, None, None, None, None, None, 1_700_000_000_000_000_000, 1)
    made, _ = normalize((*call[:11], 2), IDS)  # type: ignore[arg-type]
    rows, coerced = build_rows([call, made, call], IDS)
    assert rows[1] is made and rows[0] == rows[2] == normalize(call, IDS)[0] and coerced == 0  # type: ignore[arg-type]


def test_a_plain_batch_with_a_few_odd_calls_among_them() -> None:
    batch = [("file_complete", "b-1", "lid", f"call-{i:05d}.wav", None, "10.0.0.12", i, 1000, None,
              {"duration_s": i / 7, "lang": "en"}, 1_700_000_000_000_000_000 + i, i) for i in range(1000)]
    batch[10] = (*batch[10][:4], KeyError("lang"), *batch[10][5:])  # an exception as the message
    batch[20] = (*batch[20][:9], {"x": math.nan}, *batch[20][10:])  # NaN: stored as text, said
    batch[30] = (*batch[30][:3], "é" * 2000, *batch[30][4:])  # a file name over its bound
    rows, coerced = build_rows(batch, IDS)
    assert list(rows) == [normalize(call, IDS)[0] for call in batch]  # type: ignore[arg-type]
    assert coerced == 2


def test_objects_whose_comparison_raises_cost_only_their_own_coercion() -> None:
    """``array == None`` answers an array, whose truth raises: a batch must never compare values with ``==``."""
    batch = [("file_complete", "b-1", "lid", f"call-{i:05d}.wav", None, None, i, 1000, None, None,
              1_700_000_000_000_000_000 + i, i) for i in range(1000)]
    batch[5] = (*batch[5][:8], np.arange(3), *batch[5][9:])  # the payload
    batch[6] = (*batch[6][:9], np.arange(2), *batch[6][10:])  # metadata that is not a dict
    batch[7] = (*batch[7][:6], np.arange(2), *batch[7][7:])  # a count
    rows, coerced = build_rows(batch, IDS)
    assert len(rows) == 1000 and coerced == 3
    assert orjson.loads(rows[5][9])["payload"] == [0, 1, 2]
    assert orjson.loads(rows[6][9])["metadata"] == [0, 1]
    assert rows[7][7] is None and "processed" in orjson.loads(rows[7][9])["coerced"][0]
    assert [r[9] for i, r in enumerate(rows) if i not in (5, 6, 7)] == [None] * 997


@settings(max_examples=100, deadline=None)
@given(st.lists(calls(), max_size=8))
def test_calls_decoded_from_json_build_as_lists(batch: list[tuple[Any, ...]]) -> None:
    """A call journaled as JSON comes back as a list; it builds as the tuple of its values does."""
    plain = []
    for call in batch:
        try:
            plain.append(orjson.loads(orjson.dumps(call)))
        except TypeError:
            continue
    rows, coerced = build_rows(plain, IDS)
    expected = [normalize(tuple(call), IDS) for call in plain]  # type: ignore[arg-type]
    assert list(rows) == [row for row, _ in expected]
    assert coerced == sum(bool(notes) for _, notes in expected)


def test_decimal_payloads_in_a_batch_are_numbers() -> None:
    batch = [("progress", "b", "lid", None, None, None, 1, 2, {"cost": Decimal("0.30")}, None, 1_000 + i, i)
             for i in range(3)]
    rows, coerced = build_rows(batch, IDS)
    assert coerced == 3 and orjson.loads(rows[0][9])["payload"] == {"cost": 0.3}


class Ambiguous:
    """Like a pandas DataFrame: ``==`` answers another such object, whose truth raises."""

    def __eq__(self, other: object) -> Any:
        return Ambiguous()

    def __bool__(self) -> bool:
        raise ValueError("The truth value of a DataFrame is ambiguous")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "<frame 2x2>"


def test_an_object_whose_truth_raises_in_any_slot_costs_only_its_own_row() -> None:
    batch = [("progress", "b", "lid", None, None, None, i, 10, None, None, 1_000 + i, i) for i in range(10)]
    for slot, index in ((8, 1), (9, 2), (6, 3), (7, 4), (3, 5), (4, 6)):
        batch[index] = (*batch[index][:slot], Ambiguous(), *batch[index][slot + 1:])
    rows, coerced = build_rows(batch, IDS)
    assert len(rows) == 10 and coerced == 6
    assert orjson.loads(rows[1][9])["payload"] == "<frame 2x2>"
    assert [r[9] for r in rows[7:]] == [None] * 3
