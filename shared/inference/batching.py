"""Concurrent requests for one model gathered into one model call: batching under load.

    run = batching.gathered(run, key)     # the same call: feeds in, outputs out
    outputs = run({"pixel_values": pixels})

While one call of `key` runs, the calls that arrive wait; the first of them to get the model
next takes every waiting call of the same key (up to MAX_BATCH rows), runs them as one batch and
hands each caller its rows. A lone call runs at once: nothing waits for a batch to fill.

Why not gradio's `batch=True`: gradio sends one answer to every request of a batch, so one
visitor's unreadable upload or unknown label would fail the whole batch with that visitor's
message (gradio/queueing.py `process_events`), and its validators answer API clients with another
exception than the apps' errors. Here each request decodes and checks its own input in its own
worker thread, as before; only the model call is shared. The served line's notes say when an
answer came from a batch.

`DEMOHUB_MAX_BATCH` (default 8) caps the rows of one call and is how many requests the batched
endpoints admit at once; 1 turns gathering off (one request at a time, as before).
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from shared import timing
from shared.inference.graphs import Feeds

MAX_BATCH = max(1, int(os.environ.get("DEMOHUB_MAX_BATCH", "8")))


@dataclass
class _Call:
    feeds: Feeds
    rows: int
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    batch_rows: int = 0
    done: bool = False


class Gatherer:
    """Gathers concurrent calls of the same key; `sizes` keeps the rows of the last model calls."""

    def __init__(self, max_rows: int = MAX_BATCH):
        self.max_rows = max_rows
        self.sizes: collections.deque[int] = collections.deque(maxlen=1000)
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, list[_Call]] = {}
        self._running: dict[Hashable, threading.Lock] = {}
        self._callers: collections.Counter = collections.Counter()  # per key: forgotten at 0 (many shapes)

    def __call__(self, key: Hashable, run: Callable[[Feeds], dict], feeds: Feeds) -> dict[str, np.ndarray]:
        call = _Call(feeds, len(next(iter(feeds.values()))))
        with self._lock:
            self._waiting.setdefault(key, []).append(call)
            running = self._running.setdefault(key, threading.Lock())
            self._callers[key] += 1
        try:
            with running:
                while not call.done:  # a caller whose call did not fit runs the next batch, its own among them
                    self._run_batch(key, run)
        finally:
            with self._lock:
                self._callers[key] -= 1
                if not self._callers[key]:
                    del self._callers[key], self._waiting[key], self._running[key]
        if call.error is not None:
            raise call.error
        if call.batch_rows > call.rows:
            timing.note(f"answered in one model call with {call.batch_rows - call.rows} concurrent "
                        f"request row(s) ({call.batch_rows} rows)")
        return call.outputs

    def _run_batch(self, key: Hashable, run: Callable[[Feeds], dict]) -> None:
        with self._lock:
            waiting, batch, rows = self._waiting[key], [], 0
            while waiting and (not batch or rows + waiting[0].rows <= self.max_rows):
                batch.append(waiting.pop(0))
                rows += batch[-1].rows
        try:
            feeds = batch[0].feeds if len(batch) == 1 else {
                name: np.concatenate([c.feeds[name] for c in batch]) for name in batch[0].feeds}
            outputs = run(feeds)
        except BaseException as err:  # every caller of the batch sees the model's failure
            for c in batch:
                c.error, c.done = err, True
            return
        self.sizes.append(rows)
        if len(batch) == 1:  # a lone call's outputs as they are
            batch[0].outputs, batch[0].batch_rows, batch[0].done = outputs, rows, True
            return
        start = 0
        for c in batch:
            c.outputs = {name: value[start:start + c.rows] for name, value in outputs.items()}
            c.batch_rows, c.done = rows, True
            start += c.rows


GATHERER = Gatherer()


def gathered(run: Callable[[Feeds], dict], key: Hashable) -> Callable[[Feeds], dict]:
    """`run` with concurrent calls of the same `key` and input shapes (after the batch axis) gathered."""
    if MAX_BATCH == 1:
        return run

    def call(feeds: Feeds) -> dict[str, np.ndarray]:
        shapes = tuple((name, value.shape[1:], value.dtype.str) for name, value in feeds.items())
        return GATHERER((key, shapes), run, feeds)

    return call
