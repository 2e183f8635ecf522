"""Honest held-out figures by speaker, text and channel, and the card that puts them first."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kubescribe_modeling.card import heldout_section, render
from kubescribe_modeling.data.build import write_plan
from kubescribe_modeling.data.plan import CorpusConfig, plan_corpus
from kubescribe_modeling.data.tuning import dev_sentences
from kubescribe_modeling.data.voices import HELD_OUT_VOICES
from kubescribe_modeling.evaluate import EvalReport
from kubescribe_modeling.heldout import (
    g711_wav,
    plan_heldout,
    telephone_copy,
    training_text_facts,
    wer_by_voice,
)
from kubescribe_runtime import g711
from kubescribe_runtime.g711 import Law
from kubescribe_runtime.manifest import ArtifactManifest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "models" / "demo"


@pytest.mark.parametrize(("law", "subtype"), [("pcmu", "ULAW"), ("pcma", "ALAW")])
def test_g711_wav_holds_the_codes_as_they_are(law: Law, subtype: str, tmp_path: Path) -> None:
    codes = bytes(range(256)) + b"\x01"  # odd length: the data chunk is padded
    path = tmp_path / "call.wav"
    path.write_bytes(g711_wav(codes, law))
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (
        8000,
        1,
        subtype,
        len(codes),
    )
    samples, _ = sf.read(str(path), dtype="int16")
    assert np.array_equal(samples, g711.decode(codes, law))


def test_telephone_copy_is_the_call_the_runtime_would_get(tmp_path: Path) -> None:
    t = np.arange(16_000) / 16_000
    wide = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 6000 * t)).astype(
        np.float32
    )
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "a.flac", wide, 16_000, subtype="PCM_16")
    row = {"audio": "clips/a.flac", "text": "hello", "source": "independent", "voice": "v+m5"}
    (tmp_path / "set.jsonl").write_text(json.dumps({**row, "duration": 1.0}) + "\n")
    manifest = telephone_copy(tmp_path / "set.jsonl", tmp_path)
    assert manifest.name == "set-pcmu.jsonl"
    (copied,) = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {k: copied[k] for k in ("text", "source", "voice")} == {
        k: row[k] for k in ("text", "source", "voice")
    }
    phone, rate = sf.read(str(tmp_path / copied["audio"]), dtype="float32")
    assert rate == 8000 and sf.info(str(tmp_path / copied["audio"])).subtype == "ULAW"
    # 8 kHz: the 6 kHz tone is gone, the 440 Hz one kept, at G.711's levels only.
    spectrum = np.abs(np.fft.rfft(phone))
    freqs = np.fft.rfftfreq(phone.size, 1 / rate)
    assert spectrum[np.argmin(np.abs(freqs - 440))] > 100 * spectrum[freqs > 3900].max()
    assert np.unique(phone).size <= 256


def test_wer_is_reported_per_voice_for_one_source() -> None:
    report = EvalReport(
        wer=0.0,
        utterances=4,
        audio_seconds=1.0,
        compute_seconds=0.1,
        references=["a b", "c d", "e f", "g h"],
        hypotheses=["a b", "c x", "e f", "zzz"],
    )
    voices = ["v+m5", "v+f4", "v+m5", "v+f4"]
    sources = ["independent", "independent", "independent", "template"]
    assert wer_by_voice(report, voices, sources, "independent") == {
        "v+f4": {"wer": 0.5, "utterances": 1},
        "v+m5": {"wer": 0.0, "utterances": 2},
    }


def test_held_out_sets_are_the_test_split_and_every_dev_sentence_in_each_held_out_voice() -> None:
    config = CorpusConfig(utterances=50, test_templates=10, test_independent=3, seed=0)
    sets = plan_heldout(config)
    assert sets["test"] == [u for u in plan_corpus(config) if u.split == "test"]
    dev = sets["dev"]
    assert len(dev) == len(dev_sentences()) * len(HELD_OUT_VOICES)
    assert {(u.text, u.voice) for u in dev} == {
        (t, v) for t in dev_sentences() for v in HELD_OUT_VOICES
    }
    assert all(u.augment == 0.0 and u.telephone is None for u in dev)


def test_training_text_facts_count_the_twin_and_the_near_copies(tmp_path: Path) -> None:
    config = CorpusConfig(utterances=400, test_templates=30, seed=0)
    plan = plan_corpus(config)
    i = next(i for i, u in enumerate(plan) if u.split == "train")
    plan[i] = dataclasses.replace(plan[i], voice="en-us+aunty")  # as 2.0.0's plan had
    path = tmp_path / "plan.jsonl"
    write_plan(path, config, plan)
    facts = training_text_facts(path)
    assert facts["twin_voice_utterances"] == 1
    assert facts["train_utterances"] == sum(u.split == "train" for u in plan)
    assert 0 < facts["oov_independent_dev"] < 1 and 0 < facts["oov_independent_test"] < 1
    assert 0 <= facts["held_out_templates_one_word_from_train"] <= 1


def _heldout(tuned_on: str, twin_clips: int) -> dict:
    def voices(unseen: float, twin: float) -> dict:
        return {
            "en-gb+m5": {"wer": unseen, "utterances": 10},
            "en-us+f4": {"wer": twin, "utterances": 10},
        }

    rows = [
        {"text": t, "audio": a, "voices": voices(w, w + 0.01)}
        for a, base in (("wideband", 0.0), ("telephone 8 kHz μ-law", 0.2))
        for t, w in (
            ("independent dev sentences", base + 0.17),
            ("independent test sentences", base + 0.19),
            ("held-out template sentences", base + 0.03),
        )
    ]
    facts = {
        "train_utterances": 1000,
        "twin_voice_utterances": twin_clips,
        "oov_independent_dev": 0.018,
        "oov_independent_test": 0.018,
        "template_frames": 58,
        "train_template_sentences": 580,
        "held_out_templates_one_word_from_train": 0.2,
    }
    return {
        "model_file": "model.onnx",
        "twin_voice": "en-us+f4",
        "weights_tuned_on": tuned_on,
        "rows": rows,
        "training_text": facts,
    }


def test_the_card_puts_unseen_speaker_and_independent_text_first_templates_last() -> None:
    text = "\n".join(heldout_section(_heldout("test", twin_clips=21)))
    table = [line for line in text.splitlines() if line.startswith("| ") and "%" in line]
    assert [line.split(" | ")[:2] for line in table] == [
        ["| independent dev sentences", "wideband"],
        ["| independent test sentences", "wideband"],
        ["| independent dev sentences", "telephone 8 kHz μ-law"],
        ["| independent test sentences", "telephone 8 kHz μ-law"],
        ["| held-out template sentences", "wideband"],
        ["| held-out template sentences", "telephone 8 kHz μ-law"],
    ]
    header = next(line for line in text.splitlines() if line.startswith("| text"))
    assert header.index("`en-gb+m5` (unseen)") < header.index("`en-us+f4` (twin trained)")
    # It says plainly what was wrong with the model's evaluation, and what that means.
    assert "included `aunty`" in text and "21 of the 1000 training clips" in text
    assert "tuned on the independent *test* sentences" in text
    assert "in-distribution" in text and "58 frames" in text


def test_the_card_says_nothing_of_flaws_a_model_does_not_have() -> None:
    text = "\n".join(heldout_section(_heldout("dev", twin_clips=0)))
    assert "aunty" not in text and "*test* sentences" not in text
    assert "in-distribution" in text  # templates are in-distribution for every model


def test_the_shipped_card_is_rendered_from_its_results() -> None:
    results = json.loads((DEMO / "results.json").read_text(encoding="utf-8"))
    manifest = ArtifactManifest.from_yaml((DEMO / "kubescribe.yaml").read_text(encoding="utf-8"))
    card = (DEMO / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card == render(results, manifest)
    # The shipped model's honest figures are there, before the recorded ones.
    assert results["heldout"]["weights_tuned_on"] == "test"
    assert card.index("read these first") < card.index("as recorded at release")
