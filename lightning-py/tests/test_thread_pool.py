"""The native ThreadPool behind the synapse Axon's plain ``forward_fn``s: calls run on its
threads, results and exceptions reach the awaiting coroutine through the loop bridge, a
cancelled call that no thread has taken is skipped, and a shut-down pool refuses work."""

from __future__ import annotations

import asyncio
import threading
from typing import List

import pytest

from lightning_quic._aio import _offload as offload
from lightning_quic._native import ThreadPool

pytestmark = pytest.mark.asyncio


async def test_calls_run_on_the_pool_threads_with_their_arguments() -> None:
    pool = ThreadPool("test-pool", 2)
    try:
        results = await asyncio.gather(
            *(offload(pool, lambda a, b: (a + b, threading.current_thread().name), i, 10) for i in range(50))
        )
    finally:
        pool.shutdown()
    assert [r[0] for r in results] == [i + 10 for i in range(50)]
    names = {r[1] for r in results}
    assert names and all(n.startswith("test-pool-") for n in names)
    assert threading.current_thread().name not in names


async def test_exceptions_reach_the_caller_unchanged() -> None:
    class Custom(Exception):
        pass

    def fail() -> None:
        raise Custom("from a pool thread")

    pool = ThreadPool("test-pool", 1)
    try:
        with pytest.raises(Custom, match="from a pool thread"):
            await offload(pool, fail)
        assert await offload(pool, lambda: "still serving") == "still serving"
    finally:
        pool.shutdown()


async def test_a_cancelled_call_not_yet_taken_is_skipped() -> None:
    pool = ThreadPool("test-pool", 1)
    release = threading.Event()
    ran: List[str] = []
    try:
        blocker = asyncio.ensure_future(offload(pool, lambda: release.wait(10)))
        queued = asyncio.ensure_future(offload(pool, lambda: ran.append("queued")))
        await asyncio.sleep(0.05)  # both submitted; the only thread waits on `release`
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        assert await blocker is True
        assert await offload(pool, lambda: "after") == "after"  # the queue moved past it
    finally:
        release.set()
        pool.shutdown()
    assert ran == []


async def test_a_shut_down_pool_refuses_work_and_zero_threads_is_an_error() -> None:
    pool = ThreadPool("test-pool", 1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        await offload(pool, lambda: None)
    with pytest.raises(ValueError, match="at least one thread"):
        ThreadPool("test-pool", 0)
