"""The read-only query layer that the report and the dashboard share: a batch's figures from
batchExecutionLog alone, on MySQL/MariaDB and SQLite."""

from .lookups import errors_since, event, newest_batch, recent_batches
from .reader import Reader
from .times import duration, iso
from .views import BatchViews

__all__ = ["BatchViews", "Reader", "duration", "errors_since", "event", "iso", "newest_batch", "recent_batches"]
