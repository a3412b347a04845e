"""The consumer's column-wise decoding of same-shaped record runs agrees with the careful decoder.

client.protocol.records reads runs of records that share one layout (equal
lengths, equal key/value lengths, equal varint widths, no headers) with struct
and strided slices instead of a per-record loop. The fetcher depends on it for
speed; these tests hold it to the careful one-record decoder's answers: on
valid uniform batches (every varint width the run path handles, null and
non-null keys and values, runs broken by offset and timestamp delta widths) and
on mutated bytes (the same rows, or CorruptRecordError from both).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.protocol import records as r
from client.protocol.records import Record, decode_batch, decode_batch_columns, encode_batch
from tests.protocol.test_records_fastpath import _careful, _outcome

blob = st.sampled_from([None, b"", b"k", b"x" * 50, b"v" * 1000, b"w" * 9000])


@st.composite
def uniform_batches(draw) -> tuple[list[Record], int, int]:
    count = draw(st.sampled_from([1, 7, 8, 9, 64, 65, 200]))
    key, value = draw(blob), draw(blob)
    step = draw(st.sampled_from([0, 1, 3, 70]))  # ms between records: 1- and 2-byte deltas
    odd = draw(st.none() | st.integers(0, count - 1))  # one record of another shape
    records = []
    for i in range(count):
        k, v, h = key, value, ()
        if i == odd:
            h = (("h", b"1"),)
        records.append(Record(i, i * step // 4, k, v, h))
    return records, draw(st.integers(0, 2**40)), draw(st.integers(-1, 2**41))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=uniform_batches())
def test_runs_decode_as_the_careful_decoder_does(batch) -> None:
    records, base_offset, base_ts = batch
    encoded = encode_batch(records, base_timestamp=base_ts, base_offset=base_offset)
    data = encoded[r.RECORDS_OFFSET :]
    expected = _careful(data, len(records), base_offset, base_ts)
    assert r._decode_rows(data, len(records), base_offset, base_ts) == expected
    cols = decode_batch_columns(encoded)
    assert list(zip(cols.offsets, cols.timestamps_ms, cols.keys, cols.values, cols.headers)) == [
        tuple(row) for row in expected
    ]
    assert list(decode_batch(encoded).records) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=uniform_batches(),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_mutated_runs_agree_with_the_careful_decoder(batch, edits) -> None:
    records, base_offset, base_ts = batch
    data = bytearray(encode_batch(records, base_timestamp=base_ts)[r.RECORDS_OFFSET :])
    for where, byte in edits:
        data[where % len(data)] = byte
    args = (bytes(data), len(records), base_offset, base_ts)
    assert _outcome(r._decode_rows, *args) == _outcome(_careful, *args)


def test_a_producer_batch_is_read_as_runs() -> None:
    """Equal values: one run up to offset delta 63, one after (the delta varint widens)."""
    records = [Record(i, 0, None, b"x" * 100) for i in range(300)]
    data = encode_batch(records, base_timestamp=5)[r.RECORDS_OFFSET :]
    segments = r._decode_segments(data, 300, 0, 5)
    assert [len(s[0]) for s in segments if isinstance(s, tuple)] == [64, 236]


@pytest.mark.parametrize("size", [1, 60, 61])
def test_varied_records_fall_back_and_stay_correct(size: int) -> None:
    records = [Record(i, i, None, b"x" * (size + i % 3)) for i in range(100)]
    data = encode_batch(records, base_timestamp=0)[r.RECORDS_OFFSET :]
    assert r._decode_rows(data, 100, 10, 0) == _careful(data, 100, 10, 0)
