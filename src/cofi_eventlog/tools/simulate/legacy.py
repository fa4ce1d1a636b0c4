"""Dual logging as pipelines did it before this library: the retired ``processing_logs`` table, the
``ProcessingLogRepo`` that wrote it, and the unbuffered event log beside it. It lives only here, in the
simulation (and as the source side of ``migrate``), never in the library's API."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from ...database import DEFAULT_TABLE, Database

LEGACY_TABLE = "processing_logs"


def processing_logs_ddl(dialect: str, table: str = "processing_logs") -> str:
    """The legacy table as the removed ProcessingLogRepo wrote it."""
    if dialect == "mysql":
        return f"""CREATE TABLE IF NOT EXISTS `{table}` (
  `id` INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  `call_id` VARCHAR(255) NOT NULL,
  `batch_id` VARCHAR(64) NOT NULL,
  `stage_name` VARCHAR(64) NOT NULL,
  `status` VARCHAR(32) NOT NULL,
  `error_message` TEXT NULL,
  `input_payload` LONGTEXT NULL,
  `created_at` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  KEY `idx_batch` (`batch_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
    return f"""CREATE TABLE IF NOT EXISTS "{table}" (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  call_id TEXT NOT NULL,
  batch_id TEXT NOT NULL,
  stage_name TEXT NOT NULL,
  status TEXT NOT NULL,
  error_message TEXT,
  input_payload TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
)"""


class ProcessingLogRepo:
    """The removed repository: every call is one single-row INSERT and a COMMIT, on the caller's thread."""

    def __init__(self, db: Database, table: str = LEGACY_TABLE) -> None:
        self.db = db
        self._sql = (f"INSERT INTO {db.name(table)} (call_id, batch_id, stage_name, status, error_message, "
                     "input_payload) VALUES (%s, %s, %s, %s, %s, %s)")

    def log_started(self, call_id: str, batch_id: str, stage_name: str) -> None:
        self._insert(call_id, batch_id, stage_name, "started", None, None)

    def log_success(self, call_id: str, batch_id: str, stage_name: str, input_payload: str | None = None) -> None:
        self._insert(call_id, batch_id, stage_name, "success", None, input_payload)

    def log_failure(self, call_id: str, batch_id: str, stage_name: str, error_message: str,
                    input_payload: str | None = None) -> None:
        self._insert(call_id, batch_id, stage_name, "failure", error_message, input_payload)

    def _insert(self, call_id: str, batch_id: str, stage_name: str, status: str, error_message: str | None,
                input_payload: str | None) -> None:
        self.db.execute(self._sql, (call_id, batch_id, stage_name, status, error_message, input_payload))
        self.db.conn.commit()


class UnbufferedEventLog:
    """The event log before buffering: one single-row INSERT into ``batchExecutionLog`` per call."""

    def __init__(self, db: Database, table: str = DEFAULT_TABLE) -> None:
        self.db = db
        self._sql = (f"INSERT INTO {db.name(table)} (eventId, batchId, stage, eventType, fileName, message, gpuIp, "
                     "processed, total, metadata, createdAt) VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, NULL, NULL, %s)")

    def write(self, event_type: str, batch_id: str, stage: str, file_name: str, message: str | None,
              gpu_ip: str | None) -> None:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        self.db.execute(self._sql, (uuid.uuid4().bytes, batch_id, stage, event_type, file_name, message, gpu_ip,
                                    now))


class DualLog:
    """The call sites before the migration: each event goes to ``processing_logs`` and to the event log.

    Its methods take the same arguments as EventLogger's, so the simulated pipeline drives either."""

    def __init__(self, repo: ProcessingLogRepo, events: UnbufferedEventLog) -> None:
        self.repo = repo
        self.events = events

    def file_started(self, batch_id: str, stage: str, file_name: str, gpu_ip: str | None = None) -> None:
        self.repo.log_started(file_name, batch_id, stage)
        self.events.write("file_start", batch_id, stage, file_name, None, gpu_ip)

    def file_completed(self, batch_id: str, stage: str, file_name: str, gpu_ip: str | None = None) -> None:
        self.repo.log_success(file_name, batch_id, stage)
        self.events.write("file_complete", batch_id, stage, file_name, None, gpu_ip)

    def file_error(self, batch_id: str, stage: str, file_name: str, error: str, gpu_ip: str | None = None, *,
                   payload: Any = None) -> None:
        self.repo.log_failure(file_name, batch_id, stage, error, json.dumps(payload))
        self.events.write("error", batch_id, stage, file_name, error, gpu_ip)
