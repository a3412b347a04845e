"""Error codes map to typed exceptions with the right retriable flag."""

from __future__ import annotations

from client import errors


def test_codes_map_to_typed_retriable_errors() -> None:
    e = errors.exception_for(6, "moved")
    assert isinstance(e, errors.RetriableKafkaError)
    assert e.retriable and e.code == errors.ErrorCode.NOT_LEADER_OR_FOLLOWER
    fatal = errors.exception_for(errors.ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    assert not fatal.retriable and not isinstance(fatal, errors.RetriableKafkaError)


def test_client_side_errors_share_the_retriable_check() -> None:
    assert errors.KafkaConnectionError().retriable
    assert errors.KafkaTimeoutError().retriable
    assert not errors.UnsupportedVersionError().retriable
    assert not errors.ClientClosedError().retriable
    assert isinstance(errors.KafkaConnectionError(), errors.KafkaError)


def test_unknown_code_is_not_retried() -> None:
    e = errors.exception_for(30000)
    assert isinstance(e, errors.UnknownErrorCodeError) and not e.retriable
