"""Idempotent producer bookkeeping: dedup of the last five batches, gaps, fencing, replay."""

from __future__ import annotations

from broker.producer_state import ProducerStateTable, Verdict, last_sequence_of


def _commit(
    table: ProducerStateTable, pid: int, epoch: int, seq: int, offset: int, count: int = 10
) -> None:
    table.apply_batch(pid, epoch, seq, offset, count, timestamp_ms=1000)


def test_new_producer_must_start_at_zero() -> None:
    table = ProducerStateTable()
    assert table.check(7, 0, 0, 10).verdict is Verdict.APPEND
    assert table.check(7, 0, 5, 10).verdict is Verdict.OUT_OF_ORDER_SEQUENCE


def test_duplicate_of_any_of_last_five_batches_returns_original_offset() -> None:
    table = ProducerStateTable()
    for i in range(7):
        _commit(table, 7, 0, i * 10, 100 + i * 10)
    for i in range(2, 7):
        decision = table.check(7, 0, i * 10, 10)
        assert decision.verdict is Verdict.DUPLICATE
        assert decision.duplicate_of is not None
        assert decision.duplicate_of.base_offset == 100 + i * 10
    # Batch 1 fell out of the window of five: it is neither a duplicate nor in order.
    assert table.check(7, 0, 10, 10).verdict is Verdict.OUT_OF_ORDER_SEQUENCE
    assert table.check(7, 0, 70, 10).verdict is Verdict.APPEND


def test_gap_is_out_of_order() -> None:
    table = ProducerStateTable()
    _commit(table, 7, 0, 0, 0)
    assert table.check(7, 0, 11, 1).verdict is Verdict.OUT_OF_ORDER_SEQUENCE


def test_stale_epoch_is_fenced_and_new_epoch_restarts_at_zero() -> None:
    table = ProducerStateTable()
    _commit(table, 7, 3, 0, 0)
    assert table.check(7, 2, 10, 1).verdict is Verdict.INVALID_PRODUCER_EPOCH
    assert table.check(7, 4, 10, 1).verdict is Verdict.OUT_OF_ORDER_SEQUENCE
    assert table.check(7, 4, 0, 1).verdict is Verdict.APPEND


def test_pending_batches_count_for_dedup_and_continuity() -> None:
    table = ProducerStateTable()
    table.add_pending(7, 0, 0, 10, 0)
    assert table.check(7, 0, 0, 10).verdict is Verdict.DUPLICATE
    assert table.check(7, 0, 10, 10).verdict is Verdict.APPEND
    table.clear_pending()
    assert table.check(7, 0, 10, 10).verdict is Verdict.OUT_OF_ORDER_SEQUENCE


def test_commit_moves_pending_into_committed() -> None:
    table = ProducerStateTable()
    table.add_pending(7, 0, 0, 10, 0)
    _commit(table, 7, 0, 0, 42)
    decision = table.check(7, 0, 0, 10)
    assert decision.verdict is Verdict.DUPLICATE
    assert decision.duplicate_of is not None and decision.duplicate_of.base_offset == 42


def test_sequence_wraps_at_int32() -> None:
    table = ProducerStateTable()
    top = 2**31 - 5
    assert last_sequence_of(top, 10) == 4
    table.apply_batch(7, 0, 0, 0, 1, 0)
    table._committed[7].batches.clear()
    table.apply_batch(7, 0, top, 10, 5, 0)
    assert table.check(7, 0, 0, 3).verdict is Verdict.APPEND


def test_snapshot_round_trip_and_expiry() -> None:
    table = ProducerStateTable()
    for pid in (1, 2, 3):
        _commit(table, pid, 0, 0, pid * 100)
    copy = ProducerStateTable.from_snapshot(table.to_snapshot())
    assert copy.to_snapshot() == table.to_snapshot()
    assert copy.check(2, 0, 0, 10).verdict is Verdict.DUPLICATE
    assert copy.expire(now_ms=1000 + 10, idle_ms_max=5) == 3
    assert len(copy) == 0


def test_a_new_epochs_batch_is_never_a_duplicate_of_an_older_epochs() -> None:
    """Chaos seed 102: after librdkafka bumped the epoch, sequences restarted at 0 and a
    new batch matching an old epoch-3 batch's range was answered with that old offset."""
    table = ProducerStateTable()
    for seq in range(3):
        table.apply_batch(7, 3, seq, 100 + seq, 1, 0)
    table.add_pending(7, 4, 0, 1, 0)  # epoch 4 starts at sequence 0, still in flight
    decision = table.check(7, 4, 1, 1)
    assert decision.verdict is Verdict.APPEND, decision
