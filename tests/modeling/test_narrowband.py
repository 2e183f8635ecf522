"""The narrowband telephone augmentation: what a call does to speech, in the training data."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kubescribe_modeling.data.augment import (
    TELEPHONE_RATE,
    augment,
    draw_augmentation,
    g711_round_trip,
    narrowband,
)
from kubescribe_modeling.data.build import PlanError, read_plan, write_plan
from kubescribe_modeling.data.plan import CorpusConfig, audit_plan, plan_corpus
from kubescribe_runtime.g711 import Law

RATE = 16_000
LAWS = ["pcmu", "pcma"]


def _band_energy(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def _white(seconds: float = 1.0, seed: int = 7) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(RATE * seconds))).astype(
        np.float32
    )


@pytest.mark.parametrize("law", LAWS)
def test_narrowband_keeps_the_telephone_band_and_nothing_above_4_khz(law: Law) -> None:
    wide = _white()
    phone = narrowband(wide, RATE, law)
    assert phone.dtype == np.float32 and phone.size == wide.size
    # Half of white noise's energy lies above 4 kHz; after the channel, practically none.
    assert _band_energy(wide, 4200, 8000) / _band_energy(wide, 0, 8000) > 0.4
    assert _band_energy(phone, 4200, 8000) / _band_energy(phone, 0, 8000) < 1e-4
    # The voice band passes (G.711's quantisation noise is about 38 dB down).
    kept = _band_energy(phone, 300, 3400) / _band_energy(wide, 300, 3400)
    assert 0.9 < kept < 1.1


@pytest.mark.parametrize(("law", "subtype"), [("pcmu", "ULAW"), ("pcma", "ALAW")])
def test_the_round_trip_is_a_g711_codec(law: Law, subtype: str) -> None:
    # libsndfile's G.711 as the reference: the same 256 decoded levels...
    codes = bytes(range(256))
    levels, _ = sf.read(
        io.BytesIO(codes), format="RAW", subtype=subtype, samplerate=8000, channels=1, dtype="int16"
    )
    decoded = g711_round_trip(levels.astype(np.float32) / 32768, law)
    assert np.array_equal(np.round(decoded * 32768), levels)  # each level is its own code
    # ...and every 16-bit input coded to the same level, but for ties on a decision boundary
    # (libsndfile rounds a few negative ones the other way: one step apart, never more).
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    raw = io.BytesIO()
    sf.write(raw, pcm, TELEPHONE_RATE, format="RAW", subtype=subtype)
    raw.seek(0)
    theirs, _ = sf.read(
        raw, format="RAW", subtype=subtype, samplerate=8000, channels=1, dtype="int16"
    )
    ours = np.round(g711_round_trip(pcm.astype(np.float32) / 32768, law) * 32768)
    differ = ours != theirs
    assert differ.mean() < 0.01
    steps = np.searchsorted(np.unique(levels), ours[differ]) - np.searchsorted(
        np.unique(levels), theirs[differ]
    )
    assert set(np.abs(steps).tolist()) <= {1}


def test_augmentation_adds_the_planned_channel_and_only_it() -> None:
    tone = _white(0.5, seed=3)
    for strength in (0.0, 1.0):
        wide = draw_augmentation(11, strength)
        phone = draw_augmentation(11, strength, "pcma")
        # The channel comes on top of the same room, noise and gain.
        assert dataclasses.replace(phone, telephone=None) == wide
        out_wide, out_phone = augment(tone, RATE, wide), augment(tone, RATE, phone)
        assert out_phone.size == out_wide.size and np.max(np.abs(out_phone)) <= 0.99 + 1e-6
        assert _band_energy(out_wide, 4200, 8000) > 1000 * _band_energy(out_phone, 4200, 8000)


def test_the_plan_sends_its_telephone_share_of_train_and_dev_through_the_channel() -> None:
    base = CorpusConfig(utterances=1500, test_templates=30, seed=2)
    plain, phoned = plan_corpus(base), plan_corpus(base.model_copy(update={"telephone": 0.3}))
    # Same corpus otherwise: the law is drawn from each clip's own seed.
    assert [dataclasses.replace(u, telephone=None) for u in phoned] == plain
    assert all(u.telephone is None for u in plain)
    trained = [u for u in phoned if u.split != "test"]
    share = sum(u.telephone is not None for u in trained) / len(trained)
    assert 0.25 < share < 0.35
    assert {u.telephone for u in trained} == {None, "pcmu", "pcma"}
    assert all(u.telephone is None for u in phoned if u.split == "test")
    assert audit_plan(phoned) == []


def test_a_plan_that_breaks_the_split_rules_is_refused(tmp_path: Path) -> None:
    config = CorpusConfig(utterances=40, test_templates=4, test_independent=2, seed=1)
    plan = plan_corpus(config)
    first_train = next(i for i, u in enumerate(plan) if u.split == "train")
    first_test = next(i for i, u in enumerate(plan) if u.split == "test")
    # What a plan made for demo model 2.0.0 could hold: aunty, the formant twin of f4.
    plan[first_train] = dataclasses.replace(plan[first_train], voice="en-gb+aunty")
    plan[first_test] = dataclasses.replace(plan[first_test], telephone="pcmu")
    problems = audit_plan(plan)
    assert len(problems) == 2 and "telephone" in problems[0] and "en-gb+aunty" in problems[1]
    path = tmp_path / "plan.jsonl"
    write_plan(path, config, plan)
    with pytest.raises(PlanError, match="aunty"):
        read_plan(path)
