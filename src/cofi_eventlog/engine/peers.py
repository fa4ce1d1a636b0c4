"""What the host's shared writer (see leadership.py) keeps of the other live processes' journals: which
it watches, whether new ones may have appeared, whether a process asked for a flush, and which it must
stop watching because their process is gone (then they are adopted) or writes them itself now."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .journal import Journal

RECENT = 1_000_000_000  # ns: a folder changed this recently may change again within its mtime's granularity


class Peers:
    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self.key = key
        self.journals: list[Journal] = []
        self._folder_seen = 0  # the folder's mtime at our last look for journals

    def changed(self) -> bool:
        """Whether journals may have appeared in the folder since we last looked (its mtime moved, or is
        too recent to tell a second change from the first)."""
        try:
            seen = os.stat(self.folder).st_mtime_ns
        except OSError:
            return False
        changed = seen != self._folder_seen or time.time_ns() - seen < RECENT
        self._folder_seen = seen
        return changed

    def asked(self) -> bool:
        """Whether a process asked for a flush since we last looked (a new ask only: one we already acted
        on waits for the backoff like everything else)."""
        asked = False
        for journal in self.journals:
            request = journal.flush_request
            if request != journal.seen_request:
                journal.seen_request = request
                asked = True
        return asked

    def sort_out(self) -> list[Journal]:
        """Stop watching the journals whose process is gone (returned, locked by us now: to be adopted)
        or writes them itself now (released)."""
        gone = []
        for journal in list(self.journals):
            if journal.owner_gone():
                self.journals.remove(journal)
                gone.append(journal)
            elif journal.writer != self.key:
                self.journals.remove(journal)
                journal.release(remove=False)
        return gone

    def waiting(self) -> int:
        """Records not yet taken, in all of them."""
        return sum(journal.waiting() for journal in self.journals)

    def release(self) -> None:
        for journal in self.journals:
            journal.release(remove=False)
        self.journals.clear()
