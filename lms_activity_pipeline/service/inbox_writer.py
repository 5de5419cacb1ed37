"""Group commit for ``POST /webhooks/lms``: the webhooks that arrive while one transaction is being written are
recorded together in the next, and each request answers once its own row is committed.

Under load this turns hundreds of one-row transactions a second into a few larger ones (the database's commit,
not the handler, is what saturates); a lone webhook is written at once, as before. A failed write fails every
request of its batch with the database's error (503 through the app's handler); nothing is acknowledged
before it is stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from lms_activity_pipeline.warehouse import webhook_inbox
from lms_activity_pipeline.warehouse.store import Warehouse
from lms_activity_pipeline.warehouse.webhook_inbox import Received

#: At most this many webhooks per transaction.
MAX_BATCH = 1000


@dataclass
class InboxWriter:
    """One writer task per event loop (per uvicorn worker process), started by the first webhook; the
    warehouse is opened on the first write (a database that is down is reported per request)."""

    store: Warehouse
    _queue: asyncio.Queue[tuple[Received, asyncio.Future[bool]]] | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)

    async def record(self, item: Received) -> bool:
        """Record ``item`` with whatever else waits; False when its ``webhook_id`` was recorded before."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._queue, self._loop = asyncio.Queue(), loop
            self._task = loop.create_task(self._write_forever(self._queue), name="lms-webhook-inbox-writer")
        assert self._queue is not None
        answer: asyncio.Future[bool] = loop.create_future()
        self._queue.put_nowait((item, answer))
        return await answer

    def _write(self, items: list[Received]) -> set[str]:
        return webhook_inbox.record_many(self.store.engine, items)

    async def _write_forever(self, queue: asyncio.Queue[tuple[Received, asyncio.Future[bool]]]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                recorded = await run_in_threadpool(self._write, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request answers with the database's error
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for item, answer in batch:  # of repeats within the batch, only the first one recorded anything
                new = item.webhook_id in recorded
                recorded.discard(item.webhook_id)
                if not answer.done():  # a client that went away has cancelled its answer
                    answer.set_result(new)
