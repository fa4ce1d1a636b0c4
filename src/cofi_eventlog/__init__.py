"""cofi-eventlog: a buffered event logger for batch pipelines, writing to ``batchExecutionLog``."""

from .engine.lifecycle import close_all
from .handler import EventLogHandler
from .logger import EventLogger, PreflightError
from .sinks import SinkError

__version__ = "0.1.0"

__all__ = ["EventLogHandler", "EventLogger", "PreflightError", "SinkError", "__version__", "close_all"]
