"""`kubescribe transcribe`: one transcript per input line, through the server's pipeline."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubescribe_runtime.cli import setup_logging
from kubescribe_runtime.config import ServeConfig, settings_table
from rt_fixtures import TONE_TOKENS, encode, tone_sentence, write_artifact

from kubescribe.cli import main


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the root logger; leave it as it was for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
    # Tones are no speech to Silero VAD: the tone model's clips are decoded whole.
    assert main(["transcribe", "--model-dir", str(tone_dir), "--vad", "off", *files]) == 0
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


def test_serve_refuses_a_bad_setting_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--max-batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kubescribe serve: error: invalid configuration: ")
    assert "--max-batch-size / KUBESCRIBE_MAX_BATCH_SIZE" in err


def test_help_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for _, flag, variable in settings_table(ServeConfig):
        assert flag in out and variable in out


def test_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    logging.getLogger("kubescribe_runtime.test").warning("hello %s", "pods")
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["message"] == "hello pods" and entry["level"] == "warning"
