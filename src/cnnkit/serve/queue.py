"""A bounded pool of worker threads: decoding and inference run off the event loop, with 503 and 504.

The event loop only parses HTTP and waits; every job (image header, decoding, inference, Grad-CAM) runs on
one of `workers` threads, so a slow image never stalls /healthz or other connections. PyTorch, ONNX
Runtime and OpenVINO release the GIL while they compute.

Admission: at most `workers + queue_size` jobs are admitted at once (running or waiting); the next request
is answered 503 at once rather than queued without bound, so under overload latency stays bounded and
clients learn to back off (Retry-After: 1).

Timeout: a request waits at most `timeout_s` for its job (queueing included), then gets 504. A job still
waiting in the queue is cancelled; one already running cannot be interrupted (no engine supports it), so
it finishes and keeps its slot until then, and the admission count stays honest.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from cnnkit.serve.limits import InferenceTimeout, QueueFull


class BoundedExecutor:
    """Run blocking jobs on a thread pool with bounded admission and a per-request timeout."""

    def __init__(self, workers: int, queue_size: int, timeout_s: float):
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="cnnkit-serve")
        self.capacity, self.timeout_s = workers + queue_size, timeout_s
        self._pending = 0
        self._lock = threading.Lock()  # done callbacks run on worker threads

    @property
    def pending(self) -> int:
        """Jobs admitted and not finished (running or waiting)."""
        return self._pending

    def _release(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, job: Callable[[], Any]) -> Any:
        """The result of `job()` run on a worker thread; QueueFull (503) or InferenceTimeout (504) otherwise."""
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull(f"the server is busy ({self._pending} requests in progress, at most {self.capacity}); "
                                "retry in a moment")
            self._pending += 1
        try:
            future = self._executor.submit(job)
        except RuntimeError:  # shutting down
            self._release(None)
            raise QueueFull("the server is shutting down") from None
        future.add_done_callback(self._release)
        try:
            # wait_for cancels the wrapped future on timeout, which cancels a job that has not started yet.
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            raise InferenceTimeout(f"no answer within {self.timeout_s:g} s (waiting included); the server is "
                                   "overloaded or the image is too slow to process: retry later") from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
