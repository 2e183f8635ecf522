"""Every benchmark, run as documented (`python -m bench.NAME --smoke`), against a temporary copy
of docs/benchmarks.md: it exits 0, prints its table, and replaces exactly its own section.

The artifact is a tiny randomly initialised Conformer-CTC exported by the modeling toolkit
(seconds), so that the smoke runs do not depend on the size of the demo model.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import DOC, REPO, build_random_artifact, section_markers

TINY = {"d_model": 64, "n_layers": 2, "n_heads": 2, "ff_dim": 128, "subsampling_channels": 32}

# module, its section, a line its section must hold
BENCHMARKS = [
    ("bench.pipeline", "pipeline", "| batch | kubescribe (audio s/s) |"),
    ("bench.server", "server", "| clip | clients | mode | requests ok |"),
    ("bench.server --cpu", "server-cpu", "| variant | clients | requests ok |"),
    ("bench.nonspeech", "nonspeech", "| condition | WER, before (energy) |"),
    ("bench.streaming", "streaming", "| streams | turns complete | delta words |"),
    ("bench.turns", "turns", "| noise | SNR | detector | calls exact |"),
    ("bench.int8_long", "int8-long", "| `model.int8.onnx` |"),
    ("bench.load", "load", "| long clients | goodput (audio s/s) |"),
    ("bench.operator_scale", "operator", "idle resync: writes"),
    ("bench.gpu", "gpu", "## GPU"),
]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifact")
    build_random_artifact(out, TINY)
    return out


def section(text: str, name: str) -> str:
    start, end = section_markers(name)
    match = re.search(re.escape(start) + r"(.*?)" + re.escape(end), text, re.DOTALL)
    assert match, f"section {name} missing"
    return match[1]


def run_smoke(module: str, doc: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--doc", str(doc), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize(("module", "name", "expected"), BENCHMARKS)
def test_benchmark_smoke_writes_only_its_section(
    module: str, name: str, expected: str, artifact: Path, tmp_path: Path
) -> None:
    real_before = DOC.read_text(encoding="utf-8")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(real_before, encoding="utf-8")
    module, *flags = module.split()
    # (The operator and the turn detectors need no acoustic model.)
    extra = (
        () if module in ("bench.operator_scale", "bench.turns") else ("--artifact", str(artifact))
    )

    result = run_smoke(module, doc, *flags, *extra)

    assert result.returncode == 0, result.stderr[-4000:]
    assert expected in result.stdout
    assert "smoke (tiny sizes: not a measurement)" in result.stdout
    assert re.search(r"^\[\s*\d+\.\d+s\] ", result.stderr, re.MULTILINE), "no progress lines"
    after = doc.read_text(encoding="utf-8")
    written = section(after, name)
    assert expected in written
    assert "- date: " in written and "- CPU: " in written
    # Everything outside the section is as it was; the real document is untouched.
    start, end = section_markers(name)
    outside = lambda text: re.sub(  # noqa: E731
        re.escape(start) + ".*?" + re.escape(end), "", text, flags=re.DOTALL
    )
    assert outside(after) == outside(real_before)
    assert DOC.read_text(encoding="utf-8") == real_before


def test_missing_artifact_is_one_clear_error(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    result = run_smoke("bench.pipeline", doc, "--artifact", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a model artifact" in result.stderr
    assert "Traceback" not in result.stderr
    assert not doc.exists()
