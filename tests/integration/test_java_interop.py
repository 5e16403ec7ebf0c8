"""Java's reference single-object decoder (BinaryMessageDecoder) reads our records."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.wire import Codec
from tests.unit.samples import SAMPLES

pytestmark = pytest.mark.integration
JAVA_DIR = Path(__file__).resolve().parents[1] / "interop" / "java"


@pytest.mark.skipif(not shutil.which("mvn") or not shutil.which("java"),
                    reason="needs Maven and Java 17")
def test_java_decodes_every_record_type(codec: Codec, tmp_path: Path) -> None:
    cp_file = tmp_path / "cp.txt"
    subprocess.run(["mvn", "-q", "dependency:build-classpath", f"-Dmdep.outputFile={cp_file}"],
                   cwd=JAVA_DIR, check=True, timeout=300)
    names = sorted(SAMPLES)
    lines = [f"{codec.catalogue.reader(n).path} {codec.encode(n, SAMPLES[n]).hex()}"
             for n in names]
    (tmp_path / "records.txt").write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["java", "-cp", cp_file.read_text().strip(),
         str(JAVA_DIR / "src/main/java/ledger/Decode.java"), str(tmp_path / "records.txt")],
        check=True, capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert len(out) == len(names)
    for name, line in zip(names, out, strict=True):
        java_fp, java_json = line.split(" ", 1)
        # Java prints the CRC-64-AVRO as a long; the wire carries it little-endian.
        ours = int.from_bytes(codec.catalogue.reader(name).fingerprint, "little")
        assert int(java_fp, 16) == ours
        assert json.loads(java_json) == SAMPLES[name]
