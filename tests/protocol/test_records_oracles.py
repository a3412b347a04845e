"""External oracles: aiokafka's and kafka-python's record readers and builders.

Our batches must decode with their readers, theirs with ours, for every codec;
where their builders are deterministic, the bytes must be identical.

kafka-python ships no snappy, lz4 or zstd library here. For snappy we give it a
raw-block shim (python-snappy is itself a cramjam wrapper), so its own xerial
framing code runs for real. For lz4 and zstd the shim is the codec call alone:
that still checks its batch and record parsing around our payloads.
"""

from __future__ import annotations

import types
from collections.abc import Iterator

import cramjam
import pytest
from aiokafka.record import default_records as aiokafka_records
from aiokafka.record._crecords import DefaultRecordBatch as AioBatch
from aiokafka.record._crecords import DefaultRecordBatchBuilder as AioBuilder
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record import default_records as kp_records

from client.protocol.compression import Codec
from client.protocol.records import (
    CONTROL_TYPE_ABORT,
    RecordBatchBuilder,
    build_control_batch,
    decode_batch,
    validate_batch,
)

CODECS = list(Codec)
TS = 1_700_000_000_000


@pytest.fixture(autouse=True)
def kafka_python_codecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import kafka.codec as kc

    snappy = types.SimpleNamespace(
        compress=lambda b: bytes(cramjam.snappy.compress_raw(b)),
        decompress=lambda b: bytes(cramjam.snappy.decompress_raw(b)),
    )
    monkeypatch.setattr(kc, "snappy", snappy)
    monkeypatch.setattr(kc, "has_lz4", lambda: True)
    monkeypatch.setattr(kc, "has_zstd", lambda: True)

    def lz4_encode(b: bytes) -> bytes:
        c = cramjam.lz4.Compressor(level=9, content_checksum=False, block_linked=False)
        c.compress(b)
        return bytes(c.finish())

    monkeypatch.setattr(kp_records, "lz4_encode", lz4_encode)
    monkeypatch.setattr(kp_records, "lz4_decode", lambda b: bytes(cramjam.lz4.decompress(b)))
    monkeypatch.setattr(
        kp_records, "zstd_encode", lambda b: bytes(cramjam.zstd.compress(b, level=3))
    )
    monkeypatch.setattr(kp_records, "zstd_decode", lambda b: bytes(cramjam.zstd.decompress(b)))
    yield


nullable = st.none() | st.binary(max_size=200)
items_st = st.lists(
    st.tuples(
        nullable,
        nullable,
        st.lists(st.tuples(st.text(max_size=6), nullable), max_size=2),
        st.integers(-5000, 5000),
    ),
    min_size=1,
    max_size=12,
)


def _ours(
    items, codec: int, pid: int = -1, epoch: int = -1, seq: int = -1, leader_epoch: int = -1
) -> bytes:
    builder = RecordBatchBuilder(
        compression=codec,
        batch_bytes_max=1 << 30,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        partition_leader_epoch=leader_epoch,
    )
    for key, value, headers, dt in items:
        assert builder.append(key, value, headers, TS + dt)
    return builder.build()


def _theirs(
    builder_cls: type, items, codec: int, pid: int = -1, epoch: int = -1, seq: int = -1
) -> bytes:
    builder = builder_cls(2, codec, 0, pid, epoch, seq, 1 << 30)
    for offset, (key, value, headers, dt) in enumerate(items):
        assert builder.append(offset, TS + dt, key, value, list(headers)) is not None
    return bytes(builder.build())


def _read_theirs(batch_cls: type, buf: bytes) -> list:
    batch = batch_cls(buf)
    assert batch.validate_crc()
    return [(r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for r in batch]


def _want(items) -> list:
    return [(i, TS + dt, k, v, [tuple(h) for h in hs]) for i, (k, v, hs, dt) in enumerate(items)]


READERS = [AioBatch, aiokafka_records._DefaultRecordBatchPy, kp_records.DefaultRecordBatch]
BUILDERS = [
    AioBuilder,
    aiokafka_records._DefaultRecordBatchBuilderPy,
    kp_records.DefaultRecordBatchBuilder,
]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=15, deadline=None)
@given(items=items_st)
def test_our_batches_decode_with_their_readers(codec: Codec, items) -> None:
    buf = _ours(items, codec, pid=12, epoch=3, seq=40)
    for reader in READERS:
        assert _read_theirs(reader, buf) == _want(items), reader
        batch = reader(buf)
        assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (12, 3, 40)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@settings(max_examples=15, deadline=None)
@given(items=items_st)
def test_their_batches_decode_with_ours(codec: Codec, items) -> None:
    for builder in BUILDERS:
        buf = _theirs(builder, items, codec, pid=5, epoch=1, seq=0)
        header = validate_batch(buf)
        assert header.producer_id == 5
        got = [
            (r.offset, r.timestamp_ms, r.key, r.value, [tuple(h) for h in r.headers])
            for r in decode_batch(buf).records
        ]
        assert got == _want(items), builder


def test_kafka_python_snappy_uses_xerial_framing_and_we_read_it() -> None:
    items = [(None, b"hello snappy " * 20, [], i) for i in range(50)]
    buf = _theirs(kp_records.DefaultRecordBatchBuilder, items, Codec.SNAPPY)
    assert validate_batch(buf).compression == Codec.SNAPPY
    assert buf[61:69] == b"\x82SNAPPY\x00"
    assert [r.value for r in decode_batch(buf).records] == [v for _, v, _, _ in items]


# Compressible inputs: aiokafka falls back to an uncompressed batch when
# compression does not pay, which Kafka's Java client does not do.
DETERMINISTIC = [Codec.NONE, Codec.SNAPPY, Codec.LZ4, Codec.ZSTD]


@pytest.mark.parametrize("codec", DETERMINISTIC, ids=lambda c: c.name)
@settings(max_examples=15, deadline=None)
@given(items=items_st, reps=st.integers(2, 5))
def test_byte_identical_to_aiokafka(codec: Codec, items, reps: int) -> None:
    items = [(k, v, h, dt) for k, v, h, dt in items] + [(b"key", b"abcabcabc" * 30, [], 0)] * reps
    ours = _ours(items, codec, pid=9, epoch=2, seq=100)
    theirs = _theirs(AioBuilder, items, codec, pid=9, epoch=2, seq=100)
    assert ours == theirs


@settings(max_examples=15, deadline=None)
@given(items=items_st)
def test_byte_identical_to_kafka_python_uncompressed(items) -> None:
    # kafka-python writes partitionLeaderEpoch 0 where Java and aiokafka write -1.
    assert _ours(items, Codec.NONE, leader_epoch=0) == _theirs(
        kp_records.DefaultRecordBatchBuilder, items, Codec.NONE
    )


def test_control_batch_reads_as_a_control_record_in_kafka_python() -> None:
    buf = build_control_batch(
        control_type=CONTROL_TYPE_ABORT, producer_id=3, producer_epoch=1, timestamp_ms=TS
    )
    batch = kp_records.DefaultRecordBatch(buf)
    assert batch.is_control_batch and batch.is_transactional and batch.validate_crc()
    (record,) = list(batch)
    assert record.abort and record.version == 0
    aio = AioBatch(buf)
    assert aio.is_control_batch and aio.validate_crc()
