"""Routed credits are signed, so a record on the public commands topic cannot mint points.

A join's credit travels from the user's owner to the room's owner as an APPLY_CREDIT
record on points.commands, a topic every client may write. Each processor signs the
credits it routes with an HMAC over the record's bytes under a key that only processors
hold (LEDGER_CREDIT_KEY); the owner applies a credit only if the signature verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from confluent_kafka import Message

HEADER = "ledger-credit-mac"
# Known to everyone, so it protects nothing: it only keeps a development stack working.
DEVELOPMENT_KEY = b"points-ledger-development-key"

log = logging.getLogger("ledger.processor")


class CreditSigner:
    def __init__(self, key: str) -> None:
        self.development = not key
        self._key = key.encode() if key else DEVELOPMENT_KEY

    def warn_if_development(self) -> None:
        """Said once the service is up, so a failed start still prints one line only."""
        if self.development:
            log.warning(
                "LEDGER_CREDIT_KEY is not set: routed credits are signed with the "
                "public development key; set a secret key in production"
            )

    def sign(self, value: bytes) -> list[tuple[str, str | bytes | None]]:
        return [(HEADER, self._mac(value))]

    def verify(self, msg: Message) -> bool:
        given = dict(msg.headers() or []).get(HEADER)
        return isinstance(given, bytes) and hmac.compare_digest(given, self._mac(msg.value()))

    def _mac(self, value: bytes | None) -> bytes:
        return hmac.new(self._key, value or b"", hashlib.sha256).digest()
