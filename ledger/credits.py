"""Routed credits are signed, so a record on the public commands topic cannot mint points.

A join's credit travels from the user's owner to the room's owner as an APPLY_CREDIT
record on points.commands, a topic every client may write. Each processor signs the
credits it routes with an HMAC over the record's bytes under a key that only processors
hold (LEDGER_CREDIT_KEY); the owner applies a credit only if the signature verifies under
that key or one of the keys still accepted during a rotation (LEDGER_CREDIT_KEYS). A second
header names the signing key by a short, non-secret id, so a verifier tries that key first
and can say "signed with a key I do not hold" rather than just "bad signature".
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ledger.errors import UsageError


class SignedRecord(Protocol):
    """A consumed record as the signer reads it (confluent-kafka's Message, or another)."""

    def value(self) -> bytes | None: ...

    def headers(self) -> Any: ...


HEADER = "ledger-credit-mac"
KEY_ID_HEADER = "ledger-credit-key-id"

Headers = list[tuple[str, str | bytes | None]]


def key_id(key: str) -> str:
    """A key's public name: the first 8 hex digits of its SHA-256 (reveals nothing usable)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class CreditCheck(enum.Enum):
    VERIFIED = "verified"
    UNSIGNED = "unsigned"  # no signature header at all
    UNKNOWN_KEY = "unknown_key"  # names a key id this instance does not hold
    MISMATCH = "mismatch"  # no held key gives this signature: tampered, or an unlisted key


@dataclass(frozen=True)
class Verification:
    """What verifying one credit found; true only if a held key verified it."""

    check: CreditCheck
    key_id: str | None = None  # the key that verified, or the one the record named

    def __bool__(self) -> bool:
        return self.check is CreditCheck.VERIFIED

    def describe(self) -> str:
        """One line for a dead letter or a log; names key ids only, never keys."""
        named = f"key id {self.key_id}" if self.key_id else "no key id"
        return {
            CreditCheck.VERIFIED: f"signed with {named}",
            CreditCheck.UNSIGNED: "no signature header",
            CreditCheck.UNKNOWN_KEY: f"signed with {named}, which is neither LEDGER_CREDIT_KEY "
            "nor in LEDGER_CREDIT_KEYS here",
            CreditCheck.MISMATCH: f"signature ({named}) does not match the record under any "
            "held key (tampered, or signed with a key not held here)",
        }[self.check]


class CreditSigner:
    """Signs with one key; verifies under it and under every key still accepted."""

    def __init__(self, key: str, accepted: Iterable[str] = ()) -> None:
        if not key:
            raise UsageError("a credit signer needs a signing key (LEDGER_CREDIT_KEY)")
        self.key_id = key_id(key)
        self._key = key.encode()
        self._by_id: dict[str, list[bytes]] = {}
        for k in dict.fromkeys([key, *accepted]):  # in order, without repeats
            self._by_id.setdefault(key_id(k), []).append(k.encode())

    @property
    def key_ids(self) -> list[str]:
        """Every key id verified here, the signing key's first."""
        return list(self._by_id)

    def describe(self) -> str:
        """For the start-up log: key ids only."""
        others = [k for k in self.key_ids if k != self.key_id]
        return f"signing key id {self.key_id}" + (
            f", also accepting {', '.join(others)}" if others else "")

    def sign(self, value: bytes) -> Headers:
        return [(HEADER, _mac(self._key, value)), (KEY_ID_HEADER, self.key_id.encode())]

    def verify(self, msg: SignedRecord) -> Verification:
        headers = dict(msg.headers() or [])
        given = headers.get(HEADER)
        if not isinstance(given, bytes):
            return Verification(CreditCheck.UNSIGNED)
        named = _named_key_id(headers.get(KEY_ID_HEADER))
        if named is None:  # signed before key ids: try every held key
            candidates = [(i, k) for i, keys in self._by_id.items() for k in keys]
        elif named in self._by_id:
            candidates = [(named, k) for k in self._by_id[named]]
        else:
            return Verification(CreditCheck.UNKNOWN_KEY, named)
        for kid, key in candidates:
            if hmac.compare_digest(given, _mac(key, msg.value())):
                return Verification(CreditCheck.VERIFIED, kid)
        return Verification(CreditCheck.MISMATCH, named)


def _mac(key: bytes, value: bytes | None) -> bytes:
    return hmac.new(key, value or b"", hashlib.sha256).digest()


def _named_key_id(raw: object) -> str | None:
    if not isinstance(raw, bytes):
        return None
    return raw.decode("ascii", "replace")[:64]


# --- keys kept in files (the dev stack's and the demo's) -------------------------------------


def generate_key() -> str:
    """A random key (256 bits, URL-safe base64: never a comma, so it can be listed)."""
    return secrets.token_urlsafe(32)


def read_key_file(path: Path) -> str | None:
    """The key in `path`, or None if there is none."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    return key or None


def ensure_key_file(path: Path) -> str:
    """The key in `path`, made once (random, mode 600) if the file does not exist yet.

    Written whole under a temporary name and linked into place, so two processes racing
    here agree on one key and neither reads a half-written file.
    """
    found = read_key_file(path)
    if found:
        return found
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(generate_key() + "\n")
        with contextlib.suppress(FileExistsError):  # another process was first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    key = read_key_file(path)
    if key is None:
        raise UsageError(f"{path} holds no credit key: delete it to have a new one made")
    return key
