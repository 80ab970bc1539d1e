"""Running blocking core calls in a generator worker that yields their progress.

``segment_volume`` and ``train`` report progress through callbacks. ``reporting`` runs
such a call in a helper thread and turns the reports into yields of a generator, which
napari's ``thread_worker`` runs off the GUI thread (as napari-n2v/careamics do for Keras
training). The generator never raises: it returns an ``Outcome`` so that the widgets show
one readable message instead of napari's traceback notification.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from ..core.errors import Cancelled

DONE = "done"
CANCELLED = "cancelled"
ERROR = "error"

_END = object()


@dataclass
class Outcome:
    status: str
    value: Any = None
    error: BaseException | None = None


def reporting(
    target: Callable[[Callable[[Any], None]], Any], stop_event: threading.Event
) -> Generator[Any, None, Outcome]:
    """Yield what ``target(report)`` reports while it runs in another thread.

    Returns an Outcome: DONE with target's value, CANCELLED when it raised ``Cancelled``
    or ``stop_event`` was set and target returned None, ERROR with the exception.
    """
    q: queue.SimpleQueue = queue.SimpleQueue()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = target(q.put)
        except BaseException as exc:  # noqa: BLE001 - handed over to the GUI thread
            box["error"] = exc
        finally:
            q.put(_END)

    thread = threading.Thread(target=run, name="napari-lgg-seg-task", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            yield item
    finally:  # also when the worker is quit and the generator closed
        if thread.is_alive():
            stop_event.set()
            thread.join()
    err = box.get("error")
    if isinstance(err, Cancelled):
        return Outcome(CANCELLED, error=err)
    if err is not None:
        return Outcome(ERROR, error=err)
    return Outcome(DONE, box.get("value"))
