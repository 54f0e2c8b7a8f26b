"""Training while the person labels: the labelling service keeps the runner's training protocol
(``batchal.training``: the same model and epochs, early stopping) and meets its latency by
training in the background, not by training less.

Each time the labels change, :class:`BackgroundTrainer` is asked for a model of the new labels;
it trains one model at a time, always on the newest labels asked for (requests that arrive
while it trains are merged into one), and keeps the newest finished model. When the person asks
for the next batch, the service selects with the model of the current labels if it is ready;
else it gives the training under way a few seconds of the latency budget to finish, and then
takes the newest finished model (trained on fewer labels; the status says how many), so the
next batch never waits for a full training.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Hashable, Optional


class Stopped(Exception):
    """Raised inside a training by its epoch hook once the trainer is closing."""


class BackgroundTrainer:
    """One training at a time in a daemon thread; ``train(job)`` returns the trained result.
    A training calls :meth:`check` between epochs, which stops it once :meth:`close` was called,
    so that a server shutting down never leaves a thread inside PyTorch."""

    def __init__(self, train: Callable[[Any], Any]):
        self._train = train
        self.closing = False
        self._lock = threading.Condition()
        self._wanted: Optional[tuple[Hashable, Any]] = None  # (key, job) still to train
        self._running: Optional[Hashable] = None
        self._newest: Optional[tuple[Hashable, Any]] = None  # (key, result) of the newest finished training
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[str] = None

    def check(self, *_) -> None:
        """The epoch hook of every background training: stops it once the trainer is closing."""
        if self.closing:
            raise Stopped()

    def close(self, timeout: float = 30) -> None:
        """Stop: no new training starts, the one under way ends at its next epoch; waits for the thread."""
        with self._lock:
            self.closing, self._wanted = True, None
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def request(self, key: Hashable, job: Any) -> None:
        """Train for ``key`` (unless its model is ready or training); supersedes an older request not yet started."""
        with self._lock:
            if self.closing:
                return
            if key == self._running or (self._newest is not None and self._newest[0] == key):
                return
            self._wanted = (key, job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="batchal-background-training")
                self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._wanted is None:
                    self._running = None
                    self._lock.notify_all()
                    return
                key, job = self._wanted
                self._wanted, self._running = None, key
            try:
                result = self._train(job)
            except Stopped:
                result = None
            except Exception as exc:  # shown in the status; the next request tries again
                self.error = f"{type(exc).__name__}: {exc}"
                logging.getLogger(__name__).exception("background training failed")
                result = None
            with self._lock:
                if result is not None:
                    self._newest, self.error = (key, result), None
                self._running = None
                self._lock.notify_all()

    def ready(self, key: Hashable) -> Optional[Any]:
        """The result trained for ``key``, if finished."""
        with self._lock:
            return self._newest[1] if self._newest is not None and self._newest[0] == key else None

    def newest(self) -> Optional[tuple[Hashable, Any]]:
        """(key, result) of the newest finished training, or None."""
        with self._lock:
            return self._newest

    def offer(self, key: Hashable, result: Any) -> None:
        """A result trained elsewhere (in the foreground) becomes the newest."""
        with self._lock:
            self._newest = (key, result)

    def wait_for_running(self, timeout: float) -> Optional[tuple[Hashable, Any]]:
        """Wait up to ``timeout`` seconds for the training under way (if any) to finish; then the
        newest finished (key, result). A fresher model when it comes in time, never a longer wait."""
        with self._lock:
            before = self._newest
            self._lock.wait_for(lambda: self._newest is not before or (self._running is None and self._wanted is None), timeout)
            return self._newest

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until nothing is training or wanted; True when idle."""
        with self._lock:
            return self._lock.wait_for(lambda: self._running is None and self._wanted is None, timeout)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None or self._wanted is not None
