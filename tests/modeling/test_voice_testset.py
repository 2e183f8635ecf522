"""The synthetic held-out-voice test set: voices outside the training catalogue, sentences no
training clip or real-speech prompt says, described for the report."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubescribe_modeling.data.voice_testset import plan_voice_testset, write_voice_testset
from kubescribe_modeling.dataset import read_manifest
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.evaluate import describe_testset


def test_a_voice_training_may_use_is_refused() -> None:
    with pytest.raises(ModelingError, match="outside the training catalogue"):
        plan_voice_testset("es", ["es+f4", "es+m3"], 4, [])


def test_no_excluded_sentence_is_planned() -> None:
    first = plan_voice_testset("es", ["es+f4"], 30, [])
    excluded = [job.text for job in first[::2]]
    again = plan_voice_testset("es", ["es+f4"], 30, excluded)
    assert not {job.text for job in again} & set(excluded)
    assert len({job.text for job in again}) == 30


def test_the_set_is_written_and_described(tmp_path: Path) -> None:
    jobs = plan_voice_testset("es", ["es+f4", "es-419+m5"], 2, ["no gracias eso es todo por hoy"])
    info = write_voice_testset("es", jobs, tmp_path)
    clips = read_manifest(tmp_path / "manifest.jsonl")
    assert [c.text for c in clips] == [j.text for j in jobs]
    assert all(c.audio.is_file() and c.voice in ("es+f4", "es-419+m5") for c in clips)
    assert describe_testset(tmp_path) == info
    assert (info["speech"], info["language"], info["channel"]) == (
        "synthetic",
        "es",
        "wideband 16 kHz",
    )
