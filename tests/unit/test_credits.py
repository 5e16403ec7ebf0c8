"""Routed credits carry a signature only processors can make."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.credits import HEADER, CreditSigner
from ledger.settings import from_env


@dataclass
class FakeMessage:
    """Just the two accessors the signer reads (a Message cannot be built in Python)."""

    _value: bytes
    _headers: list[tuple[str, bytes]] | None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def test_signed_credit_verifies_and_tampering_does_not() -> None:
    signer = CreditSigner("s3cret")
    value = b"\xc3\x01credit-bytes"
    headers = signer.sign(value)
    assert signer.verify(FakeMessage(value, headers))  # type: ignore[arg-type]
    assert not signer.verify(FakeMessage(value + b"0", headers))  # type: ignore[arg-type]
    assert not signer.verify(FakeMessage(value, None))  # type: ignore[arg-type]
    assert not CreditSigner("other").verify(FakeMessage(value, headers))  # type: ignore[arg-type]
    assert headers[0][0] == HEADER


def test_the_credit_key_is_never_printed() -> None:
    settings = from_env({"LEDGER_CREDIT_KEY": "hunter2-credit"})
    assert settings.credit_key == "hunter2-credit"
    assert "hunter2" not in repr(settings)
