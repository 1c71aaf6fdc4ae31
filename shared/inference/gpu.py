"""The one door to the GPU on a ZeroGPU Space: every model forward, generation and attack loop
goes through `on_gpu`.

    run = gpu.on_gpu(form.run_torch(loaded))      # run(feeds) calls it inside `spaces.GPU`

On a ZeroGPU Space (the `spaces` package installed and SPACES_ZERO_GPU set) `spaces.GPU` lends the
process a GPU for each call of `_call`; everywhere else it returns `_call` unchanged, so this costs
one function call. Import this module before anything touches CUDA (a built Space's app.py does it
first).
"""

from __future__ import annotations

import os
from collections.abc import Callable

spaces = None
if os.environ.get("SPACES_ZERO_GPU"):  # only a ZeroGPU Space sets it (importing `spaces` costs cold start)
    try:
        import spaces
    except ImportError:  # not on a Space: nothing to lend
        spaces = None

GPU_SECONDS = 60  # what one call may hold the GPU on ZeroGPU (an attack stops at 20 s)


def _call(fn: Callable, *args, **kwargs):
    return fn(*args, **kwargs)


if spaces is not None:
    _call = spaces.GPU(duration=GPU_SECONDS)(_call)
# On ZeroGPU the GPU exists only inside a call; an ONNX session outlives calls, so only torch runs there.
ZERO_GPU = spaces is not None and bool(spaces.config.Config.zero_gpu)


class on_gpu:  # noqa: N801 - used as a function: on_gpu(fn)(...)
    """`fn`, called through the one ZeroGPU entry point; its attributes (an ONNX generator's
    `.generate`, say) stay reachable as they are."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return _call(self.fn, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.fn, name)
