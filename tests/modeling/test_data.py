"""The modeling data toolkit: normalisation, text sources, splits, synthesis, committed test set."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kubescribe_modeling.data.augment import augment, draw_augmentation
from kubescribe_modeling.data.build import (
    READY,
    PlanError,
    build_corpus,
    read_plan,
    write_plan,
)
from kubescribe_modeling.data.cli import data_main
from kubescribe_modeling.data.open_vocab import (
    everyday_sentences,
    grammar_sentence,
    vocabulary,
    word_sequence,
)
from kubescribe_modeling.data.plan import (
    TEST_TEMPLATE_POOL,
    CorpusConfig,
    held_out_template_sentences,
    independent_sentences,
    plan_corpus,
)
from kubescribe_modeling.data.synth import SynthesisError, parse_wav
from kubescribe_modeling.data.templates import template_sentence
from kubescribe_modeling.data.voices import HELD_OUT_VARIANTS, HELD_OUT_VOICES, train_voices
from kubescribe_modeling.text import ALPHABET, cardinal, normalize_text, ordinal, year

from kubescribe.cli import main as kubescribe_main
from kubescribe.errors import KubescribeError

REPO = Path(__file__).resolve().parents[2]
TESTSET = REPO / "examples" / "testset"
SAMPLE = REPO / "examples" / "audio" / "sample.wav"


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("Hello, World!", "hello world"),
        ("  Many   spaces\tand\nlines ", "many spaces and lines"),
        ("I can't, won't — 'quoted' words", "i can't won't quoted words"),
        ("It’s curly", "it's curly"),
        ("café naïve", "cafe naive"),
        ("0", "zero"),
        ("7 apples", "seven apples"),
        ("13", "thirteen"),
        ("40", "forty"),
        ("105", "one hundred five"),
        ("1,200", "one thousand two hundred"),
        ("1,000,000 people", "one million people"),
        ("98,765,432", "ninety eight million seven hundred sixty five thousand four hundred "
         "thirty two"),
        ("-4 degrees", "minus four degrees"),
        ("3.5", "three point five"),
        ("15%", "fifteen percent"),
        ("2.5% APR", "two point five percent apr"),
        ("007", "zero zero seven"),
        ("$12.50", "twelve dollars fifty cents"),
        ("$1", "one dollar"),
        ("$1,200.00", "one thousand two hundred dollars"),
        ("£3", "three pounds"),
        ("€1.01", "one euro one cent"),
        ("$2.5 million", "two point five million dollars"),
        ("1st 2nd 3rd 4th 11th 12th 21st 100th", "first second third fourth eleventh twelfth "
         "twenty first one hundredth"),
        ("1999", "nineteen ninety nine"),
        ("2005", "two thousand five"),
        ("2024", "twenty twenty four"),
        ("1900", "nineteen hundred"),
        ("the 1990s", "the nineteen nineties"),
        ("3:05", "three oh five"),
        ("10:00", "ten o'clock"),
        ("3:45 PM", "three forty five p m"),
        ("7 a.m.", "seven a m"),
        ("2024-03-15", "march fifteenth twenty twenty four"),
        ("March 3rd, 2024", "march third twenty twenty four"),
        ("the 21st of June", "the twenty first of june"),
        ("Mr. Smith & Dr. Jones", "mister smith and doctor jones"),
        ("order #42", "order number forty two"),
        ("Smith vs. Jones", "smith versus jones"),
        ("$5.999", "five point nine nine nine dollars"),
        ("Ærø Straße", "aero strasse"),
        ("$99999999999999999", "nine " * 16 + "nine dollars"),
        ("12345678901", "one two three four five six seven eight nine zero one"),
    ],
)  # fmt: skip
def test_normalize_text_table(written: str, spoken: str) -> None:
    assert normalize_text(written) == spoken


def test_number_words() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(999_999) == "nine hundred ninety nine thousand nine hundred ninety nine"
    assert (
        ordinal(12) == "twelfth"
        and ordinal(20) == "twentieth"
        and ordinal(101) == "one hundred first"
    )
    assert year(2010) == "twenty ten" and year(1905) == "nineteen oh five"
    with pytest.raises(ValueError, match="too large"):
        cardinal(10**15)


def test_normalize_is_idempotent_and_in_alphabet() -> None:
    rng = random.Random(3)
    junk = string.printable + "£€’‘½²ÆßÅ日"
    written = [template_sentence(rng) for _ in range(300)]
    written += ["".join(rng.choice(junk) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    for text in written:
        spoken = normalize_text(text)  # never raises, whatever the input
        assert set(spoken) <= ALPHABET and "  " not in spoken and spoken == spoken.strip()
        assert normalize_text(spoken) == spoken


# --- text sources --------------------------------------------------------------------------


def test_template_generator_is_deterministic_for_a_seed() -> None:
    first = [template_sentence(random.Random(7)) for _ in range(3)]
    a = [template_sentence(r) for r in [random.Random(11)] for _ in range(50)]
    b = [template_sentence(r) for r in [random.Random(11)] for _ in range(50)]
    c = [template_sentence(r) for r in [random.Random(12)] for _ in range(50)]
    assert first[0] == first[1] == first[2]
    assert a == b and a != c
    assert len(set(a)) > 40  # varied, not one sentence repeated


def test_open_vocabulary_covers_many_words() -> None:
    vocab = vocabulary()
    assert len(vocab.words) >= 30_000
    assert {"the", "weather", "bicycle", "umbrella", "kitchen"} <= set(vocab.words)
    assert "twat" not in vocab.words  # blocked list applies
    rng = random.Random(0)
    words = {w for _ in range(2000) for w in word_sequence(rng, vocab).split()}
    assert len(words) > 3000  # the flattened draw reaches far beyond the top words
    assert normalize_text(grammar_sentence(random.Random(1))) != ""
    assert len(everyday_sentences()) >= 2000


def test_plan_is_deterministic_and_seed_dependent() -> None:
    config = CorpusConfig(utterances=300, test_templates=20, seed=5)
    assert plan_corpus(config) == plan_corpus(config)
    other = plan_corpus(config.model_copy(update={"seed": 6}))
    assert [u.text for u in other if u.split == "train"] != [
        u.text for u in plan_corpus(config) if u.split == "train"
    ]


@pytest.fixture(scope="module")
def plan() -> list:
    return plan_corpus(CorpusConfig(utterances=4000, test_templates=100, seed=0))


def test_no_test_sentence_appears_in_training_text(plan: list) -> None:
    train = {u.text for u in plan if u.split == "train"}
    dev = {u.text for u in plan if u.split == "dev"}
    test = {u.text for u in plan if u.split == "test"}
    reserved = set(held_out_template_sentences(TEST_TEMPLATE_POOL)) | set(independent_sentences())
    assert test <= reserved
    assert not (train & reserved) and not (dev & reserved) and not (train & dev)
    # The hand-written training sentences and the independent set were written apart.
    written = {normalize_text(s) for s in everyday_sentences()}
    assert not (written & set(independent_sentences()))
    # The text mix is what the config asks for (40 % templates by default).
    sources = [u.source for u in plan if u.split == "train"]
    assert 0.35 < sources.count("template") / len(sources) < 0.45
    assert set(sources) == {"template", "open"}


def _oov_rate(texts: set[str], reference: tuple[str, ...]) -> float:
    seen = {w for t in texts for w in t.split()}
    words = [w for t in reference for w in t.split()]
    return sum(w not in seen for w in words) / len(words)


def test_open_vocabulary_text_covers_the_independent_set(plan: list) -> None:
    # Users do not speak templates: the training text must cover the words of everyday English
    # written apart from it. Templates alone leave half of the independent words unseen.
    independent = independent_sentences()
    mixed = _oov_rate({u.text for u in plan if u.split == "train"}, independent)
    only = plan_corpus(CorpusConfig(utterances=4000, test_templates=100, template_fraction=1.0))
    templates_only = _oov_rate({u.text for u in only if u.split == "train"}, independent)
    assert mixed < 0.2 < 0.4 < templates_only


def test_templates_without_slots_never_reach_training(plan: list) -> None:
    # A template with no slot gives the same sentence every time; if it is in the held-out pool
    # it must be rejected from train, whatever the corpus seed.
    reserved = set(held_out_template_sentences(TEST_TEMPLATE_POOL))
    fixed = normalize_text("Sorry, I didn't catch that. Could you repeat the order number?")
    train = {u.text for u in plan if u.split == "train"}
    assert (fixed in reserved) == (fixed not in train)


def test_held_out_voices_are_absent_from_train_and_dev(plan: list) -> None:
    assert not any(v.split("+")[1] in HELD_OUT_VARIANTS for v in train_voices())
    for u in plan:
        variant = u.voice.split("+")[1]
        if u.split == "test":
            assert u.voice in HELD_OUT_VOICES
        else:
            assert variant not in HELD_OUT_VARIANTS and u.voice in train_voices()
    assert len({u.voice for u in plan if u.split == "train"}) > 100
    assert {u.source for u in plan if u.split == "test"} == {"template", "independent"}


def test_config_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="open_mix"):
        CorpusConfig(open_mix=(0, 0, 0))
    with pytest.raises(ValueError):
        CorpusConfig(template_fraction=1.5)
    with pytest.raises(KubescribeError, match="template_fraction"):
        data_main(["--out", "/nonexistent/x", "--template-fraction", "2"])


# --- audio ---------------------------------------------------------------------------------


def test_augmentation_is_reproducible_and_never_clips() -> None:
    t = np.arange(16_000) / 16_000
    tone = (0.9 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    aug = draw_augmentation(1234)
    out = augment(tone, 16_000, aug)
    assert np.array_equal(out, augment(tone, 16_000, draw_augmentation(1234)))
    assert out.dtype == np.float32 and np.max(np.abs(out)) <= 0.99 + 1e-6
    pads = int(aug.pad_start_s * 16_000) + int(aug.pad_end_s * 16_000)
    assert out.size == tone.size + pads
    clean = augment(tone, 16_000, draw_augmentation(1234, strength=0.0))
    assert np.allclose(clean, tone)


def test_noise_follows_the_drawn_snr() -> None:
    seed = next(s for s in range(100) if (a := draw_augmentation(s)).snr_db and not a.rt60_s)
    aug = draw_augmentation(seed)
    aug = type(aug)(**{**aug.__dict__, "gain_db": 0.0, "pad_start_s": 0.0, "pad_end_s": 0.0})
    signal = (0.3 * np.sin(np.arange(32_000) * 0.05)).astype(np.float32)
    noise = augment(signal, 16_000, aug) - signal
    snr = 10 * np.log10(np.mean(signal**2) / np.mean(noise**2))
    assert abs(snr - aug.snr_db) < 0.5


def test_parse_wav_rejects_garbage() -> None:
    with pytest.raises(SynthesisError, match="WAV"):
        parse_wav(b"not a wav file at all")


def test_missing_espeak_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kubescribe_modeling.data.synth.shutil.which", lambda name: None)
    with pytest.raises(SynthesisError, match="apt-get install espeak-ng") as err:
        build_corpus(CorpusConfig(utterances=2), tmp_path / "corpus", workers=1, progress=False)
    assert isinstance(err.value, KubescribeError)
    assert list(tmp_path.iterdir()) == []


def test_tiny_corpus_through_espeak(tmp_path: Path) -> None:
    config = CorpusConfig(
        utterances=4, dev_fraction=0.25, test_templates=2, test_independent=1, seed=3
    )
    summary = build_corpus(config, tmp_path / "corpus", workers=1, progress=False)
    out = tmp_path / "corpus"
    assert (out / READY).is_file() and (out / "corpus.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no temp dir left behind
    counts = {}
    for split in ("train", "dev", "test"):
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        counts[split] = len(rows)
        for row in rows:
            assert set(row) == {"audio", "text", "voice", "source", "duration"}
            info = sf.info(out / row["audio"])
            assert info.samplerate == 16_000 and info.channels == 1
            assert abs(info.duration - row["duration"]) < 0.01 and row["duration"] > 0.5
            assert row["text"] == normalize_text(row["text"]) and row["text"]
            assert (row["voice"] in HELD_OUT_VOICES) == (split == "test")
    assert counts == {"train": 4, "dev": 1, "test": 4}
    assert summary["splits"]["train"]["utterances"] == 4

    # Same seed, a process pool instead of one process: the very same corpus, byte for byte.
    build_corpus(config, tmp_path / "again", workers=2, progress=False)
    again = tmp_path / "again"
    for split in ("train", "dev", "test"):
        assert (again / f"{split}.jsonl").read_bytes() == (out / f"{split}.jsonl").read_bytes()
    wavs = sorted(p.relative_to(out) for p in out.rglob("*.wav"))
    assert len(wavs) == 9
    assert all((again / w).read_bytes() == (out / w).read_bytes() for w in wavs)


def test_a_plan_written_on_one_machine_renders_the_same_corpus_on_another(tmp_path: Path) -> None:
    config = CorpusConfig(
        utterances=3, dev_fraction=0.25, test_templates=1, test_independent=1, seed=5
    )
    direct = tmp_path / "direct"
    build_corpus(config, direct, workers=1, progress=False)

    plan_file = tmp_path / "plan.jsonl"
    write_plan(plan_file, config, plan_corpus(config))
    assert read_plan(plan_file) == (config, plan_corpus(config))
    # Rendering from the plan needs no text resources: planning must not run again.
    rendered = tmp_path / "rendered"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("kubescribe_modeling.data.build.plan_corpus", _planning_forbidden)
        assert data_main(["--out", str(rendered), "--from-plan", str(plan_file), "--workers", "1",
                          "--no-progress"]) == 0  # fmt: skip
    for split in ("train", "dev", "test"):
        name = f"{split}.jsonl"
        assert (rendered / name).read_bytes() == (direct / name).read_bytes()
    wavs = sorted(p.relative_to(direct) for p in direct.rglob("*.wav"))
    assert wavs and all((rendered / w).read_bytes() == (direct / w).read_bytes() for w in wavs)
    assert (rendered / READY).is_file()


def _planning_forbidden(config: CorpusConfig) -> list:
    raise AssertionError("--from-plan must not plan")


def test_plan_out_writes_the_plan_of_the_options_and_renders_nothing(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.jsonl"
    argv = ["--out", str(tmp_path / "never"), "--utterances", "5", "--seed", "2"]
    assert data_main([*argv, "--plan-out", str(plan_file)]) == 0
    config, plan = read_plan(plan_file)
    assert config.utterances == 5 and config.seed == 2
    assert plan == plan_corpus(config)
    assert sum(u.split == "train" for u in plan) == 5
    assert not (tmp_path / "never").exists()


def test_a_file_that_is_not_a_plan_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PlanError, match="plan not found"):
        read_plan(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "x.wav", "text": "hello"}\n')
    with pytest.raises(PlanError, match="not a corpus plan"):
        read_plan(bad)
    code = kubescribe_main(["data", "--out", str(tmp_path / "c"), "--from-plan", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("kubescribe data: error:") and "not a corpus plan" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "c").exists()


# --- the committed test set ----------------------------------------------------------------


def test_committed_testset_is_small_valid_and_held_out() -> None:
    rows = [json.loads(line) for line in (TESTSET / "manifest.jsonl").read_text().splitlines()]
    assert 60 <= len(rows) <= 100
    assert sum(p.stat().st_size for p in TESTSET.rglob("*") if p.is_file()) <= 5 * 1024 * 1024
    reserved = set(held_out_template_sentences(TEST_TEMPLATE_POOL))
    independent = set(independent_sentences())
    for row in rows:
        assert set(row) == {"audio", "text", "source", "voice", "duration"}
        info = sf.info(TESTSET / row["audio"])
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16_000, 1)
        assert abs(info.duration - row["duration"]) < 0.01
        assert row["voice"] in HELD_OUT_VOICES
        assert row["text"] in (reserved if row["source"] == "template" else independent)
    assert {r["source"] for r in rows} == {"template", "independent"}


def test_sample_clip_is_held_out_voice_audio_with_transcript() -> None:
    info = sf.info(SAMPLE)
    assert (info.samplerate, info.channels) == (16_000, 1) and 3 < info.duration < 8
    text = SAMPLE.with_suffix(".txt").read_text().strip()
    assert text == normalize_text(text) and text in set(
        held_out_template_sentences(TEST_TEMPLATE_POOL)
    )
