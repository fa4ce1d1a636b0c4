"""cofi-eventlog: a buffered event logger for batch pipelines, writing to ``batchExecutionLog``."""

from .handler import EventLogHandler
from .logger import EventLogger
from .sinks import SinkError

__version__ = "0.1.0"

__all__ = ["EventLogHandler", "EventLogger", "SinkError", "__version__"]
