"""Where `ledger serve` takes its credit key from: LEDGER_CREDIT_KEY, the dev stack's, or
nowhere (a refusal); and the demo's own key.

No broker is needed: a dev home is faked by writing the stack record `ledger dev up` leaves
(stack.json) and the key it makes; a stack on port 1, where nothing listens, shows that serve
got past the key (exit 3, unreachable) instead of refusing (exit 2).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import devstack
from ledger.credits import ensure_key_file, key_id
from ledger.demo import processor_credit_key
from ledger.errors import UsageError
from ledger.settings import Settings
from ledger.wiring import NO_CREDIT_KEY, credit_key_of, credit_signer

REPO = Path(__file__).resolve().parents[2]


def fake_dev_home(home: Path, base_port: int = 9092, brokers: int = 1) -> str:
    """A home as `ledger dev up` leaves it (the record of what runs, the key); its key."""
    home.mkdir(parents=True, exist_ok=True)
    record = {"brokers": brokers, "base_port": base_port, "auth": False,
              "jars_dir": str(home / "jars")}
    (home / "stack.json").write_text(json.dumps(record) + "\n")
    return ensure_key_file(devstack.credit_key_file(home))


def serve(home: Path, bootstrap: str) -> subprocess.CompletedProcess[str]:
    """`ledger -v serve` with no LEDGER_* variable but the home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "cli.main", "--bootstrap", bootstrap, "-v",
                           "serve", "--instance-id", "unit"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def test_serve_uses_the_dev_stacks_generated_key(tmp_path: Path) -> None:
    key = fake_dev_home(tmp_path, base_port=1)
    done = serve(tmp_path, "127.0.0.1:1")
    assert done.returncode == 3, done.stderr  # past the key: Kafka is unreachable
    assert f"signing key id {key_id(key)}" in done.stderr
    assert key not in done.stdout + done.stderr
    assert "LEDGER_CREDIT_KEY is not set" not in done.stderr


def test_serve_elsewhere_without_a_key_refuses_in_one_line(tmp_path: Path) -> None:
    fake_dev_home(tmp_path, base_port=1)  # a dev stack exists, but serve is pointed elsewhere
    done = serve(tmp_path, "127.0.0.1:2")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {NO_CREDIT_KEY}"
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:9092", "localhost:9092",
                                       "PLAINTEXT://127.0.0.1:9092", " 127.0.0.1:9092 "])
def test_the_dev_stacks_key_for_its_own_bootstrap(tmp_path: Path, bootstrap: str) -> None:
    key = fake_dev_home(tmp_path)
    settings = Settings(bootstrap=bootstrap, home=tmp_path)
    assert credit_key_of(settings) == key
    assert credit_signer(settings).key_id == key_id(key)


def test_any_broker_of_a_three_broker_stack_is_the_stack(tmp_path: Path) -> None:
    key = fake_dev_home(tmp_path, brokers=3)
    for bootstrap in ("127.0.0.1:9093", "127.0.0.1:9094,localhost:9092"):
        assert credit_key_of(Settings(bootstrap=bootstrap, home=tmp_path)) == key


@pytest.mark.parametrize("bootstrap", ["10.0.0.7:9092", "127.0.0.1:9095",
                                       "127.0.0.1:9092,kafka.prod:9092", ""])
def test_no_dev_key_for_another_broker(tmp_path: Path, bootstrap: str) -> None:
    fake_dev_home(tmp_path)
    settings = Settings(bootstrap=bootstrap, home=tmp_path)
    assert credit_key_of(settings) is None
    with pytest.raises(UsageError) as refused:
        credit_signer(settings)
    assert str(refused.value) == NO_CREDIT_KEY and "\n" not in NO_CREDIT_KEY


def test_no_dev_key_without_a_stack_or_its_key(tmp_path: Path) -> None:
    assert credit_key_of(Settings(bootstrap="127.0.0.1:9092", home=tmp_path)) is None
    fake_dev_home(tmp_path)
    devstack.credit_key_file(tmp_path).unlink()  # a stack started before keys were made
    assert credit_key_of(Settings(bootstrap="127.0.0.1:9092", home=tmp_path)) is None


def test_the_configured_key_wins_and_old_keys_are_accepted(tmp_path: Path) -> None:
    fake_dev_home(tmp_path)
    settings = Settings(bootstrap="127.0.0.1:9092", home=tmp_path, credit_key="key-B",
                        accepted_credit_keys=("key-A",))
    signer = credit_signer(settings)
    assert signer.key_id == key_id("key-B")
    assert signer.key_ids == [key_id("key-B"), key_id("key-A")]


def test_the_demo_makes_its_own_key_once_unless_one_is_given(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    elsewhere = Settings(bootstrap="10.0.0.7:9092", home=tmp_path)
    made = processor_credit_key(elsewhere, work)
    assert stat.S_IMODE((work / "credit.key").stat().st_mode) == 0o600
    assert processor_credit_key(elsewhere, work) == made
    assert processor_credit_key(elsewhere.with_(credit_key="given"), work) == "given"
    dev_key = fake_dev_home(tmp_path / "dev")
    on_dev = Settings(bootstrap="127.0.0.1:9092", home=tmp_path / "dev")
    assert processor_credit_key(on_dev, tmp_path / "dev" / "demo") == dev_key


def test_dev_status_shows_the_key_file_and_a_wipe_discards_it(tmp_path: Path) -> None:
    key = fake_dev_home(tmp_path)
    path = devstack.credit_key_file(tmp_path)
    assert devstack.status(tmp_path).credit_key == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in "\n".join(devstack.status(tmp_path).describe())
    assert f"wiped {path}" in devstack.down(tmp_path, wipe=True)  # what it signed is gone too
    assert not path.exists()
