"""Record batch throughput: ours next to aiokafka's (Cython) and kafka-python's (pure Python).

Run: python -m bench.protocol [--seconds S]. Everything is measured in one run on one
machine so the columns compare; each cell is the best of three timed rounds.
Batches are cut at 16 KiB (Kafka's default batch.size). Values are pseudo-random
text, so lz4 has something to compress.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from client.protocol.compression import Codec
from client.protocol.records import (
    RecordBatchBuilder,
    decode_batch,
    decode_batch_columns,
    validate_batch,
)

BATCH_BYTES = 16 * 1024
TIMESTAMP_MS = 1_700_000_000_000


def _values(size: int, count: int) -> list[bytes]:
    rng = random.Random(size)
    words = [bytes(rng.choice(b"abcdefghijklmnop") for _ in range(8)) for _ in range(64)]
    out = []
    for _ in range(count):
        buf = b" ".join(rng.choice(words) for _ in range(size // 9 + 1))
        out.append(buf[:size])
    return out


def _timed(fn: Callable[[], int], seconds: float) -> float:
    """Best units/s over three rounds of about seconds/3 each; fn returns units done."""
    best = 0.0
    for _ in range(3):
        units = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            units += fn()
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, units / (now - start))
    return best


# ---------------------------------------------------------------- builders
def ours_encode(values: list[bytes], codec: int) -> list[bytes]:
    batches = []
    builder = RecordBatchBuilder(compression=codec, batch_bytes_max=BATCH_BYTES)
    ts = TIMESTAMP_MS
    for i, value in enumerate(values):
        if not builder.append(None, value, (), ts + i):
            batches.append(builder.build())
            builder = RecordBatchBuilder(compression=codec, batch_bytes_max=BATCH_BYTES)
            builder.append(None, value, (), ts + i)
    batches.append(builder.build())
    return batches


def _their_encode(builder_cls: type, values: list[bytes], codec: int) -> list[bytes]:
    batches = []
    builder = builder_cls(2, codec, 0, -1, -1, -1, BATCH_BYTES)
    offset = 0
    ts = TIMESTAMP_MS
    for i, value in enumerate(values):
        if builder.append(offset, ts + i, None, value, []) is None:
            batches.append(bytes(builder.build()))
            builder = builder_cls(2, codec, 0, -1, -1, -1, BATCH_BYTES)
            offset = 0
            builder.append(offset, ts + i, None, value, [])
        offset += 1
    batches.append(bytes(builder.build()))
    return batches


def aiokafka_encode(values: list[bytes], codec: int) -> list[bytes]:
    from aiokafka.record._crecords import DefaultRecordBatchBuilder

    return _their_encode(DefaultRecordBatchBuilder, values, codec)


def kafka_python_encode(values: list[bytes], codec: int) -> list[bytes]:
    from kafka.record.default_records import DefaultRecordBatchBuilder

    return _their_encode(DefaultRecordBatchBuilder, values, codec)


# ---------------------------------------------------------------- readers
def ours_decode(batches: list[bytes]) -> int:
    count = 0
    for batch in batches:
        for record in decode_batch(batch).records:
            _ = (record.offset, record.timestamp_ms, record.key, record.value, record.headers)
            count += 1
    return count


def ours_decode_columns(batches: list[bytes]) -> int:
    """decode_batch_columns, every field of every record touched (how the consumer reads)."""
    count = 0
    for batch in batches:
        cols = decode_batch_columns(batch)
        columns = (cols.offsets, cols.timestamps_ms, cols.keys, cols.values, cols.headers)
        for _offset, _timestamp, _key, _value, _headers in zip(*columns, strict=True):
            count += 1
    return count


def _their_decode(batch_cls: type, batches: list[bytes]) -> int:
    count = 0
    for batch in batches:
        for record in batch_cls(batch):
            _ = (record.offset, record.timestamp, record.key, record.value, record.headers)
            count += 1
    return count


def aiokafka_decode(batches: list[bytes]) -> int:
    from aiokafka.record._crecords import DefaultRecordBatch

    return _their_decode(DefaultRecordBatch, batches)


def kafka_python_decode(batches: list[bytes]) -> int:
    from kafka.record.default_records import DefaultRecordBatch

    return _their_decode(DefaultRecordBatch, batches)


def _kafka_python_has(codec: int) -> bool:
    import kafka.codec

    return codec == Codec.NONE or (codec == Codec.LZ4 and kafka.codec.has_lz4())


def _row(name: str, rate: float | None, record_bytes: int) -> str:
    if rate is None:
        return f"{name:>13} {'n/a':>12} {'':>9}"
    return f"{name:>13} {rate:>12,.0f} {rate * record_bytes / 1e6:>9.1f}"


def bench_codec(seconds: float) -> None:
    print(f"\nEncode/decode, batches of {BATCH_BYTES // 1024} KiB (records/s, MB/s of values)")
    print(f"{'case':<18} {'op':<7} {'library':>13} {'records/s':>12} {'MB/s':>9}")
    for record_bytes in (100, 1024):
        values = _values(record_bytes, 4000 if record_bytes == 100 else 1000)
        for codec in (Codec.NONE, Codec.LZ4):
            case = f"{record_bytes} B {codec.name.lower()}"
            encoders: list[tuple[str, Callable[[list[bytes], int], list[bytes]] | None]] = [
                ("raftka", ours_encode),
                ("aiokafka", aiokafka_encode),
                ("kafka-python", kafka_python_encode if _kafka_python_has(codec) else None),
            ]
            for name, enc in encoders:
                rate = None
                if enc is not None:
                    encode = enc

                    def run_encode(
                        encode: Callable[..., list[bytes]] = encode,
                        values: list[bytes] = values,
                        codec: int = codec,
                    ) -> int:
                        encode(values, codec)
                        return len(values)

                    rate = _timed(run_encode, seconds)
                print(f"{case:<18} {'encode':<7} {_row(name, rate, record_bytes)}")
            batches = ours_encode(values, codec)
            decoders: list[tuple[str, Callable[[list[bytes]], int] | None]] = [
                ("raftka", ours_decode),
                ("raftka cols", ours_decode_columns),
                ("aiokafka", aiokafka_decode),
                ("kafka-python", kafka_python_decode if _kafka_python_has(codec) else None),
            ]
            for name, dec in decoders:
                rate = None
                if dec is not None:
                    decode = dec

                    def run_decode(
                        decode: Callable[[list[bytes]], int] = decode,
                        batches: list[bytes] = batches,
                    ) -> int:
                        return decode(batches)

                    rate = _timed(run_decode, seconds)
                print(f"{case:<18} {'decode':<7} {_row(name, rate, record_bytes)}")


def bench_validation(seconds: float) -> None:
    from aiokafka.record._crecords import DefaultRecordBatch

    print("\nHeader validation + CRC-32C per batch (the broker's produce path)")
    print(f"{'batch':<22} {'library':>9} {'batches/s':>12} {'GB/s':>7}")
    for count, record_bytes in ((1, 100), (150, 100), (16, 1024), (1000, 1024)):
        values = _values(record_bytes, count)
        builder = RecordBatchBuilder(batch_bytes_max=1 << 30)
        for i, value in enumerate(values):
            builder.append(None, value, (), TIMESTAMP_MS + i)
        batch = builder.build()
        label = f"{count} x {record_bytes} B ({len(batch)} B)"

        def ours(batch: bytes = batch) -> int:
            for _ in range(100):
                validate_batch(batch)
            return 100

        def theirs(batch: bytes = batch) -> int:
            for _ in range(100):
                if not DefaultRecordBatch(batch).validate_crc():
                    raise AssertionError("crc")
            return 100

        for name, fn in (("raftka", ours), ("aiokafka", theirs)):
            rate = _timed(fn, seconds)
            print(f"{label:<22} {name:>9} {rate:>12,.0f} {rate * len(batch) / 1e9:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.9, help="time per cell")
    args = parser.parse_args()
    bench_codec(args.seconds)
    bench_validation(args.seconds)


if __name__ == "__main__":
    main()
