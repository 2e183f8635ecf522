"""``stream=true`` on the transcription route: OpenAI's server-sent transcript events.

The event stream itself is a pure function of the transcript's progress (unit tests); the real
server process with the demo model streams it to the official ``openai`` client.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np
import openai
import pytest
import requests
import soundfile as sf
from kubescribe_runtime import sse
from kubescribe_runtime.config import DEMO_MODEL_DIR
from kubescribe_runtime.ctc import Word
from kubescribe_runtime.transcriber import Progress
from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent
from rt_server import ROOT, ServerProcess, metric, post, running

pytestmark = pytest.mark.xdist_group("runtime-server")

SAMPLE = ROOT / "examples" / "audio" / "sample.wav"
SR = 16000


def _words(*texts: str, at: float = 0.0) -> list[Word]:
    return [Word(t, at + i, at + i + 0.5) for i, t in enumerate(texts)]


def _parse(stream: bytes) -> list[Any]:
    """The ``data:`` payloads of an event stream, JSON decoded ([DONE] kept as a string)."""
    events = []
    for block in stream.decode("utf-8").split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: ") and "\n" not in block, block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def _no_error(exc: Exception) -> dict[str, Any]:
    raise AssertionError(f"unexpected {exc!r}")


# -- the event stream -------------------------------------------------------------------------


def test_deltas_in_audio_order_then_done_with_the_whole_text_and_usage() -> None:
    progress = [
        Progress(_words("good", "morning"), 20.0),
        Progress([], 38.0),  # a window with no new final word: no event
        Progress(_words("how", "are", "you", at=30), 56.0),
        Progress(_words("today", at=50), 61.25),
    ]
    events = _parse(b"".join(sse.transcript_events(progress, _no_error)))
    assert events == [
        {"type": "transcript.text.delta", "delta": "good morning"},
        {"type": "transcript.text.delta", "delta": " how are you"},
        {"type": "transcript.text.delta", "delta": " today"},
        {
            "type": "transcript.text.done",
            "text": "good morning how are you today",
            "usage": {
                "type": "tokens",
                "input_tokens": 613,  # 61.25 s at one token per 100 ms, rounded up
                "input_token_details": {"audio_tokens": 613, "text_tokens": 0},
                "output_tokens": 6,  # one token a word here
                "total_tokens": 619,
            },
        },
        "[DONE]",
    ]
    TranscriptionTextDoneEvent.model_validate(events[-2])
    for delta in events[:-2]:
        TranscriptionTextDeltaEvent.model_validate(delta)


def test_silence_streams_only_an_empty_done() -> None:
    events = _parse(b"".join(sse.transcript_events([Progress([], 3.0)], _no_error)))
    assert events == [
        {"type": "transcript.text.done", "text": "", "usage": sse.usage(3.0, 0)},
        "[DONE]",
    ]
    assert events[0]["usage"]["input_tokens"] == 30
    TranscriptionTextDoneEvent.model_validate(events[0])


def test_a_failure_mid_stream_is_an_error_event_that_ends_the_stream() -> None:
    class Broken(Exception):
        pass

    def progress() -> Iterator[Progress]:
        yield Progress(_words("hello"), 20.0)
        raise Broken("the audio contains NaN or infinite samples")

    def body(exc: Exception) -> dict[str, Any]:
        assert isinstance(exc, Broken)
        return {"error": {"message": str(exc), "type": "invalid_request_error", "code": "x"}}

    finished: list[float] = []
    events = _parse(b"".join(sse.transcript_events(progress(), body, finished.append)))
    assert events == [
        {"type": "transcript.text.delta", "delta": "hello"},
        {
            "type": "error",
            "error": {
                "message": "the audio contains NaN or infinite samples",
                "type": "invalid_request_error",
                "code": "x",
            },
        },
    ]
    assert finished == []


# -- the real server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(
        DEMO_MODEL_DIR,
        tmp_path_factory.mktemp("logs"),
        "--max-batch-size", "4",
        "--max-audio-seconds", "900",
    ) as process:  # fmt: skip
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def ten_minutes() -> bytes:
    """The sample clip with pauses, repeated past ten minutes (FLAC)."""
    samples, rate = sf.read(SAMPLE, dtype="float32")
    assert rate == SR
    unit = np.concatenate([samples, np.zeros(int(0.6 * SR), dtype=np.float32)])
    repeats = int(np.ceil(600 * SR / len(unit)))
    buffer = io.BytesIO()
    sf.write(buffer, np.tile(unit, repeats), SR, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def _stream(
    url: str, data: bytes, name: str = "audio.flac"
) -> Generator[tuple[float, Any], None, None]:
    """(arrival time, payload) of each event of a streamed transcription."""
    with requests.post(
        url + "/v1/audio/transcriptions",
        files={"file": (name, data, "application/octet-stream")},
        data={"model": "demo", "stream": "true"},
        stream=True,
        timeout=300,
    ) as answer:
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line:
                data = line.decode("utf-8").removeprefix("data: ")
                yield time.monotonic(), data if data == "[DONE]" else json.loads(data)


def test_the_openai_client_yields_typed_events_that_add_up_to_the_transcript(
    client: openai.OpenAI,
) -> None:
    with SAMPLE.open("rb") as audio:
        plain = client.audio.transcriptions.create(model="demo", file=audio)
    with SAMPLE.open("rb") as audio:
        events = list(client.audio.transcriptions.create(model="demo", file=audio, stream=True))
    *deltas, done = events
    assert deltas
    assert isinstance(done, TranscriptionTextDoneEvent)
    text = ""
    for event in deltas:
        assert isinstance(event, TranscriptionTextDeltaEvent)
        text += event.delta
    assert text == done.text == plain.text
    # The SDK builds its events leniently: check them against its strict types too.
    TranscriptionTextDoneEvent.model_validate(done.model_dump())
    for event in deltas:
        TranscriptionTextDeltaEvent.model_validate(event.model_dump())
    assert done.usage is not None and done.usage.type == "tokens"
    audio_s = sf.info(str(SAMPLE)).duration
    assert done.usage.input_tokens == pytest.approx(audio_s * 10, abs=1)
    assert done.usage.output_tokens >= len(done.text.split())


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"stream": "maybe"}, "invalid_stream"),
        ({"stream": "true", "response_format": "srt"}, "invalid_response_format"),
        ({"stream": "true", "language": "xx"}, "unsupported_language"),
    ],
)
def test_a_bad_streaming_request_is_a_plain_json_error(
    server: ServerProcess, form: dict[str, str], code: str
) -> None:
    answer = post(server.url, SAMPLE.read_bytes(), **form)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code


def test_unreadable_audio_is_refused_before_the_stream_starts(server: ServerProcess) -> None:
    answer = post(server.url, b"RIFF\x00\x00\x00\x00WAVEjunk", "bad.wav", stream="true")
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == "unreadable_audio"


def test_ten_minutes_stream_their_first_words_long_before_the_end(
    server: ServerProcess, ten_minutes: bytes
) -> None:
    sent = time.monotonic()
    events = list(_stream(server.url, ten_minutes))
    *deltas, (_, done), (ended, last) = events
    assert last == "[DONE]"
    assert done["type"] == "transcript.text.done"
    assert done["usage"]["input_tokens"] >= 6000  # 600 s at one audio token per 100 ms
    assert len(deltas) >= 10  # 20 s windows: about one delta per window
    assert all(e["type"] == "transcript.text.delta" for _, e in deltas)
    assert "".join(e["delta"] for _, e in deltas) == done["text"]
    first_delta = deltas[0][0]
    # The first words come once the first windows are decoded (the pipeline keeps at most
    # 4 windows ahead here, of some 34), not when the whole file is done.
    assert (first_delta - sent) / (ended - sent) < 0.5


def test_a_failure_mid_stream_is_an_error_event_and_the_server_goes_on(
    client: openai.OpenAI, server: ServerProcess, utterance_ok: Callable[[str], bool]
) -> None:
    """Float WAV whose samples turn NaN after four minutes: found only while decoding."""
    samples = np.tile(sf.read(SAMPLE, dtype="float32")[0], 40)[: 300 * SR]
    samples[240 * SR :] = np.nan
    buffer = io.BytesIO()
    sf.write(buffer, samples, SR, format="WAV", subtype="FLOAT")
    events = [e for _, e in _stream(server.url, buffer.getvalue(), "nan.wav")]
    *deltas, error = events
    assert deltas and all(e["type"] == "transcript.text.delta" for e in deltas)
    assert error["type"] == "error"
    assert error["error"]["code"] == "invalid_samples"
    with pytest.raises(openai.APIError, match="NaN"):
        list(
            client.audio.transcriptions.create(
                model="demo", file=("nan.wav", buffer.getvalue()), stream=True
            )
        )
    with SAMPLE.open("rb") as audio:
        assert utterance_ok(client.audio.transcriptions.create(model="demo", file=audio).text)


def test_a_client_that_hangs_up_stops_the_decoding(
    server: ServerProcess, ten_minutes: bytes
) -> None:
    windows_before = _windows_decoded(server)
    events = _stream(server.url, ten_minutes)
    next(events)  # the first delta
    events.close()  # hang up
    deadline = time.monotonic() + 120
    while metric(server, "kubescribe_requests_in_flight") > 0:
        assert time.monotonic() < deadline, "the abandoned stream is still in flight"
        time.sleep(0.2)
    # some 34 windows make ten minutes; only those already queued ran after the hang-up
    assert _windows_decoded(server) - windows_before < 20


def _windows_decoded(server: ServerProcess) -> float:
    return metric(server, "kubescribe_batch_size_sum")


@pytest.fixture(scope="module")
def utterance_ok() -> Callable[[str], bool]:
    reference = (ROOT / "examples" / "audio" / "sample.txt").read_text(encoding="utf-8").split()
    return lambda text: len(set(text.split()) & set(reference)) >= len(set(reference)) // 2


def _requests_with_code(server: ServerProcess, code: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    prefix = f'kubescribe_requests_total{{code="{code}"}} '
    return next((float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(prefix)), 0.0)


def test_an_upload_abandoned_mid_way_is_counted_499(server: ServerProcess) -> None:
    """The client hangs up halfway through its body (a stream or not, nobody will read an
    answer): counted as nginx's 499, not as the client's error 400."""
    before = {code: _requests_with_code(server, code) for code in ("400", "499")}
    body = SAMPLE.read_bytes()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        boundary = "kubescribe-abandoned"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="sample.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
        length = len(head) + len(body) + 64
        sock.sendall(
            f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
            + head
            + body[: len(body) // 2]
        )
    deadline = time.monotonic() + 30
    while _requests_with_code(server, "499") < before["499"] + 1:
        assert time.monotonic() < deadline, "the abandoned upload was never counted 499"
        time.sleep(0.1)
    assert _requests_with_code(server, "400") == before["400"]
