"""The seed's "before": the retired ``processing_logs`` table. It lives only here, in the simulation
(and as the source side of ``migrate``), never in the library's API."""

from __future__ import annotations


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
