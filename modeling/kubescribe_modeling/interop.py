"""Transcribe with other engines that load the artifact unchanged: onnx-asr and sherpa-onnx.

Both are optional (the ``dev`` extra); each function returns a transcriber for
:func:`kubescribe_modeling.evaluate.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kubescribe_modeling.dataset import SAMPLE_RATE, read_audio
from kubescribe_modeling.evaluate import Transcriber
from kubescribe_modeling.vocab import WORD_BOUNDARY


def onnx_asr_transcriber(artifact: Path, model_file: str = "model.onnx") -> Transcriber:
    """onnx-asr's NeMo Conformer CTC loader (reads config.json, vocab.txt, model[.int8].onnx)."""
    import onnx_asr

    # model.onnx -> None, model.int8.onnx -> "int8" (onnx-asr looks for model?int8.onnx)
    quantization = None
    if model_file != "model.onnx":
        quantization = model_file.removeprefix("model.").removesuffix(".onnx")
    model = onnx_asr.load_model("nemo-conformer-ctc", str(artifact), quantization=quantization)

    def transcribe(paths: Sequence[Path]) -> list[str]:
        return [str(model.recognize(read_audio(p), sample_rate=16000)) for p in paths]

    return transcribe


def sherpa_onnx_transcriber(artifact: Path, model_file: str = "model.onnx") -> Transcriber:
    """sherpa-onnx's NeMo CTC recognizer (reads the ONNX metadata and tokens.txt)."""
    import sherpa_onnx

    recognizer = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(
        model=str(artifact / model_file),
        tokens=str(artifact / "tokens.txt"),
        num_threads=1,
        sample_rate=SAMPLE_RATE,
        feature_dim=80,
        decoding_method="greedy_search",
    )

    def transcribe(paths: Sequence[Path]) -> list[str]:
        out = []
        for path in paths:
            stream = recognizer.create_stream()
            stream.accept_waveform(SAMPLE_RATE, read_audio(path))
            recognizer.decode_stream(stream)
            text = stream.result.text.replace(WORD_BOUNDARY, " ")
            out.append(" ".join(text.split()))
        return out

    return transcribe
