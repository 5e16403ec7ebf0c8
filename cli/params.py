"""Click parameter types for the ledger's own values: point amounts and account ids.

Each refuses, before anything is sent, what the processor would refuse, with one line
that says why (the root command turns it into exit 2).
"""

from __future__ import annotations

from typing import Any

import click

from cli.context import settings_of
from ledger.domain import parse_account
from ledger.errors import UsageError


class Amount(click.ParamType[int]):
    """A positive integer of points up to the settings' maximum, strictly: 1.5, 1e3, +5,
    -3, 0 and 'ten' are refused (`zero_ok`: 0 is taken too, as an opening grant's none)."""

    name = "amount"

    def __init__(self, what: str = "amount", zero_ok: bool = False) -> None:
        self.what = what
        self.zero_ok = zero_ok

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        text = str(value).strip()
        if self.zero_ok and text == "0":
            return 0
        if not (text.isascii() and text.isdigit()) or int(text) <= 0:
            self.fail(f"{self.what} must be a positive integer, got {value!r}", param, ctx)
        number = int(text)
        maximum = settings_of(ctx).max_amount if ctx is not None else None
        if maximum is not None and number > maximum:
            self.fail(f"{self.what} {number} is above the maximum of {maximum}", param, ctx)
        return number


class Account(click.ParamType[str]):
    """An account id in canonical form (ledger.domain's rules), of one of `kinds`; a bare
    id takes the prefix `bare` when one is given (`--user alice`: user:alice)."""

    name = "account"

    def __init__(self, *kinds: str, bare: str | None = None) -> None:
        self.kinds = kinds
        self.bare = bare

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        text = str(value)
        if self.bare is not None and ":" not in text:
            text = f"{self.bare}:{text}"
        try:
            account = parse_account(text)
        except UsageError as e:
            self.fail(str(e), param, ctx)
        if self.kinds and account.split(":", 1)[0] not in self.kinds:
            self.fail(f"{text!r} must be a "
                      f"{' or '.join(k + ':<id>' for k in self.kinds)} account", param, ctx)
        return account
