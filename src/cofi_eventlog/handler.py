"""EventLogHandler: stdlib logging records that name a batch become pipeline events.

    log.error("LID failed on %s", name, exc_info=True,
              extra={"batch_id": batch, "stage": "lid", "file_name": name, "gpu_ip": gpu})

ERROR and above become 'error' events. With an exception, the message is the exception's text, its
type and traceback are kept as ``EventLogger.file_error`` keeps them, and the record's own text goes
to ``metadata["log_message"]``. Lower levels become the event named by ``extra={"event": ...}``
(file_start, file_complete, progress, stage_start, stage_complete, batch_start, batch_complete), or
'progress' when none is named; the record's message goes to ``metadata["message"]``. Every event
keeps the record's ``stage``, ``file_name`` and ``gpu_ip``, and its ``payload`` goes where
``file_error(payload=...)`` puts it: ``metadata["payload"]``. Records without a ``batch_id`` are not
events and are passed over.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .engine.diagnostics import in_diagnostics
from .logger import EventLogger

OWN_LOGGER = "cofi_eventlog"


class EventLogHandler(logging.Handler):
    """Turns records into events on ``logger`` (default: the process-wide EventLogger).

    It never raises: a failure goes to ``handleError`` like any handler's, and is counted in ``failed``.
    The library's own warnings (the ``cofi_eventlog`` logger, or anything emitted while it warns) are
    passed over, so a database outage can never feed itself.
    """

    def __init__(self, logger: EventLogger | None = None, level: int = logging.NOTSET, *,
                 flush_timeout: float = 5.0) -> None:
        super().__init__(level)
        self.logger = logger
        self.flush_timeout = flush_timeout
        self.emitted = 0
        self.skipped = 0
        self.failed = 0
        self._busy = threading.local()

    def _target(self) -> EventLogger:
        return self.logger if self.logger is not None else EventLogger.default()

    def handle(self, record: logging.LogRecord) -> bool:
        """Skip our own diagnostics before filters, formatting or the handler lock are touched."""
        if in_diagnostics() or record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + "."):
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "active", False):  # logging from inside our own emit: never loop
            return
        self._busy.active = True
        try:
            if self._send(record):
                self.emitted += 1
            else:
                self.skipped += 1
        except Exception:
            self.failed += 1
            self.handleError(record)
        finally:
            self._busy.active = False

    def _send(self, record: logging.LogRecord) -> bool:
        fields: dict[str, Any] = record.__dict__
        batch = fields.get("batch_id")
        if batch is None:
            return False
        # whatever the record carries goes through as given: the logger coerces and counts bad values
        where: dict[str, Any] = {"stage": fields.get("stage"), "file_name": fields.get("file_name"),
                                 "gpu_ip": fields.get("gpu_ip"), "payload": fields.get("payload")}
        metadata: dict[str, Any] = {"level": record.levelname, "logger": record.name}
        extra_metadata = fields.get("metadata")
        if isinstance(extra_metadata, dict):
            metadata.update(extra_metadata)
        elif extra_metadata is not None:
            metadata["metadata"] = extra_metadata
        log = self._target()
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            error = record.exc_info[1] if record.exc_info else None
            if error is not None and text and text != _text_of(error):  # keep the record's own text too
                metadata["log_message"] = text
            log.event("error", batch, message=text if error is None else error, metadata=metadata, **where)
            return True
        metadata["message"] = text
        log.event(fields.get("event") or "progress", batch, processed=fields.get("processed"),
                  total=fields.get("total"), metadata=metadata, **where)
        return True

    def flush(self) -> None:
        """Wait, up to ``flush_timeout``, for what this process logged to reach the database."""
        try:
            if self.logger is not None or EventLogger._default is not None:
                self._target().flush(self.flush_timeout)
        except Exception:  # flush runs at interpreter exit too; it must not raise there
            pass


def _text_of(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # a broken __str__ must not lose the event
        return ""
