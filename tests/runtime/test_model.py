"""The acoustic model: providers, GPU refusal, front ends, output lengths, timings."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kubescribe_runtime import cpu
from kubescribe_runtime.artifact import load_artifact
from kubescribe_runtime.batcher import DynamicBatcher
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.model import (
    CPU,
    CUDA,
    AcousticModel,
    ModelUnavailable,
    SessionSettings,
    choose_providers,
    cuda_options,
    prepare,
    session_options,
)
from kubescribe_runtime.service import Service, State, build_transcriber
from kubescribe_runtime.transcriber import PipelineSettings, Transcriber
from rt_fixtures import SR, TONE_TOKENS, encode, pause, tone_sentence, write_artifact


def test_provider_choice() -> None:
    assert choose_providers("cpu", 0, False, [CUDA, CPU]) == ([CPU], None)
    providers, warning = choose_providers("gpu", 1, False, [CUDA, CPU])
    assert providers[1:] == [CPU] and warning is None
    assert providers[0] == (CUDA, cuda_options(1, SessionSettings()))
    with pytest.raises(ModelUnavailable, match="device=gpu but onnxruntime offers no CUDA"):
        choose_providers("gpu", 0, False, [CPU])
    providers, warning = choose_providers("gpu", 0, True, [CPU])
    assert providers == [CPU] and warning and "serving on CPU" in warning


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("m") / "tone", TONE_TOKENS)


def test_gpu_without_cuda_stays_unready_with_the_reason(tone_dir: Path) -> None:
    service = Service(ServeConfig(model_dir=tone_dir, device="gpu"))
    service.load()
    assert service.state is State.FAILED and not service.ready
    assert "CUDAExecutionProvider" in service.reason
    fallback = Service(ServeConfig(model_dir=tone_dir, device="gpu", allow_cpu_fallback=True))
    fallback.load()
    assert fallback.ready and fallback.transcriber is not None
    assert fallback.transcriber.model.device == "cpu"
    fallback.close()


def test_a_corrupt_artifact_stays_unready(tmp_path: Path) -> None:
    directory = write_artifact(tmp_path / "bad", TONE_TOKENS)
    (directory / "tokens.txt").write_text("▁x 0\n<blk> 1\n", encoding="utf-8")
    service = Service(ServeConfig(model_dir=directory))
    service.load()
    assert service.state is State.FAILED and "tokens.txt: sha256 mismatch" in service.reason


def test_batched_and_single_inference_agree(tone_dir: Path) -> None:
    model = AcousticModel(load_artifact(tone_dir), threads=1)
    inputs = [
        prepare(tone_sentence(p), model.manifest) for p in ("lo hi", "hi lo hi", "lo lo hi hi")
    ]
    batched = model.infer(inputs)
    for item, together in zip(inputs, batched, strict=True):
        (alone,) = model.infer([item])
        assert alone.shape == together.shape == (-(-item.length // 4), 3)
        np.testing.assert_allclose(alone, together, atol=1e-5)


def test_tone_transcripts_and_word_times(tone_dir: Path) -> None:
    # Tones are no speech to Silero VAD: the tone model's tests decode every window.
    transcriber = build_transcriber(ServeConfig(model_dir=tone_dir, vad="off"))
    result = transcriber.transcribe(encode(tone_sentence("lo hi lo", word_s=0.4, gap_s=0.4)))
    transcriber.batcher.close()
    assert result.text == "low high low"
    # tones at 0.4-0.8, 1.2-1.6, 2.0-2.4 s; one output frame is 40 ms
    for word, start in zip(result.words, (0.4, 1.2, 2.0), strict=True):
        assert abs(word.start - start) <= 0.04
        assert abs(word.end - (start + 0.4)) <= 0.08
    assert result.duration_s == pytest.approx(len(tone_sentence("lo hi lo")) / SR)


def test_waveform_frontend(tmp_path: Path) -> None:
    directory = write_artifact(tmp_path / "wave", ["▁up", "▁down", "<blk>"], build="wave")
    transcriber = build_transcriber(ServeConfig(model_dir=directory, vad="off"))
    signal = np.concatenate(
        [pause(0.3), np.full(8000, 0.3), pause(0.3), np.full(8000, -0.3), pause(0.3)]
    ).astype(np.float32)
    result = transcriber.transcribe(encode(signal))
    transcriber.batcher.close()
    assert result.text == "up down"
    assert abs(result.words[0].start - 0.3) <= 0.02 and abs(result.words[1].start - 1.1) <= 0.02


def test_long_audio_is_windowed_and_stitched(tone_dir: Path) -> None:
    model = AcousticModel(load_artifact(tone_dir))
    batcher = DynamicBatcher(model.infer, max_batch_size=4, max_delay_s=0.001, max_queue=64)
    windows_seen: list[int] = []
    transcriber = Transcriber(
        model,
        batcher,
        PipelineSettings(window_seconds=5, window_overlap_seconds=1, vad=False),
        on_window=lambda: windows_seen.append(1),
    )
    pattern = " ".join(["lo hi hi lo"] * 12)  # 48 words, 38.8 s
    result = transcriber.transcribe(encode(tone_sentence(pattern)))
    batcher.close()
    assert result.text == " ".join("low" if w == "lo" else "high" for w in pattern.split())
    assert len(windows_seen) >= 9
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)


def test_twenty_minutes_in_bounded_memory(tone_dir: Path) -> None:
    """Memory does not grow with the audio: 20 min (77 MB as float32) peak well under that."""
    unit = tone_sentence("lo hi hi lo")  # 3.6 s
    repeats = int(20 * 60 / (len(unit) / SR)) + 1
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", SR, 1, format="WAV", subtype="PCM_16") as handle:
        for _ in range(repeats):
            handle.write(unit)
    data = buffer.getvalue()
    seconds = repeats * len(unit) / SR
    assert seconds >= 1200
    transcriber = build_transcriber(ServeConfig(model_dir=tone_dir, max_batch_size=2, vad="off"))
    tracemalloc.start()
    try:
        result = transcriber.transcribe(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        transcriber.batcher.close()
    assert result.text == " ".join(["low high high low"] * repeats)
    assert result.duration_s == pytest.approx(seconds)
    whole_waveform = seconds * SR * 4
    assert peak < whole_waveform / 4, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("threads", [1, 3])
def test_intra_op_threads_are_configured(tone_dir: Path, threads: int) -> None:
    model = AcousticModel(load_artifact(tone_dir), threads=threads)
    assert model.session.get_session_options().intra_op_num_threads == threads
    assert model.providers == [CPU] and model.device == "cpu"


def test_threads_default_to_the_containers_cpu_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "cgroup_cpus", lambda: 1.5)
    monkeypatch.setattr(cpu, "usable_cpus", lambda: 64)
    assert session_options(SessionSettings()).intra_op_num_threads == 2
    assert session_options(SessionSettings(threads=5)).intra_op_num_threads == 5


@pytest.mark.parametrize(("spinning", "entry"), [(False, "0"), (True, "1")])
def test_thread_spinning_is_off_unless_asked_for(spinning: bool, entry: str) -> None:
    options = session_options(SessionSettings(threads=1, spinning=spinning))
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == entry


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            SessionSettings(),
            {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"},
        ),
        (
            SessionSettings(cudnn_conv_algo_search="exhaustive", gpu_mem_limit_mb=2048),
            {"cudnn_conv_algo_search": "EXHAUSTIVE", "gpu_mem_limit": str(2048 * 1024 * 1024)},
        ),
    ],
)
def test_cuda_provider_options(settings: SessionSettings, expected: dict[str, str]) -> None:
    options = cuda_options(2, settings)
    assert options["device_id"] == "2"
    assert expected.items() <= options.items()
    assert ("gpu_mem_limit" in options) is (settings.gpu_mem_limit_mb > 0)


@pytest.mark.parametrize(("io_binding", "used"), [("auto", False), ("on", True), ("off", False)])
def test_io_binding_gives_the_same_log_probabilities(
    tone_dir: Path, io_binding: str, used: bool
) -> None:
    plain = AcousticModel(load_artifact(tone_dir), session=SessionSettings(threads=1))
    model = AcousticModel(
        load_artifact(tone_dir),
        session=SessionSettings(threads=1, io_binding=io_binding),  # type: ignore[arg-type]
    )
    assert model.io_binding is used  # auto: only where a device copy is saved (CUDA)
    samples = tone_sentence("lo hi")
    items = [prepare(samples, model.manifest), prepare(samples[: SR // 2], model.manifest)]
    for ours, reference in zip(model.infer(items), plain.infer(items), strict=True):
        np.testing.assert_array_equal(ours, reference)
