"""One task runner for the dock widgets: a blocking core call off the GUI thread.

``segment_volume`` and ``train`` report progress through callbacks. ``reporting`` runs
such a call in a helper thread and turns its reports into yields of a generator, which
napari's ``thread_worker`` runs off the GUI thread (as napari-n2v/careamics do for Keras
training). The generator never raises: it returns a ``Result`` so that the widgets show
one readable message instead of napari's traceback notification.

``TaskRunner`` holds the plumbing every widget needs around that: the worker, the stop
event, napari's progress bar, the widget's own progress bar, and exactly one ``finished``
notification with an ``Outcome``. Reports are small typed records (``Status``,
``Progress`` ...), never tuples.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from psygnal import Signal

from ..core.errors import Cancelled


class Outcome(str, Enum):
    """How a task ended (the value is what the widgets' ``*_finished`` signals emit)."""

    DONE = "done"
    STOPPED = "stopped"  # stopped by the user after something was kept (training)
    CANCELLED = "cancelled"  # stopped before anything was produced
    ERROR = "error"


# --------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class Status:
    """A line of text for the status label."""

    text: str


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps (slices, batches) finished."""

    done: int
    total: int


@dataclass(frozen=True)
class DataRead:
    """Training data was read: how many patients and slices."""

    patients: int
    slices: int


@dataclass(frozen=True)
class TrainBegin:
    """Keras starts fitting: epochs and steps per epoch."""

    epochs: int
    steps: int


@dataclass(frozen=True)
class BatchEnd:
    """A training batch ended (``step`` counts from 1) with running-mean ``logs``."""

    epoch: int
    step: int
    logs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochEnd:
    """An epoch ended with its (train and validation) ``logs``."""

    epoch: int
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    """What the generator returns: how it ended, the target's value or its exception."""

    outcome: Outcome
    value: Any = None
    error: BaseException | None = None


_END = object()
Report = Callable[[Any], None]


def reporting(target: Callable[[Report], Any], stop_event: threading.Event) -> Generator[Any, None, Result]:
    """Yield what ``target(report)`` reports while it runs in another thread.

    Returns a Result: DONE with target's value, CANCELLED when it raised ``Cancelled``,
    ERROR with any other exception.
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
        return Result(Outcome.CANCELLED, error=err)
    if err is not None:
        return Result(Outcome.ERROR, error=err)
    return Result(Outcome.DONE, box.get("value"))


class TaskRunner:
    """Run ``target(report, stop)`` in a napari worker, one task at a time.

    ``on_report(record)`` gets every report (on the GUI thread) until the result is in;
    ``on_result(result) -> Outcome`` gets the Result exactly once and says how the task
    ended for the user; then the runner cleans up and emits ``finished(outcome)``.
    ``progress_bar`` (a QProgressBar) and napari's activity bar follow ``Progress``
    reports, or ``set_progress`` for other records.
    """

    finished = Signal(object)  # Outcome
    running_changed = Signal(bool)

    def __init__(self, progress_bar=None) -> None:
        self.progress_bar = progress_bar
        self.worker = None
        self.stop_event = threading.Event()
        self._bar = None
        self._outcome: Outcome | None = None
        self._on_report: Callable[[Any], None] = lambda record: None
        self._on_result: Callable[[Result], Outcome] = lambda result: result.outcome
        self._gone = False  # the widget was deleted (napari closed): stop, and call it no more
        if progress_bar is not None:
            progress_bar.destroyed.connect(self._widget_gone)

    def _widget_gone(self, *_args) -> None:
        self._gone = True
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return self.worker is not None

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def start(
        self,
        target: Callable[[Report, threading.Event], Any],
        *,
        desc: str,
        total: int,
        on_report: Callable[[Any], None],
        on_result: Callable[[Result], Outcome],
    ):
        """Start the task (``total`` 0: busy until progress is known); returns the worker."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        if self.running:
            raise RuntimeError("a task is already running")
        self.stop_event = stop = threading.Event()
        self._outcome = None
        self._on_report, self._on_result = on_report, on_result
        self._bar = progress(total=total, desc=desc)
        self.set_progress(0, total)
        self.worker = create_worker(reporting, lambda report: target(report, stop), stop, _start_thread=False)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._deliver)
        self.worker.aborted.connect(stop.set)
        self.worker.aborted.connect(lambda: self._deliver(Result(Outcome.CANCELLED)))
        self.worker.errored.connect(lambda exc: self._deliver(Result(Outcome.ERROR, error=exc)))
        self.worker.finished.connect(self._finished)
        self.running_changed.emit(True)
        self.worker.start()
        return self.worker

    def stop(self) -> None:
        """Ask the task to stop after its current step."""
        self.stop_event.set()

    def set_progress(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` (``total`` 0: busy) in both progress bars."""
        if self.progress_bar is not None:
            self.progress_bar.setRange(0, max(total, 0))
            self.progress_bar.setValue(min(done, total) if total else 0)
        if self._bar is not None:  # last: napari's progress may process pending events
            if self._bar.total != total:
                self._bar.total = total
                self._bar.refresh()
            if total:
                self._bar.update(done - self._bar.n)

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Process Qt events until the task ends (for scripts and napari's console).

        Returns the outcome, or None when ``timeout`` seconds passed first.
        """
        from qtpy.QtWidgets import QApplication

        box: list[Outcome] = []
        if not self.running:
            return self._last
        self.finished.connect(box.append)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not box and (deadline is None or time.monotonic() < deadline):
                QApplication.processEvents()
                time.sleep(0.005)
        finally:
            self.finished.disconnect(box.append)
        return box[0] if box else None

    _last: Outcome | None = None

    def _yielded(self, record) -> None:
        if self._outcome is not None or self._gone:  # a late report, or no widget left to show it
            return
        self._on_report(record)
        if isinstance(record, Progress):  # last: napari's progress may process pending events
            self.set_progress(record.done, record.total)

    def _deliver(self, result: Result) -> None:
        if self._outcome is not None:  # aborted and errored may both arrive
            return
        if self._gone:  # nothing left to show it in
            self._outcome = result.outcome
            return
        self._outcome = Outcome.ERROR
        self._outcome = self._on_result(result)

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        outcome = self._outcome or Outcome.ERROR
        self._outcome = None
        self._last = outcome
        if self._gone:  # only wait() is left to tell
            self.finished.emit(outcome)
            return
        if self.progress_bar is not None:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1 if outcome is Outcome.DONE else 0)
        self.running_changed.emit(False)
        self.finished.emit(outcome)
