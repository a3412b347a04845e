"""The committed client/protocol/messages/ is exactly what tools/codegen.py generates now."""

from __future__ import annotations

from pathlib import Path

from tools import codegen

ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = ROOT / ".." / "shared" / "kafka-protocol" / "messages"
OUT_DIR = ROOT / "client" / "protocol" / "messages"


def test_committed_messages_match_generator(tmp_path: Path) -> None:
    assert codegen.main(["--spec", str(SPEC_DIR), "--out", str(tmp_path)]) == 0
    generated = sorted(p.name for p in tmp_path.glob("*.py"))
    committed = sorted(p.name for p in OUT_DIR.glob("*.py"))
    assert generated == committed
    stale = [n for n in generated if (tmp_path / n).read_bytes() != (OUT_DIR / n).read_bytes()]
    assert not stale, f"stale generated modules (run python -m tools.codegen): {stale}"


def test_check_mode_detects_staleness(tmp_path: Path) -> None:
    codegen.main(["--spec", str(SPEC_DIR), "--out", str(tmp_path)])
    assert codegen.main(["--spec", str(SPEC_DIR), "--out", str(tmp_path), "--check"]) == 0
    victim = tmp_path / "metadata.py"
    victim.write_text(victim.read_text() + "# edited by hand\n")
    assert codegen.main(["--spec", str(SPEC_DIR), "--out", str(tmp_path), "--check"]) == 1


def test_generated_headers_credit_kafka() -> None:
    for path in OUT_DIR.glob("*.py"):
        head = path.read_text()[:600]
        assert "Apache License 2.0" in head and codegen.KAFKA_COMMIT in head, path
