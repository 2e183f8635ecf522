"""`kubescribe transcribe`: one transcript per input line, through the server's pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from rt_fixtures import TONE_TOKENS, encode, tone_sentence, write_artifact

from kubescribe.cli import main


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("model") / "tone", TONE_TOKENS)


def test_transcribe_prints_one_line_per_file(
    tone_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for i, pattern in enumerate(["lo hi", "hi hi lo", "lo hi lo hi"]):
        path = tmp_path / f"clip{i}.flac"
        path.write_bytes(encode(tone_sentence(pattern), fmt="FLAC", subtype="PCM_16"))
        files.append(str(path))
    assert main(["transcribe", "--model-dir", str(tone_dir), *files]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "low high",
        "high high low",
        "low high low high",
    ]


def test_transcribe_settings_come_from_the_environment(
    tone_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "clip.wav"
    path.write_bytes(encode(tone_sentence("lo hi")))
    monkeypatch.setenv("KUBESCRIBE_MODEL_DIR", str(tone_dir))
    monkeypatch.setenv("KUBESCRIBE_MAX_AUDIO_SECONDS", "1")
    assert main(["transcribe", str(path)]) == 1
    assert "clip.wav: the audio is 2.0 s long; the limit is 1 s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "No such file or directory"),
        (lambda p: p.write_text("hello"), "unsupported audio format"),
    ],
)
def test_transcribe_errors_name_the_file(
    tone_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    path = tmp_path / "input.wav"
    make(path)  # type: ignore[operator]
    assert main(["transcribe", "--model-dir", str(tone_dir), str(path)]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("kubescribe transcribe: error: ") and "input.wav" in err and message in err
    )


def test_a_broken_artifact_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_artifact(tmp_path / "a", TONE_TOKENS)
    (directory / "model.onnx").write_bytes(b"oops")
    assert main(["transcribe", "--model-dir", str(directory), "x.wav"]) == 1
    assert "model.onnx: sha256 mismatch" in capsys.readouterr().err
