"""Tasks behind the write commands: send a command (optionally await its outcome), look
up the event a reversal compensates. Plain functions of the settings, no click: the CLI
parses and renders around them, and any other caller can use them as they are."""

from __future__ import annotations

from ledger.domain import Actor, Command, Reverse
from ledger.errors import InfrastructureError, WaitTimeoutError
from ledger.records import Outcome, ReverseRef
from ledger.settings import Settings
from ledger.wiring import build_client


def send_command(settings: Settings, command: Command, ref: ReverseRef | None = None, *,
                 wait: bool, timeout: float) -> Outcome | None:
    """Send one command; with `wait`, its outcome (None without: it was acknowledged).

    WaitTimeoutError (sent, outcome unknown) and InfrastructureError (not acknowledged)
    name the command id to send again, since a retry is never applied twice."""
    client = build_client(settings)
    try:
        if not wait:
            client.submit(command, ref)
            client.flush(timeout)
            return None
        return client.send(command, ref, timeout)
    except WaitTimeoutError as e:
        raise WaitTimeoutError(
            f"{e}; to learn its outcome send it again with --command-id {command.command_id} "
            "--wait (a retry gets the first outcome, never a second event)") from None
    except InfrastructureError as e:
        raise InfrastructureError(
            f"{e}; command {command.command_id} may not be recorded: send it again with "
            f"--command-id {command.command_id} (one id is never applied twice)"
        ) from e
    finally:
        client.close()


def reversal(settings: Settings, event_id: str, *, command_id: str, actor: Actor,
             reason: str) -> tuple[Reverse, ReverseRef]:
    """The command compensating journal event `event_id`, and where that event is."""
    from ledger.journal import find_event

    found = find_event(settings, event_id)
    assert found.entry is not None  # find_event only returns decoded events
    command = Reverse(command_id=command_id, actor=actor,
                      reason=reason or f"reversal of {event_id}", event_id=event_id,
                      original=found.entry.postings)
    return command, found.ref
