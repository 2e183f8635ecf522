"""The GPU recipe (modeling/recipes/demo-gpu.sh) runs end to end on CPU with a tiny plan: every
step is an ordinary kubescribe command, so what was run on the GPU can be checked here."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from kubescribe_modeling.checkpoint import load_checkpoint
from kubescribe_modeling.data.build import write_plan
from kubescribe_modeling.data.plan import CorpusConfig, plan_corpus

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "modeling" / "recipes" / "demo-gpu.sh"

pytestmark = pytest.mark.xdist_group("recipe")


def _run_recipe(tmp_path: Path, telephone: float) -> subprocess.CompletedProcess[str]:
    config = CorpusConfig(
        utterances=6,
        dev_fraction=0.34,
        test_templates=1,
        test_independent=1,
        seed=4,
        telephone=telephone,
    )
    plan = tmp_path / "plan.jsonl"
    write_plan(plan, config, plan_corpus(config))
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
        "MIN_PHASE_SECONDS": "3",
        "BPE_SIZE": "30",  # the tiny corpus has too little text for 256 pieces
    }
    return subprocess.run(
        ["bash", str(RECIPE), str(plan), str(tmp_path / "out"), "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_recipe_refuses_a_plan_without_the_telephone_channel(tmp_path: Path) -> None:
    done = _run_recipe(tmp_path, telephone=0.0)
    assert done.returncode != 0 and "--telephone" in done.stderr
    assert "== render" not in done.stdout


def test_the_gpu_recipe_runs_on_cpu_and_packs_every_model(tmp_path: Path) -> None:
    done = _run_recipe(tmp_path, telephone=0.5)
    out = tmp_path / "out"
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "== done in" in done.stdout

    parts = sorted(out.glob("checkpoints.tar.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    whole = tmp_path / "checkpoints.tar"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    unpacked = tmp_path / "unpacked"
    with tarfile.open(whole) as tar:
        tar.extractall(unpacked, filter="data")
    names = {p.name for p in unpacked.iterdir()}
    for model in ("teacher", "student", "distilled", "pruned"):
        assert f"{model}.pt" in names and f"{model}.history.jsonl" in names, names
        log = (unpacked / f"{model}.log").read_text()
        assert log.rstrip().endswith("exit status 0"), log[-1000:]
        ckpt = load_checkpoint(unpacked / f"{model}.pt")
        assert "optimizer" not in ckpt.training  # slimmed for the transfer
        ckpt.build_model()
    # The BPE twin is trained and scored; its checkpoint travels only if it beats the teacher.
    assert "teacher-bpe.history.jsonl" in names
    assert (unpacked / "teacher-bpe.log").read_text().rstrip().endswith("exit status 0")
    assert "corpus.json" in names
    # The pruned teacher really is smaller, the students smaller still.
    sizes = {
        m: sum(t.numel() for t in load_checkpoint(unpacked / f"{m}.pt").state_dict.values())
        for m in ("teacher", "pruned", "student", "distilled")
    }
    assert sizes["student"] == sizes["distilled"] < sizes["pruned"] < sizes["teacher"]
