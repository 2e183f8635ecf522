"""A session's decodes go through the server's one batcher, on a live flow (priority over file
windows), windowed exactly as a file is (issue 13.3, 13.5)."""

from __future__ import annotations

import itertools
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubescribe_runtime.artifact import load_artifact
from kubescribe_runtime.model import AcousticModel, ModelInput
from kubescribe_runtime.realtime.decode import SessionDecoder
from kubescribe_runtime.realtime.session import DecodeRequest
from rt_fixtures import TONE_TOKENS, tone_sentence, write_artifact


class RecordingFlow:
    def __init__(self, model: AcousticModel, live: bool) -> None:
        self.model = model
        self.live = live
        self.lengths: list[int] = []
        self.cancelled = False

    def submit(self, payload: ModelInput, length: int) -> Future[Any]:
        self.lengths.append(length)
        future: Future[Any] = Future()
        future.set_result(self.model.infer([payload])[0])
        return future

    def cancel(self) -> int:
        self.cancelled = True
        return 0


class RecordingBatcher:
    """Stands in for the dynamic batcher: records the flows opened on it."""

    def __init__(self, model: AcousticModel) -> None:
        self.model = model
        self.flows: list[RecordingFlow] = []

    def open_flow(self, live: bool = False) -> RecordingFlow:
        self.flows.append(RecordingFlow(self.model, live))
        return self.flows[-1]

    def submit(self, payload: ModelInput, length: int) -> Future[Any]:
        raise AssertionError("a session submits on its flow, not around it")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> AcousticModel:
    directory = write_artifact(tmp_path_factory.mktemp("model") / "tone", TONE_TOKENS)
    return AcousticModel(load_artifact(Path(directory), "model.onnx"))


def test_a_session_decodes_on_one_live_flow_and_cancels_it_at_the_end(
    model: AcousticModel,
) -> None:
    batcher = RecordingBatcher(model)
    decoder = SessionDecoder(model, batcher, window_seconds=20, overlap_seconds=2)  # type: ignore[arg-type]
    samples = tone_sentence("lo hi lo")
    for kind in ("partial", "final"):
        pending = decoder.submit(DecodeRequest(kind, "item", samples, 0.0))
        assert [w.word for w in decoder.words(pending)] == ["low", "high", "low"]
    (flow,) = batcher.flows
    assert flow.live
    decoder.close()
    assert flow.cancelled


def test_a_long_turn_is_windowed_and_stitched_as_a_file_is(model: AcousticModel) -> None:
    batcher = RecordingBatcher(model)
    decoder = SessionDecoder(model, batcher, window_seconds=4, overlap_seconds=1)  # type: ignore[arg-type]
    samples = np.concatenate([tone_sentence("lo hi lo hi")] * 3)  # 10.8 s
    pending = decoder.submit(DecodeRequest("final", "item", samples, 10.0))
    assert len(batcher.flows[0].lengths) == 4  # windows start every 3 s: 0, 3, 6 and the tail
    words = decoder.words(pending)
    assert [w.word for w in words] == ["low", "high", "low", "high"] * 3
    assert all(a.end <= b.start for a, b in itertools.pairwise(words))
