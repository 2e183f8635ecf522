"""At least 20 malformed requests against the real server process (tone model, whose
transcripts are known exactly): each gets the right status and a clear OpenAI-style error, the
unusual-but-valid ones (8 kHz, 48 kHz stereo, 6 channels, OGG, MP3, a lying header) get the
right transcript, and the server keeps serving correct transcripts afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import requests
import rt_bad_inputs
from rt_fixtures import SR, TONE_TOKENS, tone_sentence, write_artifact
from rt_server import ServerProcess, running

pytestmark = pytest.mark.xdist_group("runtime-server")

PATTERN = "lo hi lo hi"
EXPECTED = "low high low high"
MAX_AUDIO_SECONDS = 300
MAX_UPLOAD_MB = 6


def sample() -> tuple[np.ndarray, int]:
    return tone_sentence(PATTERN), SR


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = write_artifact(tmp_path_factory.mktemp("model") / "tone", TONE_TOKENS)
    with running(
        model,
        tmp_path_factory.mktemp("logs"),
        "--max-audio-seconds", str(MAX_AUDIO_SECONDS),
        "--max-upload-mb", str(MAX_UPLOAD_MB),
    ) as process:  # fmt: skip
        yield process


def test_bad_input_table_then_correct_transcripts(server: ServerProcess) -> None:
    table = rt_bad_inputs.cases(sample, MAX_AUDIO_SECONDS, MAX_UPLOAD_MB)
    assert sum(1 for case in table if case.status >= 400) >= 20
    failures = rt_bad_inputs.run(server.url, table, lambda text: text == EXPECTED)
    assert failures == []
    answer = rt_bad_inputs.post(server.url, rt_bad_inputs.encode(*sample()))
    assert answer.status_code == 200 and answer.json()["text"] == EXPECTED
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert 'kubescribe_requests_total{code="415"} 4.0' in metrics


def test_the_table_would_catch_a_wrong_answer(server: ServerProcess) -> None:
    """The runner is not vacuous: a case expecting the wrong status or transcript fails."""
    wrong = [
        rt_bad_inputs.Case("zero bytes as 200", lambda url: rt_bad_inputs.post(url, b""), 200),
        rt_bad_inputs.Case(
            "valid as 400",
            lambda url: rt_bad_inputs.post(url, rt_bad_inputs.encode(*sample())),
            400,
            "empty_audio",
        ),
    ]
    assert len(rt_bad_inputs.run(server.url, wrong, lambda text: True)) == 2
    valid = [
        rt_bad_inputs.Case(
            "valid", lambda url: rt_bad_inputs.post(url, rt_bad_inputs.encode(*sample())), 200
        )
    ]
    assert rt_bad_inputs.run(server.url, valid, lambda text: text == "something else") != []
