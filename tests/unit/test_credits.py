"""Routed credits carry a signature only processors can make, under keys that can rotate."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ledger.credits import (
    HEADER,
    KEY_ID_HEADER,
    CreditCheck,
    CreditSigner,
    ensure_key_file,
    key_id,
)
from ledger.errors import UsageError
from ledger.health import LatencyHistogram
from ledger.metrics import ProcessorCollector
from ledger.processor.state import ProcessorStats
from ledger.settings import from_env

VALUE = b"\xc3\x01credit-bytes"


@dataclass
class FakeMessage:
    """Just the two accessors the signer reads (a Message cannot be built in Python)."""

    _value: bytes
    _headers: list[tuple[str, bytes]] | None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def signed_headers(signer: CreditSigner, value: bytes = VALUE) -> list[tuple[str, bytes]]:
    return [(name, v) for name, v in signer.sign(value) if isinstance(v, bytes)]


def signed(signer: CreditSigner, value: bytes = VALUE) -> FakeMessage:
    return FakeMessage(value, signed_headers(signer, value))


def mac_of(signer: CreditSigner, value: bytes = VALUE) -> bytes:
    return dict(signed_headers(signer, value))[HEADER]


def check(signer: CreditSigner, msg: FakeMessage) -> CreditCheck:
    return signer.verify(msg).check  # type: ignore[arg-type]


def test_signed_credit_verifies_and_tampering_does_not() -> None:
    signer = CreditSigner("s3cret")
    headers = signed_headers(signer)
    assert signer.verify(FakeMessage(VALUE, headers))  # type: ignore[arg-type]
    assert [name for name, _ in headers] == [HEADER, KEY_ID_HEADER]
    tampered = FakeMessage(VALUE + b"0", headers)
    assert not signer.verify(tampered)  # type: ignore[arg-type]
    assert check(signer, tampered) is CreditCheck.MISMATCH


def test_rotation_a_credit_signed_with_the_old_key_verifies_on_the_new() -> None:
    """A -> B: an instance signing with B that still lists A accepts credits signed with A."""
    old, new = CreditSigner("key-A"), CreditSigner("key-B", ["key-A"])
    result = new.verify(signed(old))  # type: ignore[arg-type]
    assert result and result.key_id == key_id("key-A")
    assert new.verify(signed(new)).key_id == key_id("key-B")  # type: ignore[arg-type]
    # ... and, while the roll lasts, an instance still signing with A that lists B.
    assert CreditSigner("key-A", ["key-B"]).verify(signed(new))  # type: ignore[arg-type]
    # Once A is dropped, what A signed is refused, naming the key it was signed with.
    dropped = CreditSigner("key-B").verify(signed(old))  # type: ignore[arg-type]
    assert dropped.check is CreditCheck.UNKNOWN_KEY and dropped.key_id == key_id("key-A")


def test_a_credit_signed_with_an_unknown_key_is_refused() -> None:
    verifier = CreditSigner("key-B", ["key-A"])
    assert check(verifier, signed(CreditSigner("key-X"))) is CreditCheck.UNKNOWN_KEY


def test_a_forged_key_id_does_not_help() -> None:
    """Naming a held key's id does not make another key's signature verify."""
    verifier = CreditSigner("key-B", ["key-A"])
    forged = [(HEADER, mac_of(CreditSigner("key-X"))), (KEY_ID_HEADER, key_id("key-A").encode())]
    assert check(verifier, FakeMessage(VALUE, forged)) is CreditCheck.MISMATCH


def test_a_tampered_value_fails_under_every_held_key() -> None:
    verifier = CreditSigner("key-B", ["key-A"])
    for signer in (CreditSigner("key-A"), CreditSigner("key-B")):
        headers = signed_headers(signer)
        assert check(verifier, FakeMessage(VALUE + b"!", headers)) is CreditCheck.MISMATCH
        assert check(verifier, FakeMessage(VALUE[:-1], headers)) is CreditCheck.MISMATCH


def test_records_from_before_key_ids_still_verify_by_trying_every_key() -> None:
    verifier = CreditSigner("key-B", ["key-A"])
    mac_only = [(HEADER, mac_of(CreditSigner("key-A")))]
    result = verifier.verify(FakeMessage(VALUE, mac_only))  # type: ignore[arg-type]
    assert result and result.key_id == key_id("key-A")
    assert check(verifier, FakeMessage(VALUE + b"0", mac_only)) is CreditCheck.MISMATCH
    assert check(CreditSigner("key-C"), FakeMessage(VALUE, mac_only)) is CreditCheck.MISMATCH


def test_no_signature_is_its_own_verdict() -> None:
    signer = CreditSigner("s3cret")
    assert check(signer, FakeMessage(VALUE, None)) is CreditCheck.UNSIGNED
    assert check(signer, FakeMessage(VALUE, [(KEY_ID_HEADER, b"12345678")])) is (
        CreditCheck.UNSIGNED)


def test_verdicts_name_key_ids_never_keys() -> None:
    signer = CreditSigner("hunter2-new", ["hunter2-old"])
    texts = [signer.describe(),
             signer.verify(signed(CreditSigner("hunter2-x"))).describe(),  # type: ignore[arg-type]
             signer.verify(signed(CreditSigner("hunter2-old"))).describe()]  # type: ignore[arg-type]
    assert key_id("hunter2-old") in texts[0] and key_id("hunter2-new") in texts[0]
    assert "LEDGER_CREDIT_KEYS" in texts[1]
    assert all("hunter2" not in text for text in texts), texts
    assert "hunter2" not in repr(signer)


def test_a_signer_without_a_key_cannot_be_made() -> None:
    with pytest.raises(UsageError, match="LEDGER_CREDIT_KEY"):
        CreditSigner("")


def test_key_ids_are_short_and_stable() -> None:
    assert key_id("key-A") == key_id("key-A") != key_id("key-B")
    assert len(key_id("key-A")) == 8 and int(key_id("key-A"), 16) >= 0


def test_the_credit_keys_are_read_and_never_printed() -> None:
    settings = from_env({"LEDGER_CREDIT_KEY": "hunter2-credit",
                         "LEDGER_CREDIT_KEYS": " hunter2-old , hunter2-older,"})
    assert settings.credit_key == "hunter2-credit"
    assert settings.accepted_credit_keys == ("hunter2-old", "hunter2-older")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in repr(settings.with_(topic_prefix="x"))
    assert from_env({}).accepted_credit_keys == ()
    assert from_env({}).credit_key == ""


def test_a_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "credit.key"
    first = ensure_key_file(path)
    assert len(first) >= 40 and "," not in first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_key_file(path) == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["credit.key"]  # no temporaries
    assert ensure_key_file(tmp_path / "other.key") != first


def test_an_empty_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "credit.key"
    path.write_text("\n")
    with pytest.raises(UsageError, match="no credit key"):
        ensure_key_file(path)
    assert path.read_text() == "\n"


def test_refused_credits_are_exported_as_a_counter() -> None:
    registry = CollectorRegistry()
    processor = SimpleNamespace(stats=ProcessorStats(credits_refused=3), lag={},
                                batch_latency=LatencyHistogram())
    registry.register(ProcessorCollector(processor))
    assert "ledger_credits_refused_total 3.0" in generate_latest(registry).decode()
