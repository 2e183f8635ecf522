"""Call recordings and API fidelity through the real routes (Flask's test client, the real demo
model): channels transcribed apart and merged by time, a phase-inverted pair that survives the
mix, the language used, refused parameters."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import jiwer
import numpy as np
import pytest
import soundfile as sf
from flask.testing import FlaskClient
from kubescribe_runtime.app import create_app
from kubescribe_runtime.channels import merge_channels
from kubescribe_runtime.config import DEMO_MODEL_DIR, ServeConfig
from kubescribe_runtime.ctc import Segment, Word
from kubescribe_runtime.service import Service
from kubescribe_runtime.transcriber import Transcript
from rt_server import ROOT

TESTSET = ROOT / "examples" / "testset"
SR = 16000


def clip(index: int) -> tuple[np.ndarray, str]:
    lines = (TESTSET / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[index])
    samples, rate = sf.read(TESTSET / entry["audio"], dtype="float32")
    assert rate == SR
    return np.asarray(samples), entry["text"]


def wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


@pytest.fixture(scope="module")
def client() -> Iterator[FlaskClient]:
    service = Service(ServeConfig(model_dir=DEMO_MODEL_DIR, max_batch_size=4))
    service.load()
    assert service.ready, service.reason
    yield create_app(service).test_client()
    service.close()


def transcribe(client: FlaskClient, audio: bytes, **form: Any) -> Any:
    answer = client.post(
        "/v1/audio/transcriptions",
        data={"file": (io.BytesIO(audio), "call.wav"), **form},
        content_type="multipart/form-data",
    )
    return answer


# -- merging (pure) ---------------------------------------------------------------------------


def test_channels_merge_by_time_and_carry_their_channel() -> None:
    agent = Transcript(
        "hello how can i help",
        [Word("hello", 0.0, 0.4), Word("help", 5.0, 5.3)],
        [Segment(0, 0.0, 0.4, "hello", -0.1), Segment(1, 5.0, 5.3, "help", -0.2)],
        10.0,
        "en",
    )
    caller = Transcript(
        "my order",
        [Word("order", 2.0, 2.5)],
        [Segment(0, 2.0, 2.5, "order", -0.3)],
        9.5,
        "en",
    )
    merged = merge_channels([agent, caller])
    assert [(w.word, w.channel) for w in merged.words] == [
        ("hello", 0),
        ("order", 1),
        ("help", 0),
    ]
    assert [(s.id, s.text, s.channel) for s in merged.segments] == [
        (0, "hello", 0),
        (1, "order", 1),
        (2, "help", 0),
    ]
    assert merged.text == "hello order help"
    assert merged.duration_s == 10.0


def test_nothing_to_merge_is_an_error() -> None:
    with pytest.raises(ValueError):
        merge_channels([])


# -- through the routes, on the demo model ----------------------------------------------------


def test_a_stereo_call_is_transcribed_per_channel_and_merged_by_time(
    client: FlaskClient,
) -> None:
    (first, first_text), (second, second_text) = clip(0), clip(1)
    gap = silence(1.0)
    # The agent speaks, then the caller answers on the other channel.
    left = np.concatenate([first, gap, silence(len(second) / SR)])
    right = np.concatenate([silence(len(first) / SR), gap, second])
    stereo = np.stack([left, right], axis=1)
    answer = transcribe(
        client,
        wav(stereo),
        channel_mode="separate",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert answer.status_code == 200, answer.json
    body = answer.json
    agent = [w for w in body["words"] if w["channel"] == 0]
    caller = [w for w in body["words"] if w["channel"] == 1]
    assert agent and caller
    assert max(w["end"] for w in agent) <= len(first) / SR + 0.3
    assert min(w["start"] for w in caller) >= len(first) / SR + 0.7
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts)
    assert {s["channel"] for s in body["segments"]} == {0, 1}
    assert [s["id"] for s in body["segments"]] == list(range(len(body["segments"])))
    reference = f"{first_text} {second_text}"
    assert jiwer.wer(reference, body["text"]) <= 0.3, body["text"]
    # The default mix of the same call reads the same words, without channels.
    mixed = transcribe(client, wav(stereo), response_format="verbose_json").json
    assert "channel" not in mixed["segments"][0]


def test_a_phase_inverted_stereo_file_transcribes_like_its_mono_source(
    client: FlaskClient,
) -> None:
    samples, text = clip(2)
    mono = transcribe(client, wav(samples)).json["text"]
    inverted = transcribe(client, wav(np.stack([samples, -samples], axis=1))).json["text"]
    assert inverted == mono
    assert jiwer.wer(text, inverted) <= 0.3


def test_separate_channels_do_not_stream(client: FlaskClient) -> None:
    samples, _ = clip(0)
    answer = transcribe(client, wav(samples), channel_mode="separate", stream="true")
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "invalid_channel_mode"


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"temperature": "1.5"}, "invalid_temperature"),
        ({"temperature": "-0.1"}, "invalid_temperature"),
        ({"temperature": "nan"}, "invalid_temperature"),
        ({"temperature": "warm"}, "invalid_temperature"),
        ({"response_format": "docx"}, "invalid_response_format"),
        ({"channel_mode": "left"}, "invalid_channel_mode"),
    ],
)
def test_invalid_parameters_are_400(client: FlaskClient, form: dict[str, str], code: str) -> None:
    samples, _ = clip(0)
    answer = transcribe(client, wav(samples), **form)
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == code
    assert answer.json["error"]["param"] == next(iter(form))


@pytest.mark.parametrize(("asked", "reported"), [({}, "en"), ({"language": "en-US"}, "en")])
def test_verbose_json_reports_the_language_used(
    client: FlaskClient, asked: dict[str, str], reported: str
) -> None:
    samples, _ = clip(0)
    answer = transcribe(client, wav(samples), response_format="verbose_json", **asked)
    assert answer.status_code == 200
    body = answer.json
    assert body["language"] == reported
    assert max(s["end"] for s in body["segments"]) <= body["duration"]
    assert all(s["avg_logprob"] < 0 for s in body["segments"])
    assert transcribe(client, wav(samples), temperature="0.7").status_code == 200
