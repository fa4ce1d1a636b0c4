"""The read-only query layer that the report and the dashboard share: a batch's figures from
batchExecutionLog alone, on MySQL/MariaDB and SQLite."""

from .failed import as_csv, failed_files
from .lookups import errors_since, event, newest_batch, recent_batches
from .reader import Reader
from .times import duration, iso
from .views import BatchViews

__all__ = ["BatchViews", "Reader", "as_csv", "duration", "errors_since", "event", "failed_files", "iso", "newest_batch",
           "recent_batches"]
