"""The real-voices recipe: its voices, channels and independence rules (pure), sox's codecs on
real audio, and modeling/recipes/real-voices.sh end to end on CPU with a tiny budget."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kubescribe_modeling.artifact import ExportReport
from kubescribe_modeling.checkpoint import load_checkpoint
from kubescribe_modeling.data.asterisk import load_prompts
from kubescribe_modeling.data.realvoices import (
    CODECS,
    Channel,
    Job,
    Voice,
    draw_channel,
    leaks,
    plan_jobs,
    render,
    sox_commands,
    voice_catalogue,
)
from kubescribe_modeling.text_lang import normalizer
from kubescribe_modeling.warm_start import checkpoint_from_artifact
from kubescribe_runtime.manifest import ArtifactManifest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "modeling" / "recipes" / "real-voices.sh"


@pytest.mark.parametrize("language", ["en", "es"])
def test_many_voices_of_several_engines(language: str) -> None:
    voices = voice_catalogue(language)
    assert len({v.name for v in voices}) >= 80
    engines = {v.engine for v in voices}
    assert "espeak-ng" in engines
    if language == "en":
        assert "flite" in engines  # make tools installs Debian's flite


def test_channels_cover_the_codecs_and_the_clean_band() -> None:
    rng = random.Random(0)
    channels = [draw_channel(rng) for _ in range(400)]
    assert {c.codec for c in channels} == {*CODECS, None}
    assert any(c.babble and c.snr_db for c in channels)
    assert any(c.reverb for c in channels) and any(c.reverb is None for c in channels)
    assert all(0.9 <= c.speed <= 1.1 and abs(c.pitch_cents) <= 250 for c in channels)
    narrow = [c for c in channels if c.codec]
    assert all(c.band and 200 <= c.band[0] < c.band[1] <= 3500 for c in narrow)


def test_sox_pipeline_of_a_gsm_call() -> None:
    channel = Channel(1.05, -100, 30, None, False, (300, 3400), "gsm")
    first, back = sox_commands(channel)
    assert first[:1] == ["sox"] and "gsm" in first and first[-2:] == ["rate", "8000"]
    assert first[first.index("speed") : first.index("speed") + 2] == ["speed", "1.05"]
    assert "sinc" in first and "300-3400" in first and "reverb" in first
    assert back[-3:] == ["-r", "16000", "-"]
    (wide,) = sox_commands(Channel(1.0, 0, None, None, False, None, None))
    assert "sinc" not in wide and wide[-2:] == ["rate", "16000"]


@pytest.mark.parametrize("codec", [*sorted(CODECS), None])
def test_rendered_clips_keep_their_length_and_lose_the_high_band(codec: str | None) -> None:
    channel = Channel(1.0, 0, None, None, False, (300, 3400) if codec else None, codec)
    job = Job("rv-en-000000", "please hold the line", Voice("espeak-ng", "en-us+m3"), 160,
              channel, 1)  # fmt: skip
    audio = render(job)
    clean = render(Job(**{**job.__dict__, "channel": Channel(1.0, 0, None, None, False, None,
                                                              None)}))  # fmt: skip
    assert abs(audio.size - clean.size) < 0.05 * clean.size
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    high = spectrum[int(4200 / 8000 * spectrum.size) :].sum() / spectrum.sum()
    assert (high < 1e-3) if codec else (high > 1e-3), high


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("please enter your password followed by the pound key", True),
        ("hello please enter your password followed by the pound key now", True),
        ("thank you", True),  # a held sentence itself, however short
        ("thank you for calling", False),  # a short held sentence inside is vocabulary
        ("please enter your passwords", False),
    ],
)
def test_leak_rule(text: str, leak: bool) -> None:
    held = ["please enter your password followed by the pound key", "thank you"]
    assert leaks(text, held) is leak


@pytest.mark.parametrize("language", ["en", "es"])
def test_planned_training_text_never_says_a_real_speech_sentence(language: str) -> None:
    prompts, _ = load_prompts(language)
    norm = normalizer(language)
    held = [norm(p.text) for p in prompts]
    jobs = plan_jobs(language, 300, [p.text for p in prompts], seed=3)
    assert len(jobs) == 300 and len({j.voice for j in jobs}) > 50
    assert not [j.text for j in jobs if leaks(j.text, held)]


def _run_recipe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
        "UTTERANCES": "12",
        "LIMIT": "4",
        "HELDOUT": "2",
        "REFERENCE_CLIPS": "0",  # none of the 4 real prompts is 2-4 s long
        **env,
    }
    return subprocess.run(
        ["bash", str(RECIPE), "es", str(tmp_path / "out"), "0.5"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.xdist_group("recipe")
def test_the_real_voices_recipe_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    done = _run_recipe(
        tmp_path,
        SETTINGS="--set model.d_model=32 --set model.n_layers=1 --set model.n_heads=2 "
        "--set model.ff_dim=64 --set model.subsampling_channels=16 --set epochs=1 "
        "--set eval_every_minutes=null --set dev_utterances=4",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    manifest = ArtifactManifest.load(tmp_path / "out")
    assert manifest.languages == ["es"]
    real = manifest.evaluation[0]
    (synthetic,) = [e for e in manifest.evaluation
                    if e.speech == "synthetic" and e.model_file == "model.onnx"]  # fmt: skip
    assert (real.speech, real.language, real.utterances) == ("real", "es", 4)
    assert real.test_set.startswith("asterisk-core-sounds-es-wav")
    assert (synthetic.speech, synthetic.language, synthetic.utterances) == ("synthetic", "es", 2)
    assert "held-out voices" in synthetic.test_set
    history = [json.loads(x) for x in (tmp_path / "out/training/history.jsonl").read_text()
               .splitlines()]  # fmt: skip
    assert history and all("dev_wer" in h for h in history)
    corpus = json.loads((tmp_path / "work/corpus/train.jsonl").read_text().splitlines()[0])
    assert corpus["channel"] and corpus["voice"]


@pytest.mark.xdist_group("recipe")
def test_the_recipe_warm_starts_from_an_exported_model(
    tmp_path: Path, tiny_artifact: ExportReport
) -> None:
    # INIT: the artifact's weights, sizes and head; the warm configuration's model section and
    # sizes are not used (no SETTINGS for them here)
    done = _run_recipe(
        tmp_path,
        INIT=str(tiny_artifact.out_dir),
        SETTINGS="--set epochs=1 --set eval_every_minutes=null --set dev_utterances=4",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"warm start from {tiny_artifact.out_dir}" in done.stdout
    tuned = load_checkpoint(tmp_path / "work/run/best.pt")
    start = checkpoint_from_artifact(tiny_artifact.out_dir)
    assert tuned.model_config == start.model_config
    assert tuned.training["config"]["lr"] == 0.001  # configs/realvoices-warm-cpu.yaml
    manifest = ArtifactManifest.load(tmp_path / "out")
    assert manifest.languages == ["es"] and manifest.evaluation[0].speech == "real"
