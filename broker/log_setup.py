"""Structured logging: one line per event, `key=value` text or JSON, always with the node id.

Operators grep and ship these lines, so an event must never span lines (tracebacks are
folded into one escaped field) and its context must be fields, not prose. Call sites pass
fields through `extra`:

    log.info("became leader", extra={"group": 7, "term": 12})

renders as

    ts=2026-01-01T12:00:00.123Z level=INFO node=1 logger=broker.raft_driver \
msg="became leader" group=7 term=12

Any `extra` key that is not a standard LogRecord attribute becomes a field; `fields()`
builds that dict when the keys would clash with a keyword.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_BARE_VALUE_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@,[]()"
)


def fields(**kv: object) -> dict[str, object]:
    """Builds an `extra` dict: `log.info("x", extra=fields(peer=2))`."""
    return kv


def _timestamp(record: logging.LogRecord) -> str:
    # UTC with milliseconds, ISO 8601; `record.created` is the wall clock at the call.
    secs = int(record.created)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{int(record.msecs):03d}Z"


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else repr(value) if value is None else str(value)
    if text and all(ch in _BARE_VALUE_CHARS for ch in text):
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=... node=... logger=... msg="..." k=v ...`, one line."""

    def __init__(self, node_id: int) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_timestamp(record)}",
            f"level={record.levelname}",
            f"node={self._node_id}",
            f"logger={record.name}",
            f"msg={_text_value(record.getMessage())}",
        ]
        parts += [f"{k}={_text_value(v)}" for k, v in _extra_fields(record).items()]
        if record.exc_info:
            parts.append(f"exc={_text_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same fields as the text format."""

    def __init__(self, node_id: int) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "node": self._node_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extra_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(
    level: str, log_format: str, node_id: int, stream: IO[str] | None = None
) -> logging.Handler:
    """Replaces the root logger's handlers with one structured handler; returns it."""
    assert log_format in ("text", "json"), log_format
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(node_id) if log_format == "json" else KeyValueFormatter(node_id)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # asyncio logs every slow callback at DEBUG; keep it from drowning the broker's lines.
    logging.getLogger("asyncio").setLevel(max(root.level, logging.INFO))
    return handler
