"""Group commit: the batches that arrive while the database is busy, written together.

The ingest handler submits each validated batch to the application's ``GroupWriter``
and awaits its outcome. A batch that finds a writer free is written at once, alone.
Batches that arrive while ``writers`` group transactions are in flight queue, and the
next writer to be free takes the queue (oldest first, at least one batch, up to
``max_events`` events) and writes it in ONE transaction:

1. share-lock the apps' rows in id order and read the raw events' retention horizon
   (``write.LOCK_APPS``, as ``write.store`` does for one app);
2. answer at once, and drop from the group, each batch whose app is gone (401) or that
   holds events older than the horizon (400 naming them);
3. claim each batch's Idempotency-Key, in (app, key) order; a batch whose key was
   claimed before, by a committed batch or by an earlier batch of this group (a retry
   of it), stores nothing and is answered with that batch's count, or with a 422 if
   the claim was made with another body;
4. one COPY of the rows of every batch left, their apps' pending stretches
   (``rollups.pending``), COMMIT;
5. ``on_commit`` (the materializer's wake-up), so the rollups catch up soon.

Its connections come from the ingest pool, where rows carry their times as ints of
UNIX microseconds (``db.unix_us_timestamps``).

Only then is every batch left answered. No timer collects batches: a group is what
queued while the writers were busy.

Lock order. Every transaction that writes events takes its locks in phases: the apps'
rows (shared, by id), then Idempotency-Keys (by app and key); no rollup row (the materializer keeps
the rollups, ``rollups.materializer``).
``write.store`` is the one-batch case of the same order, so groups and lone batches,
in one process or several, wait for each other but cannot deadlock.

Failures. A group's transaction that fails before COMMIT stored nothing. If the
database is unavailable, every batch of the group gets that 503 (with Retry-After),
as each would alone. Any other failure (a statement timeout, an error that one batch's
rows cause in the database) is not every batch's fault: each batch not yet answered is
then written alone with ``write.store``, in order, and gets its own outcome. If the
COMMIT itself fails, the batches are not written again (that could store them twice):
they all get ``write.commit_failure``'s answer, as a lone batch would (a refused
COMMIT's own error, or ``CommitOutcomeUnknown`` when the connection was lost). Nothing
follows the COMMIT on the database: a batch answered 200 is stored and visible to
every query (its pending stretches are read from raw events until the materializer
has caught up).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from prometheus_client import Histogram

from ..db import Database
from ..errors import DatabaseUnavailable
from . import write
from .decode import Row
from .idempotency import IdempotencyKey
from .write import Batch, CommitFailed, Stored, Written

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Batch(Batch):
    future: asyncio.Future[Stored]

    def answer(self, result: Stored | BaseException) -> None:
        """Resolve the request's future, unless it was answered or cancelled already."""
        if self.future.done():
            return
        if isinstance(result, Stored):
            self.future.set_result(result)
        elif isinstance(result, Exception):
            self.future.set_exception(result)
        else:
            self.future.cancel()


class GroupWriter:
    """Writes the submitted batches, grouping those that queue while the database is busy."""

    def __init__(
        self,
        db: Database,
        *,
        idempotency_ttl_s: int,
        max_events: int,
        writers: int,
        group_batches: Histogram,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._ttl_s = idempotency_ttl_s
        self._max_events = max_events
        self._free = writers
        self._group_batches = group_batches
        self._queue: deque[_Batch] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_commit = on_commit

    @property
    def queued(self) -> int:
        """Batches waiting for a writer to be free."""
        return len(self._queue)

    async def submit(
        self, app: int, rows: Sequence[Row], idempotency_key: IdempotencyKey | None
    ) -> Stored:
        """Store a validated batch (or recognise a retry of one); returns after COMMIT."""
        if not rows:
            # No rows to lock an app for or to copy: claiming the key, if any, is all.
            return await self._alone(app, rows, idempotency_key)
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.append(_Batch(app, rows, idempotency_key, future))
        self._start()
        return await future

    async def close(self) -> None:
        """Wait until every batch submitted so far is written."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self) -> None:
        while self._free and self._queue:
            group = self._take()
            if not group:
                return
            self._free -= 1
            task = asyncio.create_task(self._write(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Batch]:
        group: list[_Batch] = []
        events = 0
        while self._queue:
            batch = self._queue[0]
            if batch.future.done():  # its request was cancelled while it queued
                self._queue.popleft()
                continue
            if group and events + len(batch.rows) > self._max_events:
                break
            self._queue.popleft()
            group.append(batch)
            events += len(batch.rows)
        return group

    async def _write(self, group: list[_Batch]) -> None:
        self._group_batches.observe(len(group))
        holding = True

        def release() -> None:
            nonlocal holding
            if holding:
                holding = False
                self._free += 1
                self._start()

        try:
            done: Written | None = None
            try:
                async with self._db.connection() as conn:
                    done = await self._transaction(conn, group)
                # Committed: the next group may start while this one is answered.
                release()
                if done.rows and self._on_commit is not None:
                    self._on_commit()
            except Exception as exc:
                if isinstance(exc, (DatabaseUnavailable, CommitFailed)):
                    error = exc.answer if isinstance(exc, CommitFailed) else exc
                    for batch in group:
                        batch.answer(error)
                    return
                log.warning(
                    "group transaction failed; writing its batches alone",
                    extra={"batches": len(group), "error": f"{type(exc).__name__}: {exc}"},
                )
                for batch in group:
                    if not batch.future.done():
                        batch.answer(await self._outcome(batch))
                return
            assert done is not None
            for stored in done.stored:
                _answer(stored, Stored(accepted=len(stored.rows), replay=False))
            for replayed, original in done.replays:
                _answer(replayed, Stored(accepted=original, replay=True))
        except BaseException as exc:
            for batch in group:
                batch.answer(exc)
            raise
        finally:
            release()

    async def _transaction(self, conn: asyncpg.Connection, group: list[_Batch]) -> Written:
        return await write.transaction(
            conn,
            group,
            idempotency_ttl_s=self._ttl_s,
            timeout_s=self._db.statement_timeout_s,
            # Answered at once: nothing that follows changes their answer.
            on_refused=_answer,
        )

    async def _outcome(self, batch: _Batch) -> Stored | Exception:
        try:
            return await self._alone(batch.app, batch.rows, batch.key)
        except Exception as exc:
            return exc

    async def _alone(self, app: int, rows: Sequence[Row], key: IdempotencyKey | None) -> Stored:
        stored = await write.store(
            self._db,
            app,
            rows,
            idempotency_key=key,
            idempotency_ttl_s=self._ttl_s,
        )
        if rows and not stored.replay and self._on_commit is not None:
            self._on_commit()
        return stored


def _answer(batch: Batch, result: Stored | BaseException) -> None:
    assert isinstance(batch, _Batch)
    batch.answer(result)
