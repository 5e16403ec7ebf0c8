"""The LedgerView protocol (what an instance knows when it decides) and a dict-backed one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ledger.domain.accounts import AccountState
from ledger.domain.events import AccountOpened

if TYPE_CHECKING:  # decide imports this module; the type is only needed by mypy
    from ledger.domain.decide import Accepted


class LedgerView(Protocol):
    """What one processor instance knows when it decides."""

    def owned(self, account: str) -> AccountState | None:
        """State of an account this instance owns (None if not owned or not opened)."""
        ...

    def known(self, account: str) -> bool:
        """Whether the account is open anywhere (the global accounts table)."""
        ...


class InMemoryView:
    """Dict-backed LedgerView: owned states plus the set of known (open) accounts."""

    def __init__(self, states: Iterable[AccountState] = (), known: Iterable[str] = ()) -> None:
        self._states: dict[str, AccountState] = {s.account: s for s in states}
        self._known: set[str] = set(known) | set(self._states)

    def owned(self, account: str) -> AccountState | None:
        return self._states.get(account)

    def known(self, account: str) -> bool:
        return account in self._known

    def put(self, state: AccountState) -> None:
        """Own an account with this state (e.g. restored from a balance snapshot)."""
        self._states[state.account] = state
        self._known.add(state.account)

    def forget(self, account: str) -> None:
        """Stop owning an account (its partition was revoked); it stays known."""
        self._states.pop(account, None)

    def add_known(self, account: str) -> None:
        """Record an account opened anywhere (from the global accounts table)."""
        self._known.add(account)

    def apply(self, accepted: Accepted) -> None:
        """Take in an accepted decision's new states and opened accounts."""
        for state in accepted.states:
            self.put(state)
        for event in accepted.events:
            if isinstance(event, AccountOpened):
                self._known.add(event.account)

    def states(self) -> dict[str, AccountState]:
        """A copy of all owned states."""
        return dict(self._states)
