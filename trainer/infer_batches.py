"""Batches for inference: lines grouped by length under a token budget, padded, run on replicas.

    batches = plan_batches(lengths, batch_tokens=4096, beam_size=4)
    for index, result in run_on_replicas(replicas, lambda r, b: run(r, pad_batch(b)), batches):
        ...

Used by trainer/infer.py; nothing here reads files or knows the task.
"""

from __future__ import annotations

import concurrent.futures
import queue
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline import features
from trainer.model_dir import Replica


def plan_batches(
    lengths: Sequence[int],
    *,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    beam_size: int = 1,
) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of similar length, longest first.

    A batch holds at most ``batch_size`` sequences and, padded to its longest one and
    repeated ``beam_size`` times, at most ``batch_tokens`` tokens; a single sequence
    over the budget still gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Longest first, so the batch's first sequence sets its padded width.
        width = lengths[current[0]] if current else lengths[i]
        size = len(current) + 1
        too_many = batch_size is not None and size > batch_size
        too_long = batch_tokens is not None and size * width * beam_size > batch_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Rows of ids -> `[len(rows), longest]` int32, PAD after each row."""
    batch = np.full((len(rows), max(len(r) for r in rows)), features.PAD_ID, dtype=np.int32)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    return batch


def run_on_replicas(
    replicas: Sequence[Replica],
    work: Callable[[int, Any], Any],
    items: Sequence[Any],
    *,
    stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yields ``(index, work(replica_index, item))`` for every item, in completion order.

    One replica: in this thread, in order. Several: one thread per replica, each
    taking the next item when it is free (TF releases the GIL while a graph runs).
    ``stop()`` is asked after each item but the last: once it says True, the items not
    started are dropped, and those running still finish and are yielded (the work done
    is kept, none is waited for beyond it).
    """
    if len(replicas) == 1:
        for index, item in enumerate(items):
            with tf.device(replicas[0].device):
                result = work(0, item)
            yield index, result
            if index < len(items) - 1 and stop is not None and stop():
                return
        return
    free: queue.Queue[int] = queue.Queue()
    for r in range(len(replicas)):
        free.put(r)

    def on_a_free_replica(item):
        r = free.get()
        try:
            with tf.device(replicas[r].device):
                return work(r, item)
        finally:
            free.put(r)

    pool = concurrent.futures.ThreadPoolExecutor(len(replicas), thread_name_prefix="replica")
    try:
        futures = {pool.submit(on_a_free_replica, item): i for i, item in enumerate(items)}
        stopped = False
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            if future.cancelled():
                continue
            yield futures[future], future.result()
            if not stopped and done < len(items) and stop is not None and stop():
                stopped = True
                for pending in futures:
                    pending.cancel()  # those not started; a running one goes on
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
