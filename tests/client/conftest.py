"""A real Raftka broker process shared by the client's integration tests (package scope)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import BrokerProcess


@pytest.fixture(scope="package")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    node = BrokerProcess(1, Path(tmp_path_factory.mktemp("client-broker")))
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        if node.is_running():
            node.terminate()
