"""The package as users get it: sdist, a wheel built from it, a plain install with no extras.

A development checkout hides what an install lacks (a runtime import only the dev extras
bring, schema files outside the package, a compiled part that needs a compiler). Here
`python -m build` makes the sdist and builds the wheel from that sdist, the wheel goes
into a fresh virtual environment without extras, and that `ledger`, run outside the
checkout, replays and verifies a journal on the session's broker. A second wheel built
with no working C compiler must install and give the same results, saying once that
it reads with the pure-Python reader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import duckdb
import pytest

from ledger.settings import Settings
from tests.integration.journal_factory import write_journal

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = sorted(p.name for p in (REPO / "ledger" / "schemas").glob("*.avsc"))
DEVSTACK = {"devstack/pom.xml", "devstack/stack.py", "devstack/kafka.py", "devstack/py.typed"}
PURE_PYTHON = "pure-Python reader"


def run(argv: list[object], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def build(out: Path, cwd: Path, env: dict[str, str] | None = None) -> tuple[Path, Path]:
    """(sdist, wheel): the wheel is built from the sdist, as `python -m build` does."""
    run([sys.executable, "-m", "build", "--outdir", out, REPO], cwd, env)
    return next(out.glob("*.tar.gz")), next(out.glob("*.whl"))


def venv_with(wheel: Path, where: Path) -> Path:
    """A fresh virtual environment with the wheel and its declared dependencies only."""
    run([sys.executable, "-m", "venv", where], where.parent)
    run([where / "bin" / "pip", "install", "-q", wheel], where.parent)
    return where / "bin"


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory outside the checkout: nothing imports from the repo."""
    return tmp_path_factory.mktemp("user")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, outside: Path) -> tuple[Path, Path]:
    return build(tmp_path_factory.mktemp("dist"), outside)


@pytest.fixture(scope="module")
def plain(dist: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return venv_with(dist[1], tmp_path_factory.mktemp("plain") / "venv")


def replay_and_verify(bin_dir: Path, settings: Settings, cwd: Path) -> str:
    """Replay into a DuckDB file and verify it; returns the replay's stderr."""
    store = f"duckdb:///{cwd / (settings.topic_prefix + '.duckdb')}"
    base = [bin_dir / "ledger", "--bootstrap", settings.bootstrap,
            "--topic-prefix", settings.topic_prefix, "--store", store]
    replayed = run([*base, "replay", "--no-progress"], cwd)
    verified = run([*base, "verify"], cwd)
    assert verified.returncode == 0
    return replayed.stderr


def balances_in(path: Path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as db:
        return dict(db.execute("SELECT account, balance FROM balances").fetchall())


def test_the_sdist_and_the_wheel_carry_what_an_install_needs(dist: tuple[Path, Path]) -> None:
    sdist, wheel = dist
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    assert {f"ledger/schemas/{s}" for s in SCHEMAS} <= names
    assert {"ledger/py.typed", "projections/py.typed", "cli/py.typed"} <= names
    assert any(n.startswith("ledger/wire/_eventreader") and n.endswith(".so") for n in names)
    assert names >= DEVSTACK  # `ledger dev up` fetches the broker jars with this pom
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {"setup.py", "pyproject.toml", "ledger/wire/_eventreader.c"} <= members
    assert {f"ledger/schemas/{s}" for s in SCHEMAS} <= members
    assert members >= DEVSTACK


def test_an_installed_dev_stack_finds_its_pom_in_the_install(plain: Path, outside: Path) -> None:
    probe = "import devstack.kafka as k; print(k.POM.is_file(), k.POM)"
    found, path = run([plain / "python", "-c", probe], outside).stdout.split()
    assert found == "True"
    assert Path(path).is_relative_to(plain.parent)  # the venv's copy, not the checkout's


def test_a_plain_install_starts_and_brings_no_dev_tools(plain: Path, outside: Path) -> None:
    shown = run([plain / "ledger", "--version"], outside).stdout
    assert shown.strip() == f"ledger, version {version('points-ledger')}"
    assert "replay" in run([plain / "ledger", "--help"], outside).stdout
    # Only the declared dependencies: a missing runtime one shows up here, not in a dev venv.
    probe = "import importlib.util as u; print([m for m in ('pytest', 'hypothesis', " \
            "'matplotlib', 'mypy') if u.find_spec(m)])"
    assert run([plain / "python", "-c", probe], outside).stdout.strip() == "[]"


def test_a_plain_install_replays_and_verifies_a_journal(
    plain: Path, outside: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 600, txn_size=150)
    said = replay_and_verify(plain, settings, outside)
    assert PURE_PYTHON not in said  # this wheel has the compiled reader
    assert balances_in(outside / f"{settings.topic_prefix}.duckdb") == journal.balances()


def test_without_a_c_compiler_the_install_works_and_says_so_once(
    tmp_path_factory: pytest.TempPathFactory, outside: Path,
    make_settings: Callable[..., Settings],
) -> None:
    _, wheel = build(tmp_path_factory.mktemp("dist-nocc"), outside,
                     env={"CC": "/bin/false", "LDSHARED": "/bin/false"})
    with zipfile.ZipFile(wheel) as whl:
        assert not any(n.endswith(".so") for n in whl.namelist())
    bin_dir = venv_with(wheel, tmp_path_factory.mktemp("nocc") / "venv")
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 600, txn_size=150)
    said = replay_and_verify(bin_dir, settings, outside)
    assert said.count(PURE_PYTHON) == 1, said
    assert balances_in(outside / f"{settings.topic_prefix}.duckdb") == journal.balances()
