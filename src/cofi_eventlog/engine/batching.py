"""Taking work off the queue. Pure helpers, so the writer's loop can be tested without threads."""

from __future__ import annotations

from collections import deque
from typing import Any


def take(queue: deque[Any], max_items: int) -> tuple[list[Any], list[Any]]:
    """Pop up to ``max_items`` events (tuples) and every marker (non-tuple) met on the way.

    Stops right after a marker, so a flush marker is answered once exactly the events before it are
    written. ``popleft`` is atomic, so callers may append while this runs.
    """
    items: list[Any] = []
    markers: list[Any] = []
    pop = queue.popleft
    while len(items) < max_items:
        try:
            item = pop()
        except IndexError:
            break
        if type(item) is tuple:
            items.append(item)
        else:
            markers.append(item)
            break
    return items, markers
