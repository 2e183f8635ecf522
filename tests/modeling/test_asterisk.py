"""Real recorded speech from Debian's Asterisk prompts: which prompts count, the dev/test split
by sentence, and the demo model measured on a slice of it through the runtime's pipeline.

The packages come from ``make tools`` (asterisk-core-sounds-{en,es}{,-wav}); a missing package
fails these tests rather than skipping them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from kubescribe_modeling.data.asterisk import (
    DEV_SHARE,
    build_testset,
    load_prompts,
    parse_transcripts,
    select_prompts,
    speech_text,
    split_of,
)
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.evaluate import describe_testset, evaluate_artifact
from kubescribe_modeling.text_lang import normalizer
from kubescribe_runtime.manifest import ArtifactManifest

from kubescribe.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "models" / "demo"


def test_transcript_lines_parse() -> None:
    text = "; Core Asterisk Sounds in English\n\nagent-pass: Please enter your password.\n" \
        "digits/1: One.\nnot a line\n"  # fmt: skip
    assert parse_transcripts(text) == [
        ("agent-pass", "Please enter your password."),
        ("digits/1", "One."),
    ]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("Please enter your password.", "Please enter your password."),
        ("[this is a simple beep tone]", None),
        ("(10 seconds of silence)", None),
        ("<beep ascending>", None),
        ("dollar [$]", "dollar"),
        ("IAX (note: does not say 2)", "IAX"),
        ("Please leave your message. (simple tone sound plays)", "Please leave your message."),
        # how these were read cannot be told from the text
        ("press * to toggle pause", None),
        ("followed by # or just # to exit", None),
        ('a polite "don\'t call" menu', None),
        ("con la extension 1234", None),
        ("marque 8 para salir", "marque 8 para salir"),
    ],
)
def test_which_prompts_count_as_speech(raw: str, words: str | None) -> None:
    assert speech_text(raw) == words


def test_selection_rules(tmp_path: Path) -> None:
    for name in ("a", "b", "dup", "beep"):
        (tmp_path / f"{name}.wav").write_bytes(b"")
    rows = [("a", "Hello."), ("b", "Goodbye."), ("dup", "cero"), ("dup", "diez"),
            ("beep", "[beep]"), ("gone", "No audio.")]  # fmt: skip
    prompts, skipped = select_prompts(rows, tmp_path, normalizer("en"))
    assert [p.name for p in prompts] == ["a", "b"]
    assert skipped == {"name listed twice": 2, "no words or ambiguous reading": 1,
                       "no audio file": 1}  # fmt: skip


def test_the_split_follows_the_sentence_not_the_prompt_name() -> None:
    assert split_of("thank you") == split_of("thank you")
    shares = [split_of(f"sentence number {i}") == "dev" for i in range(2000)]
    assert abs(sum(shares) / len(shares) - DEV_SHARE) < 0.04


@pytest.mark.parametrize("language", ["en", "es"])
def test_installed_prompts_split_without_a_shared_sentence(language: str) -> None:
    prompts, _ = load_prompts(language)
    norm = normalizer(language)
    dev = {norm(p.text) for p in prompts if p.split == "dev"}
    test = {norm(p.text) for p in prompts if p.split == "test"}
    assert len(prompts) > 400  # about 540 English and 470 Spanish prompts are usable
    assert dev and test and not dev & test
    assert all(p.audio.is_file() for p in prompts)


def test_missing_language_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelingError, match="no Asterisk prompts"):
        load_prompts("xx")
    with pytest.raises(ModelingError, match="not installed"):
        load_prompts("en", sounds_root=tmp_path, doc_root=tmp_path)


def test_a_transcript_file_of_our_own_builds_a_test_set(tmp_path: Path) -> None:
    doc = tmp_path / "doc" / "asterisk-core-sounds-es"
    doc.mkdir(parents=True)
    lines = [f"p{i}: Marque {i} para la extensión" for i in range(30)]
    (doc / "core-sounds-es.txt.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    sounds = tmp_path / "sounds" / "es_MX_f_Allison"
    sounds.mkdir(parents=True)
    src = next((Path("/usr/share/asterisk/sounds/es_MX_f_Allison")).glob("*.wav"))
    for i in range(30):
        (sounds / f"p{i}.wav").write_bytes(src.read_bytes())
    info = build_testset("es", tmp_path / "out", "dev", 5, tmp_path / "sounds", tmp_path / "doc")
    rows = [json.loads(x) for x in (tmp_path / "out/manifest.jsonl").read_text().splitlines()]
    assert info["speech"] == "real" and info["language"] == "es" and info["utterances"] == 5
    assert len(rows) == 5 and all(split_of(normalizer("es")(r["text"])) == "dev" for r in rows)
    assert describe_testset(tmp_path / "out")["channel"] == "telephone 8 kHz"


@pytest.mark.xdist_group("demo-model")
def test_demo_model_on_real_english_speech_matches_its_declared_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A slice of the real-speech test split through `kubescribe evaluate` (the runtime's
    pipeline): its WER stays near the figure the manifest declares for the whole split."""
    out = tmp_path / "en-test"
    assert main(["data", "--asterisk", "en", "--split", "test", "--limit", "40",
                 "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(DEMO), "--testset", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["speech"] == "real" and printed["utterances"] == 40
    declared = [
        e for e in ArtifactManifest.load(DEMO).evaluation
        if e.speech == "real" and e.model_file == "model.onnx"
    ]  # fmt: skip
    assert len(declared) == 1 and declared[0].channel == "telephone 8 kHz"
    assert declared[0].test_set.startswith("asterisk-core-sounds-en-wav")
    assert abs(printed["wer"] - declared[0].wer) <= 0.25, (printed["wer"], declared[0].wer)
    report = evaluate_artifact(DEMO, out)
    assert report.wer == pytest.approx(printed["wer"], abs=1e-4)
