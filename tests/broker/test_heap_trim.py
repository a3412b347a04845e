"""The Kafka listener hands freed heap back to the OS once client traffic stops."""

from __future__ import annotations

import asyncio

from broker.kafka_server import HeapTrimmer, KafkaServer, _glibc_malloc_trim


def test_trims_once_per_burst_after_the_idle_time() -> None:
    calls: list[int] = []
    trimmer = HeapTrimmer(idle_s=1.0, trim=lambda: calls.append(1))
    assert not trimmer.maybe_trim(100.0)  # no traffic yet: nothing to give back
    trimmer.note_traffic(100.0)
    assert not trimmer.maybe_trim(100.5)  # still busy
    assert trimmer.maybe_trim(101.0)
    assert not trimmer.maybe_trim(105.0)  # idle since: once is enough
    trimmer.note_traffic(106.0)
    assert trimmer.maybe_trim(107.5)
    assert len(calls) == 2


def test_glibc_trim_is_callable_here() -> None:
    trim = _glibc_malloc_trim()
    assert trim is not None  # the bench machine and CI run glibc
    trim()


async def test_listener_trims_after_a_connection_goes_quiet() -> None:
    trimmed = asyncio.Event()
    trimmer = HeapTrimmer(idle_s=0.05, trim=trimmed.set)
    server = KafkaServer("test", "127.0.0.1", 0, {}, 1 << 20, 10, 5, heap_trimmer=trimmer)
    await server.start()
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x00\x00\x00")  # some bytes, not yet a whole frame
        await writer.drain()
        await asyncio.wait_for(trimmed.wait(), 5.0)
        assert trimmer.trims == 1
        writer.close()
    finally:
        await server.stop()
