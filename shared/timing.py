"""The whole time of one request, and what it built on the way (a model loaded, an ONNX export).

    @timing.whole_request
    def classify(image, ...) -> Result: ...     # its Result's latency_ms: from the call to the answer

    with timing.building("loaded digits-convnext"):   # what the loader and the ONNX runner do
        ...                                           # the request's notes: "loaded digits-convnext in 1.3 s"

A request is the outermost decorated call in this context (a task that calls another task's
entry point, as the adversarial app's transfer check does, times and notes both as one request).
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

# The longest a request whose cost the client sets (an attack's steps, occlusion's stride, an embedding
# map's uploads) may hold its endpoint: it stops there with a sentence.
TIME_LIMIT_S = 20.0


@dataclass
class _Request:
    started: float
    notes: list[str] = field(default_factory=list)


_current: ContextVar[_Request | None] = ContextVar("demohub_request", default=None)


def note(text: str) -> None:
    """Add a note to the request under way (nothing outside a request)."""
    request = _current.get()
    if request is not None:
        request.notes.append(text)


@contextmanager
def building(what: str, after: str = ""):
    """Time the block and note `what` with its seconds (and `after`), as in "loaded M in 1.3 s"."""
    started = time.perf_counter()
    yield
    note(f"{what} in {time.perf_counter() - started:.1f} s{after}")


def whole_request(predict):
    """`predict`'s Result measures the whole call (decode, load, export, run, answer) in latency_ms
    and notes what the call loaded or exported; a list of Results (one batch) shares them."""

    @functools.wraps(predict)
    def timed(*args, **kwargs):
        if _current.get() is not None:  # inside another request: that one times and notes
            return predict(*args, **kwargs)
        request = _Request(time.perf_counter())
        token = _current.set(request)
        try:
            result = predict(*args, **kwargs)
        finally:
            _current.reset(token)
        results = result if isinstance(result, list) else [result]
        elapsed_ms = (time.perf_counter() - request.started) * 1e3
        for each in results:  # a batch's results share its time equally, and its notes
            each.latency_ms = elapsed_ms / len(results)
            each.notes = [*each.notes, *request.notes]
        return result

    return timed
