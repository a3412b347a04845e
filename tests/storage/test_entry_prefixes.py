"""PartitionLog.entry_prefixes: headers and payload prefixes, without reading payloads."""

from __future__ import annotations

from storage import MemoryFileSystem
from tests.storage.util import data_entries, open_log, payload_for


def test_prefixes_of_every_entry_across_segments_and_a_reopen() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs)
    log.append(data_entries(1, 60, size=300))  # several 1 KiB segments
    assert len(log.segments) > 3
    got = [(h.index, h.base_offset, prefix) for h, prefix in log.entry_prefixes(61)]
    assert [i for i, _, _ in got] == list(range(1, 61))
    assert all(prefix == payload_for(i, 300)[:61] for i, _, prefix in got)
    assert [o for _, o, _ in got] == [log.offset_for_index(i) for i in range(1, 61)]
    log.close()
    reopened = open_log(fs)
    assert [h.index for h, _ in reopened.entry_prefixes(10)] == list(range(1, 61))
    reopened.close()


def test_prefixes_skip_entries_below_the_log_start_and_short_payloads() -> None:
    fs = MemoryFileSystem()
    log = open_log(fs)
    log.append(data_entries(1, 30, size=20))
    log.truncate_prefix(12)
    got = list(log.entry_prefixes(61))
    assert [h.index for h, _ in got] == list(range(12, 31))
    assert all(prefix == payload_for(h.index, 20) for h, prefix in got)  # whole payload
    log.close()
