"""Taking work off the queue. Pure helpers, so the writer's loop can be tested without threads."""

from __future__ import annotations

from collections import deque
from typing import Any


def take(queue: deque[Any], max_items: int, items: list[Any]) -> list[Any]:
    """Pop up to ``max_items`` events (tuples) into ``items``; return the markers (non-tuples) met.

    Stops right after a marker, so a flush marker is answered once exactly the events before it are
    written. Events go into the caller's list as they are popped, so a closer at a deadline can see
    every event the writer holds. ``popleft`` is atomic, so callers may append while this runs.
    """
    markers: list[Any] = []
    pop = queue.popleft
    append = items.append
    while len(items) < max_items:
        try:
            item = pop()
        except IndexError:
            break
        if type(item) is tuple:
            append(item)
        else:
            markers.append(item)
            break
    return markers
