"""Bad input, table-driven: CLI arguments, and raw records placed on <prefix>.commands.

CLI: every case runs the `ledger` entry point (cli.main.main, in this process; a few also
as the installed command) against a bootstrap where nothing listens, so a usage error
must be found before any network I/O: exit 2, one line on stderr starting with "error:",
no traceback, nothing on stdout.

Records: one processor runs for the whole module; each case produces a record with a raw
producer (murmur2 partitioner, as every ledger producer) and expects either a rejection
outcome with a machine-readable reason in <prefix>.results, or (for records without a
usable command id) a dead letter carrying the original bytes and headers naming source
topic, partition, offset and error. After every case a valid command is still accepted;
the last test checks that the journal and the balance snapshots agree.

Oversized reasons: a reason longer than MAX_REASON_CHARS (4096) is refused by the CLI
(exit 2) and by LedgerClient (UsageError) before anything is sent; several megabytes are
refused client-side by the Kafka producer itself (MSG_SIZE_TOO_LARGE, ~1 MB limit); a raw
record under the producer's limit with a long reason is rejected by the processor as
`invalid_command` without writing an event.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError, KafkaException, Producer

from cli.main import main
from ledger.client import LedgerClient, new_command_id
from ledger.domain import MAX_COMMAND_ID_CHARS, MAX_REASON_CHARS, Actor, Earn, OpenAccount
from ledger.errors import UsageError
from ledger.journal import find_event
from ledger.kafka import make_producer, partition_for
from ledger.records import ReverseRef
from ledger.settings import Settings
from ledger.topics import create_topics
from ledger.wire import MAGIC, Codec
from ledger.wiring import ProcessorClients
from tests.integration.ledger_helpers import (
    ThreadedProcessor,
    journal,
    party_fold,
    snapshot_balances,
    start_processor,
)
from tests.integration.observe import Observer

pytestmark = pytest.mark.integration

# --- the CLI -----------------------------------------------------------------------------

NOWHERE = "127.0.0.1:1"  # nothing listens here: reaching the network would give exit 3
LONG_REASON = "r" * (MAX_REASON_CHARS + 1)
LONG_ID = "c" * (MAX_COMMAND_ID_CHARS + 1)

# (id, arguments after the global options, text the one error line must contain)
CLI_CASES: list[tuple[str, list[str], str]] = [
    ("earn negative", ["earn", "user:a", "-5"], "positive integer"),
    ("earn zero", ["earn", "user:a", "0"], "positive integer"),
    ("earn fraction", ["earn", "user:a", "1.5"], "positive integer"),
    ("earn word", ["earn", "user:a", "ten"], "positive integer"),
    ("earn exponent", ["earn", "user:a", "1e3"], "positive integer"),
    ("earn plus sign", ["earn", "user:a", "+5"], "positive integer"),
    ("earn above max", ["earn", "user:a", "1000000001"], "above the maximum"),
    ("earn huge", ["earn", "user:a", "9" * 40], "above the maximum"),
    ("earn no prefix", ["earn", "alice", "5"], "bad account"),
    ("earn bad id chars", ["earn", "user:bad id!", "5"], "bad account"),
    ("earn empty id", ["earn", "user:", "5"], "bad account"),
    ("earn id of 65", ["earn", "user:" + "a" * 65, "5"], "bad account"),
    ("earn system", ["earn", "system:rewards", "5"], "must be a user"),
    ("earn missing amount", ["earn", "user:a"], "missing argument"),
    ("earn extra argument", ["earn", "user:a", "5", "6"], "unexpected extra argument"),
    ("spend negative", ["spend", "user:a", "-1"], "positive integer"),
    ("spend room word", ["spend", "room:r", "lots"], "positive integer"),
    ("join fee zero", ["join", "--user", "a", "--room", "r", "--fee", "0"], "positive integer"),
    ("join user is room", ["join", "--user", "room:r", "--room", "r", "--fee", "5"], "user"),
    ("join room is user", ["join", "--user", "a", "--room", "user:b", "--fee", "5"], "room"),
    ("join missing room", ["join", "--user", "a", "--fee", "5"], "missing option"),
    ("open negative grant", ["account", "open", "user:a", "--grant", "-3"], "positive integer"),
    ("open floor word", ["account", "open", "user:a", "--floor", "abc"], "--floor"),
    ("open system", ["account", "open", "system:x"], "must be a user"),
    ("open grant above max", ["account", "open", "room:r", "--grant", "2000000000"], "maximum"),
    ("bad actor", ["earn", "user:a", "5", "--actor", "ROBOT"], "--actor"),
    ("timeout zero", ["earn", "user:a", "5", "--wait", "--timeout", "0"], "--timeout"),
    ("reason too long", ["earn", "user:a", "5", "--reason", LONG_REASON], "reason"),
    ("command id too long", ["spend", "user:a", "5", "--command-id", LONG_ID], "command id"),
    ("reverse reason too long", ["reverse", "e1", "--reason", LONG_REASON], "reason"),
    ("reverse missing id", ["reverse"], "missing argument"),
    ("unknown command", ["frobnicate"], "no such command"),
    ("unknown option", ["join", "--user", "a", "--fee", "5", "-z"], "no such option"),
    ("serve max batch zero", ["serve", "--max-batch", "0"], "--max-batch"),
    ("serve metrics port", ["serve", "--metrics-port", "70000"], "--metrics-port"),
    ("partitions zero", ["--partitions", "0", "topics", "create"], "--partitions"),
    ("log format", ["--log-format", "xml", "topics", "create"], "--log-format"),
    ("kafka config missing", ["--kafka-config", "{tmp}/none.properties", "earn", "user:a", "5"],
     "cannot read --kafka-config"),
    ("kafka config bad line", ["--kafka-config", "{tmp}/bad.properties", "topics", "create"],
     "expected key=value"),
    ("max amount env", ["earn", "user:a", "5", "{env:LEDGER_MAX_AMOUNT=lots}"], "integer"),
]


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _argv_env(args: list[str], tmp: Path) -> tuple[list[str], dict[str, str | None]]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LEDGER_")}
    env["LEDGER_HOME"] = str(tmp)
    argv = ["--bootstrap", NOWHERE]
    for arg in args:
        if arg.startswith("{env:"):
            name, _, value = arg[5:-1].partition("=")
            env[name] = value
        else:
            argv.append(arg.replace("{tmp}", str(tmp)))
    return argv, env


def _run_cli(args: list[str], tmp: Path) -> CliRun:
    """`cli.main.main` in this process (a fresh interpreter per case costs ~0.5 s of CPU)."""
    argv, env = _argv_env(args, tmp)
    root, kafka_log = logging.getLogger(), logging.getLogger("ledger.kafka")
    saved = (root.handlers[:], root.level, kafka_log.level)
    started = time.monotonic()
    code: Any = 0
    try:
        with CliRunner().isolation(env=env) as (out, err, _):
            try:
                main(argv)
            except SystemExit as e:
                code = e.code
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:  # main() configures logging onto the captured stderr: put the test's back
        root.handlers[:], _level, _kafka_level = saved
        root.setLevel(_level)
        kafka_log.setLevel(_kafka_level)
    return CliRun(code, stdout, stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliRun]:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "bad.properties").write_text("security.protocol=SASL_PLAINTEXT\nno separator\n")
    return {name: _run_cli(args, tmp) for name, args, _ in CLI_CASES}


def test_the_installed_ledger_command_behaves_the_same(tmp_path: Path) -> None:
    """A few cases through the real entry point, as a separate process."""
    (tmp_path / "bad.properties").write_text("no separator\n")
    for name in ("earn negative", "join missing room", "kafka config bad line"):
        args = next(c[1] for c in CLI_CASES if c[0] == name)
        argv, env = _argv_env(args, tmp_path)
        environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        done = subprocess.run([str(Path(sys.executable).parent / "ledger"), *argv],
                              capture_output=True, text=True, timeout=60, env=environ)
        assert done.returncode == 2, (name, done.stderr)
        assert "Traceback" not in done.stderr
        in_process = _run_cli(args, tmp_path).stderr  # click names the program after argv[0]
        assert done.stderr == in_process.replace(f"'{Path(sys.argv[0]).name} ", "'ledger "), name


@pytest.mark.parametrize(("name", "expected"), [(c[0], c[2]) for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_cli_usage_error_is_one_line_and_exit_2(
    cli_runs: dict[str, CliRun], name: str, expected: str
) -> None:
    done = cli_runs[name]
    assert done.seconds < 20, "a usage error must not wait for the network"
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert expected.lower() in lines[0].lower(), lines[0]
    assert len(lines[0]) < 400, "the message must not echo megabytes of input"
    assert done.stdout == ""


# --- raw records on <prefix>.commands ----------------------------------------------------

ALICE, BOB, ROOM = "user:alice", "user:bob", "room:math"
LONG_MAX = 2**63 - 1
PRODUCER_LIMIT = 999_964  # librdkafka's message.max.bytes (1,000,000) less its overhead


@dataclass
class Env:
    settings: Settings
    codec: Codec
    producer: Producer
    observer: Observer
    processor: ThreadedProcessor
    client: LedgerClient
    grant_ref: ReverseRef  # a real journal event: alice's opening grant
    dead_cases: list[tuple[int, int]] = field(default_factory=list)
    refused_ids: set[str] = field(default_factory=set)

    @property
    def partitions(self) -> int:
        return self.settings.partitions


def record(kind: str = "EARN", account: str = ALICE, amount: int = 5, **fields: Any) -> dict[
    str, Any
]:
    """A command record as the codec takes it; fields override the defaults."""
    rec: dict[str, Any] = {
        "command_id": f"raw-{uuid.uuid4()}",
        "kind": kind,
        "account": account,
        "counterparty": None,
        "amount": amount,
        "floor": 0,
        "ref_event_id": None,
        "ref_partition": None,
        "ref_offset": None,
        "actor": "USER",
        "reason": "bad input test",
        "issued_at": int(time.time() * 1000),
    }
    rec.update(fields)
    return rec


@dataclass(frozen=True)
class Produce:
    """What one case puts on the commands topic."""

    value: bytes | None
    key: bytes | None
    partition: int | None = None  # None: the producer's murmur2 partitioner decides
    command_id: str | None = None  # None: the record has no usable id (dead letter expected)
    nth: int = 1  # which result of this id the case waits for


def as_command(env: Env, rec: dict[str, Any], key: bytes | str | None = "account",
               partition: int | None = None, nth: int = 1) -> Produce:
    k = rec["account"].encode() if key == "account" else key
    assert not isinstance(k, str)
    return Produce(env.codec.encode("command", rec), k, partition, rec["command_id"], nth)


def dead(env: Env, value: bytes | None, key: bytes | None = ALICE.encode()) -> Produce:
    return Produce(value, key)


def _valid(env: Env) -> bytes:
    return env.codec.encode("command", record())


def _with_reason_to_size(env: Env, size: int) -> dict[str, Any]:
    """An earn whose key plus encoded value is exactly `size` bytes."""
    rec = record(reason="")
    for _ in range(5):  # the varint length prefix grows with the reason: converge
        current = len(env.codec.encode("command", rec)) + len(ALICE)
        rec["reason"] = "x" * (len(rec["reason"]) + size - current)
    assert len(env.codec.encode("command", rec)) + len(ALICE) == size
    return rec


def _enum_out_of_range(env: Env) -> bytes:
    rec = record(command_id="x")  # body: 02 'x' then the kind's zigzag index
    data = bytearray(env.codec.encode("command", rec))
    assert data[10:12] == b"\x02x"
    data[12] = 0x50  # index 40 of a 6-symbol enum
    return bytes(data)


def _bad_utf8(env: Env) -> bytes:
    data = env.codec.encode("command", record(reason="QQQQ"))
    return data.replace(b"QQQQ", b"\xff\xfe\xff\xfe")


def _reverse(env: Env, **fields: Any) -> dict[str, Any]:
    ref = env.grant_ref
    base = {"ref_event_id": ref.event_id, "ref_partition": ref.partition,
            "ref_offset": ref.offset}
    return record("REVERSE", ALICE, 0, **{**base, **fields})


def _wrong_partition(env: Env) -> int:
    return (partition_for(ALICE.encode(), env.partitions) + 1) % env.partitions


Build = Callable[[Env], Produce]
# (id, what to produce, expected: "dead:<error text>" | "rejected:<reason>" | "accepted"
#  | "repeat" (the first outcome of the id again))
RAW_CASES: list[tuple[str, Build, str]] = [
    # undecodable: no command id to answer, so a dead letter
    ("garbage bytes", lambda e: dead(e, b"\x00\xffnot avro at all"), "dead:MalformedRecord"),
    ("empty value", lambda e: dead(e, b""), "dead:TruncatedRecord"),
    ("tombstone", lambda e: dead(e, None), "dead:TruncatedRecord"),
    ("event record on commands", lambda e: dead(e, e.codec.encode("event", {
        "event_id": str(uuid.uuid4()), "command_id": "x", "kind": "EARNED",
        "postings": [{"account": ALICE, "amount": 5}, {"account": "system:rewards",
                                                       "amount": -5}],
        "occurred_at": 0, "actor": "USER", "reason": "", "reverses_event_id": None})),
     "dead:expected a command record"),
    ("balance record on commands", lambda e: dead(e, e.codec.encode("balance", {
        "account": ALICE, "balance": 10**6, "floor": 0, "is_open": True, "type": "USER",
        "updated_at": 0, "last_event_id": None})), "dead:expected a command record"),
    ("unknown fingerprint", lambda e: dead(e, MAGIC + b"\x01" * 8 + _valid(e)[10:]),
     "dead:UnknownFingerprint"),
    ("truncated record", lambda e: dead(e, _valid(e)[:25]), "dead:record"),
    ("header only", lambda e: dead(e, _valid(e)[:10]), "dead:record"),
    ("garbage just under 1 MB", lambda e: dead(e, b"\x07" * (PRODUCER_LIMIT - len(ALICE))),
     "dead:MalformedRecord"),
    ("inside the header", lambda e: dead(e, _valid(e)[:6]), "dead:TruncatedRecord"),
    ("trailing bytes", lambda e: dead(e, _valid(e) + b"\x00\x00"), "dead:trailing bytes"),
    ("invalid utf-8 string", lambda e: dead(e, _bad_utf8(e)), "dead:MalformedRecord"),
    ("enum index out of range", lambda e: dead(e, _enum_out_of_range(e)), "dead:MalformedRecord"),
    ("empty command id", lambda e: dead(e, e.codec.encode("command", record(command_id=""))),
     "dead:command_id"),
    ("command id of 300 kB", lambda e: dead(e, e.codec.encode(
        "command", record(command_id="c" * 300_000))), "dead:command_id"),
    ("account id of 400 kB", lambda e: dead(e, e.codec.encode(
        "command", record(account="user:" + "a" * 400_000)), key=b"user:" + b"a" * 400_000),
     "dead:account"),
    # amounts that bypass the CLI's checks
    ("earn negative", lambda e: as_command(e, record("EARN", amount=-5)),
     "rejected:invalid_amount"),
    ("spend negative", lambda e: as_command(e, record("SPEND", amount=-5)),
     "rejected:invalid_amount"),
    ("earn zero", lambda e: as_command(e, record("EARN", amount=0)), "rejected:invalid_amount"),
    ("earn above max", lambda e: as_command(e, record("EARN", amount=1_000_000_001)),
     "rejected:invalid_amount"),
    ("earn long max", lambda e: as_command(e, record("EARN", amount=LONG_MAX)),
     "rejected:invalid_amount"),
    ("spend long min", lambda e: as_command(e, record("SPEND", amount=-(2**63))),
     "rejected:invalid_amount"),
    ("open negative grant", lambda e: as_command(e, record("OPEN_ACCOUNT", "user:neg",
                                                           amount=-1)),
     "rejected:invalid_amount"),
    ("open floor above grant", lambda e: as_command(e, record("OPEN_ACCOUNT", "user:fl",
                                                              amount=5, floor=10)),
     "rejected:invalid_amount"),
    ("join negative fee", lambda e: as_command(e, record("JOIN", counterparty=ROOM, amount=-3)),
     "rejected:invalid_amount"),
    # reasons: the processor's cap, and a record just under the producer's size limit
    ("reason at the cap", lambda e: as_command(e, record(reason="x" * MAX_REASON_CHARS)),
     "accepted"),
    ("reason over the cap", lambda e: as_command(e, record(reason="x" * (MAX_REASON_CHARS + 1))),
     "rejected:invalid_command"),
    ("reason of 900 kB", lambda e: as_command(e, record(reason="x" * 900_000)),
     "rejected:invalid_command"),
    ("record just under 1 MB", lambda e: as_command(e, _with_reason_to_size(e, PRODUCER_LIMIT)),
     "rejected:invalid_command"),
    # idempotency: "dup-1" was accepted during set-up (spend 7 from alice)
    ("duplicate id, same payload", lambda e: as_command(
        e, record("SPEND", amount=7, command_id="dup-1"), nth=2), "repeat"),
    ("duplicate id, other payload", lambda e: as_command(
        e, record("SPEND", amount=8, command_id="dup-1"), nth=3), "rejected:conflict"),
    # routing
    ("key of another account", lambda e: as_command(e, record(), key=BOB.encode()),
     "rejected:misrouted"),
    ("no key", lambda e: as_command(e, record(), key=None), "rejected:misrouted"),
    ("key of 300 kB", lambda e: as_command(e, record(), key=b"k" * 300_000),
     "rejected:misrouted"),
    ("right key, wrong partition", lambda e: as_command(e, record(),
                                                        partition=_wrong_partition(e)),
     "rejected:misrouted"),
    # accounts
    ("malformed account id", lambda e: as_command(e, record(account="user:bad id!")),
     "rejected:invalid_account"),
    ("account without prefix", lambda e: as_command(e, record(account="alice")),
     "rejected:invalid_account"),
    ("spend from system account", lambda e: as_command(e, record("SPEND", "system:rewards")),
     "rejected:invalid_account"),
    ("open a system account", lambda e: as_command(e, record("OPEN_ACCOUNT", "system:mint",
                                                             amount=0)),
     "rejected:invalid_account"),
    ("join to a user", lambda e: as_command(e, record("JOIN", counterparty=BOB, amount=1)),
     "rejected:invalid_account"),
    ("join without a room", lambda e: as_command(e, record("JOIN", amount=1)),
     "rejected:invalid_account"),
    ("join an unknown room", lambda e: as_command(e, record("JOIN", counterparty="room:none",
                                                            amount=1)),
     "rejected:unknown_account"),
    ("earn to unknown account", lambda e: as_command(e, record(account="user:ghost")),
     "rejected:unknown_account"),
    ("open an existing account", lambda e: as_command(e, record("OPEN_ACCOUNT", amount=0)),
     "rejected:account_exists"),
    ("spend over the balance", lambda e: as_command(e, record("SPEND", amount=10**9)),
     "rejected:insufficient_points"),
    # a credit not routed (signed) by a processor is dead-lettered before anything else
    ("unsigned credit to unknown account", lambda e: dead(e, e.codec.encode("command", record(
        "APPLY_CREDIT", "room:ghost", 5, ref_event_id=str(uuid.uuid4()))), key=b"room:ghost"),
     "dead:not signed by a processor key"),
    # reversals of what is not there
    ("reverse nonexistent event", lambda e: as_command(e, _reverse(
        e, ref_event_id=str(uuid.uuid4()))), "rejected:not_reversible"),
    ("reverse past the end", lambda e: as_command(e, _reverse(e, ref_offset=10**12)),
     "rejected:not_reversible"),
    ("reverse negative partition", lambda e: as_command(e, _reverse(e, ref_partition=-1)),
     "rejected:not_reversible"),
    ("reverse partition 999", lambda e: as_command(e, _reverse(e, ref_partition=999)),
     "rejected:not_reversible"),
    ("reverse negative offset", lambda e: as_command(e, _reverse(e, ref_offset=-2)),
     "rejected:not_reversible"),
    ("reverse without position", lambda e: as_command(e, _reverse(
        e, ref_partition=None, ref_offset=None)), "rejected:not_reversible"),
]


def _produce(env: Env, p: Produce) -> tuple[int, int]:
    """Produce and return the record's (partition, offset)."""
    delivered: list[Any] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        delivered.append((err, msg))

    kwargs: dict[str, Any] = {"key": p.key, "value": p.value, "on_delivery": on_delivery}
    if p.partition is not None:
        kwargs["partition"] = p.partition
    env.producer.produce(env.settings.topic("commands"), **kwargs)
    assert env.producer.flush(30) == 0
    err, msg = delivered[0]
    assert err is None, err
    return msg.partition(), msg.offset()


@pytest.fixture(scope="module")
def env(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    home = tmp_path_factory.mktemp("badinput")
    settings = Settings(bootstrap=bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}",
                        partitions=3, home=home, store=f"duckdb:///{home / 'x.duckdb'}")
    create_topics(settings)
    processor = start_processor(settings, "bad-input")
    client = LedgerClient(settings)
    observer = Observer(settings)
    producer = make_producer(settings)
    try:
        opened = {}
        for account, grant in ((ALICE, 1000), (BOB, 10), (ROOM, 0)):
            out = client.send(OpenAccount(command_id=f"open-{account}", actor=Actor.SYSTEM,
                                          reason="set-up", account=account, grant=grant))
            assert out.accepted, out
            opened[account] = out
        grant_ref = find_event(settings, opened[ALICE].event_ids[0]).ref
        environment = Env(settings, Codec(), producer, observer, processor, client, grant_ref)
        first = _produce(environment, as_command(environment, record("SPEND", amount=7,
                                                                     command_id="dup-1")))
        assert first
        assert observer.result("dup-1")["status"] == "ACCEPTED"
        yield environment
    finally:
        producer.flush(10)
        client.close()
        observer.stop()
        processor.stop()


@pytest.mark.parametrize(("build", "expect"), [c[1:] for c in RAW_CASES],
                         ids=[c[0] for c in RAW_CASES])
def test_raw_record_on_commands(env: Env, build: Build, expect: str) -> None:
    produce = build(env)
    partition, offset = _produce(env, produce)
    kind, _, detail = expect.partition(":")
    if kind == "dead":
        letter = env.observer.dead_letter(partition, offset)
        env.dead_cases.append((partition, offset))
        assert letter.headers["source_topic"] == env.settings.topic("commands")
        if "truncated" in letter.headers:  # too large to copy with headers: its first bytes
            assert produce.value and len(produce.value) > 900_000
            assert letter.value and produce.value.startswith(letter.value)
            assert letter.headers["truncated"] == f"key 10 bytes, value {len(produce.value)} bytes"
        else:
            assert letter.value == produce.value, "the original bytes"
        assert letter.key == produce.key
        assert detail in letter.headers["error"], letter.headers["error"][:500]
        assert len(letter.headers["error"]) <= 4096
    else:
        assert produce.command_id is not None
        result = env.observer.result(produce.command_id, produce.nth)
        assert (partition, offset) not in env.observer.dead
        assert len(result["detail"]) < 2000, "a rejection must not echo megabytes of input"
        if kind == "rejected":
            assert (result["status"], result["reason"]) == ("REJECTED", detail), result
            assert result["event_ids"] == []
            if env.observer.result(produce.command_id, 1)["status"] == "REJECTED":
                env.refused_ids.add(produce.command_id)
        elif kind == "repeat":
            first = env.observer.result(produce.command_id, 1)
            assert result["status"] == "ACCEPTED"
            assert (result["event_ids"], result["payload_fingerprint"]) == (
                first["event_ids"], first["payload_fingerprint"])
        else:
            assert result["status"] == "ACCEPTED", result
    # the processor keeps running: a valid command right after is accepted
    after = env.client.send(Earn(command_id=new_command_id(), actor=Actor.USER,
                                 reason="still alive", account=BOB, amount=1), timeout=30)
    assert after.accepted, after
    assert env.processor.thread.is_alive()


def test_several_megabytes_are_refused_client_side(env: Env) -> None:
    """Above Kafka's ~1 MB message limit the producer itself refuses, before sending."""
    big = env.codec.encode("command", record(reason="x" * 3_000_000))
    with pytest.raises(KafkaException) as raised:
        env.producer.produce(env.settings.topic("commands"), key=ALICE.encode(), value=big)
    assert raised.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    # LedgerClient refuses any reason over the cap, naming it, and sends nothing.
    cmd = Earn(command_id=new_command_id(), actor=Actor.USER, reason="x" * 3_000_000,
               account=ALICE, amount=1)
    with pytest.raises(UsageError, match="reason of 3000000 characters"):
        env.client.submit(cmd, wait=True)
    with pytest.raises(UsageError, match="command id"):
        env.client.submit(Earn(command_id=LONG_ID, actor=Actor.USER, reason="",
                               account=ALICE, amount=1))
    assert env.observer.count_results(cmd.command_id) == 0


def test_after_all_bad_input_nothing_is_lost_or_corrupted(env: Env) -> None:
    """Runs last in this module: the journal, the snapshots and the counters agree."""
    assert len(env.dead_cases) >= 10
    stats = env.processor.processor.stats
    assert stats.dead_letters == len(env.observer.dead) == len(env.dead_cases)
    assert env.observer.undecodable_results == 0
    entries = journal(env.settings)
    accepted = {cid for cid, rs in env.observer.results.items() if rs[0]["status"] == "ACCEPTED"}
    per_command = [e.command_id for e in entries]
    assert len(per_command) == len(set(per_command)), "a command was journaled twice"
    assert set(per_command) <= accepted
    assert not set(per_command) & env.refused_ids, "a rejected command wrote an event"
    assert all(sum(p.amount for p in e.postings) == 0 for e in entries)
    folded = party_fold(entries)
    snapshots = snapshot_balances(env.settings)
    assert {a: b for a, b in snapshots.items() if b or a in folded} == folded
    assert all(b >= 0 for b in snapshots.values())
    for letter in env.observer.dead.values():
        assert set(letter.headers) >= {"source_topic", "source_partition", "source_offset",
                                       "error"}


# --- refusals must not consume a command id ----------------------------------------------


def test_refused_records_do_not_use_up_their_command_id(settings: Settings) -> None:
    """A misrouted record or an unreadable reversal was never decided: the same id, sent
    properly later, is decided on its merits, before and after a processor restart."""
    codec = Codec()
    processor = start_processor(settings, "refusals")
    observer = Observer(settings)
    producer = make_producer(settings)
    client = LedgerClient(settings)
    try:
        assert client.send(OpenAccount(command_id="o", actor=Actor.SYSTEM, reason="",
                                       account=ALICE, grant=100)).accepted
        wrong = (partition_for(ALICE.encode(), settings.partitions) + 1) % settings.partitions
        rec = record("SPEND", amount=5, command_id="later-ok")
        producer.produce(settings.topic("commands"), key=ALICE.encode(),
                         value=codec.encode("command", rec), partition=wrong)
        producer.flush(10)
        assert observer.result("later-ok")["reason"] == "misrouted"
        processor.stop()
        processor = start_processor(settings, "refusals")  # restores from results
        spend = client.send(Earn(command_id="later-ok", actor=Actor.USER, reason="",
                                 account=ALICE, amount=5))
        assert spend.accepted, spend
    finally:
        client.close()
        observer.stop()
        processor.stop()
    assert snapshot_balances(settings) == {ALICE: 105} == party_fold(journal(settings))


class _FailingProducer:
    """A transactional producer whose journal writes holding `marker` raise, as a bug in
    handling one record would."""

    def __init__(self, real: Producer, marker: bytes) -> None:
        self._real, self._marker = real, marker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def produce(self, topic: str, value: bytes | None = None, *args: Any, **kwargs: Any) -> None:
        if topic.endswith(".events") and value is not None and self._marker in value:
            raise RuntimeError("injected failure")
        self._real.produce(topic, value, *args, **kwargs)


def _failing_on(marker: bytes) -> Callable[..., Any]:
    return lambda *a, **k: _FailingProducer(make_producer(*a, **k), marker)


def test_a_record_whose_handling_fails_is_dead_lettered_alone(settings: Settings) -> None:
    """The poison-pill guard: handling that raises (a bug, or input nobody foresaw) aborts
    the batch once, which is retried without that record; the record is dead-lettered and
    every other command of the batch is decided exactly once."""
    threaded = start_processor(settings, "poison",
                               clients=ProcessorClients(producer=_failing_on(b"boom")))
    processor = threaded.processor
    observer = Observer(settings)
    client = LedgerClient(settings)
    try:
        assert client.send(OpenAccount(command_id="o", actor=Actor.SYSTEM, reason="",
                                       account=ALICE, grant=0)).accepted
        ids = [f"e{n}" for n in range(20)] + ["boom"] + [f"f{n}" for n in range(20)]
        futures = {cid: client.submit(Earn(command_id=cid, actor=Actor.USER, reason="",
                                           account=ALICE, amount=1), wait=True) for cid in ids}
        client.flush()
        for cid, fut in futures.items():
            if cid != "boom":
                assert fut is not None and fut.result(30).accepted
        letter = observer.wait("the dead letter", lambda: next(iter(observer.dead.values()),
                                                                None))
        assert letter.headers["error"] == "RuntimeError: injected failure"
        assert Codec().decode_as("command", letter.value)["command_id"] == "boom"
        assert observer.count_results("boom") == 0
        assert processor.stats.aborts >= 1 and threaded.thread.is_alive()
    finally:
        client.close()
        observer.stop()
        threaded.stop()
    entries = journal(settings)
    assert sorted(e.command_id for e in entries) == sorted(c for c in ids if c != "boom")
    assert snapshot_balances(settings) == {ALICE: 40} == party_fold(entries)


def test_a_forged_credit_cannot_mint_points(settings: Settings) -> None:
    """Anyone who may write commands can put an APPLY_CREDIT on the topic; it must not raise
    a room's balance above what the journal holds."""
    processor = start_processor(settings, "forged")
    observer = Observer(settings)
    producer = make_producer(settings)
    client = LedgerClient(settings)
    try:
        assert client.send(OpenAccount(command_id="o", actor=Actor.SYSTEM, reason="",
                                       account=ROOM)).accepted
        forged = record("APPLY_CREDIT", ROOM, 1000, command_id="forged-1",
                        ref_event_id=str(uuid.uuid4()))
        producer.produce(settings.topic("commands"), key=ROOM.encode(),
                         value=Codec().encode("command", forged))
        producer.flush(10)
        letter = observer.wait("the forged credit's dead letter",
                               lambda: next(iter(observer.dead.values()), None))
    finally:
        client.close()
        observer.stop()
        processor.stop()
    assert snapshot_balances(settings).get(ROOM, 0) == party_fold(journal(settings)).get(ROOM, 0)
    assert "no signature header" in letter.headers["error"]
    assert processor.processor.stats.credits_refused == 1
    assert observer.count_results("forged-1") == 0
