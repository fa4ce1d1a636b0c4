"""Property: any text without lone surrogates, and any JSON payload, reads back exactly from both back-ends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.events import LIMITS

# Any code point but the surrogates (which cannot be encoded as UTF-8 on their own).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=20,
)


@pytest.fixture(scope="module", params=["sqlite", "mysql"])
def open_logger(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[EventLogger, Database, str]]:
    table = f"rt_{uuid.uuid4().hex[:12]}"
    folder: Path = tmp_path_factory.mktemp("roundtrip")
    dsn = f"sqlite:///{folder / 'rt.db'}" if request.param == "sqlite" else request.getfixturevalue("mysql_dsn")
    log = EventLogger(dsn, table=table, spool_dir=str(folder / "spool"), strict=True)
    db = Database(dsn)
    yield log, db, table
    log.close()
    if request.param == "mysql":
        db.execute(f"DROP TABLE {db.name(table)}")
    db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=TEXT.filter(bool).map(lambda s: s[: LIMITS["batch_id"]]), stage=TEXT.map(lambda s: s[:64]),
       file_name=TEXT, message=TEXT, gpu=TEXT.map(lambda s: s[:64]), payload=JSON)
def test_text_and_payload_round_trip(open_logger: tuple[EventLogger, Database, str], batch: str, stage: str,
                                     file_name: str, message: str, gpu: str, payload: Any) -> None:
    log, db, table = open_logger
    key = uuid.uuid4().hex  # strict mode: nothing may be coerced, so any change is a failure below
    log.file_error(batch, stage, file_name, message, gpu, payload={"key": key, "value": payload})
    assert log.flush(10)
    rows = db.fetchall(f"SELECT batchId, stage, fileName, message, gpuIp, metadata FROM {db.name(table)} "
                       "WHERE JSON_EXTRACT(metadata, '$.payload.key') = %s", (key,))
    assert len(rows) == 1
    got_batch, got_stage, got_file, got_message, got_gpu, metadata = rows[0]
    assert (got_batch, got_stage, got_file, got_message, got_gpu) == (batch, stage, file_name, message, gpu)
    assert json.loads(metadata)["payload"]["value"] == payload
