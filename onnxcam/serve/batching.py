"""Micro-batching: requests that arrive together share one run of the model.

Jobs carry a key; only jobs with equal keys go into one batch. The batcher runs one batch
at a time on its own single thread (onnxruntime releases the GIL, so the event loop keeps
serving). A batch leaves as soon as it holds ``max_batch`` jobs, when ``max_wait`` seconds have
passed since its first job arrived, or when no further request is on its way: requests
announce themselves with :meth:`MicroBatcher.arriving` while they are being read and decoded,
so a lone request never waits, while concurrent ones are gathered.
"""
from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Optional, Sequence

RunBatch = Callable[[Hashable, list[Any]], Sequence[Any]]  # (key, payloads) -> one result each


@dataclass
class _Job:
    key: Hashable
    payload: Any
    arrived: float
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Gathers jobs into batches for ``run(key, payloads)``, which returns one result per payload.

    ``on_batch(size)`` is called for every batch run (metrics).
    """

    def __init__(self, run: RunBatch, max_batch: int = 8, max_wait: float = 0.01,
                 on_batch: Optional[Callable[[int], None]] = None, name: str = "batch"):
        self.run, self.max_batch, self.max_wait, self.on_batch = run, max_batch, max_wait, on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: list[_Job] = []
        self._arriving = 0
        self._changed = asyncio.Event()
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        """Start gathering and running batches on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Stop after the batch in progress; jobs still waiting fail with CancelledError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._pending:
            job.future.cancel()
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request that will submit a job soon: enter before decoding its image and
        submit before leaving, so that the batch it may join waits for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            self._changed.set()

    def submit(self, key: Hashable, payload: Any) -> asyncio.Future:
        """Queue a job; the future holds its result (or the exception its run raised)."""
        loop = asyncio.get_running_loop()
        job = _Job(key, payload, loop.time(), loop.create_future())
        self._pending.append(job)
        self._changed.set()
        return job.future

    def _gather(self) -> Optional[list[_Job]]:
        """The next batch if it is ready to leave, else None."""
        first = self._pending[0]
        same = [job for job in self._pending if job.key == first.key][:self.max_batch]
        waited = asyncio.get_running_loop().time() - first.arrived
        if len(same) >= self.max_batch or self._arriving == 0 or waited >= self.max_wait:
            return same
        return None

    async def _next_batch(self) -> list[_Job]:
        while True:
            self._changed.clear()
            if self._pending:
                batch = self._gather()
                if batch is not None:
                    break
                timeout = self.max_wait - (asyncio.get_running_loop().time() - self._pending[0].arrived)
            else:
                timeout = None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        taken = {id(job) for job in batch}
        self._pending = [job for job in self._pending if id(job) not in taken]
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [job for job in await self._next_batch() if not job.future.cancelled()]
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(
                    self._executor, self.run, batch[0].key, [job.payload for job in batch])
            except Exception as error:  # noqa: BLE001  (handed to every request of the batch)
                results = [error] * len(batch)
            for job, result in zip(batch, results):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
