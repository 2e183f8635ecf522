"""Silence and noise: the committed test set clean, padded with 10 s of digital silence on both
sides, padded with 10 s of white noise at -60 dBFS on both sides, and padded with silence under
white noise at -30 dBFS throughout; word error rate and time with the runtime's voice activity
detection (``--vad energy``, the default) and without (``--vad off``).

    .venv/bin/python -m bench.nonspeech            # full run (about a minute), updates the doc
    .venv/bin/python -m bench.nonspeech --smoke    # seconds: checks that it runs

The goal (issue 12.6): padding moves the WER by at most one point with VAD on. The same check
is a test (tests/runtime/test_nonspeech.py); this table shows the numbers, and what the padding
did before (``off``).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from bench.common import (
    BenchError,
    add_artifact_options,
    artifact_label,
    base_parser,
    finish,
    fmt,
    machine_facts,
    main_wrapper,
    markdown_table,
    progress,
    read_testset,
    require_artifact,
    timed,
    word_error_rate,
)

if TYPE_CHECKING:
    from kubescribe_runtime.transcriber import Transcriber

SECTION = "nonspeech"
SR = 16000
PAD_S = 10.0


def _noise(seconds: float, level_db: float, rng: np.random.Generator) -> np.ndarray:
    return (10 ** (level_db / 20) * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def _padded(clip: np.ndarray, pad: np.ndarray) -> np.ndarray:
    return np.concatenate([pad, clip, pad])


def _under_noise(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    audio = _padded(clip, np.zeros(int(PAD_S * SR), dtype=np.float32))
    return np.clip(audio + _noise(len(audio) / SR, -30.0, rng), -1, 1)


# Each condition turns a clip into the audio sent.
PADDINGS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "none": lambda clip, rng: clip,
    "10 s silence each side": lambda clip, rng: _padded(
        clip, np.zeros(int(PAD_S * SR), dtype=np.float32)
    ),
    "10 s noise at -60 dBFS each side": lambda clip, rng: _padded(clip, _noise(PAD_S, -60, rng)),
    "10 s each side, noise at -30 dBFS throughout (about 10 dB below the speech)": _under_noise,
}


@dataclass(frozen=True)
class Row:
    padding: str
    vad: str
    wer: float
    seconds: float
    audio_s: float


def wav(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _texts(transcriber: Transcriber, data: Sequence[bytes]) -> list[str]:
    return [transcriber.transcribe(x).text for x in data]


def run(argv: Sequence[str] | None) -> int:
    import soundfile as sf
    from kubescribe_runtime.config import ServeConfig
    from kubescribe_runtime.service import build_transcriber

    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "nonspeech benchmark")
    add_artifact_options(parser)
    args = parser.parse_args(argv)
    artifact = require_artifact(args.artifact).resolve()
    utterances = read_testset()[: 4 if args.smoke else None]
    clips = []
    for utterance in utterances:
        samples, rate = sf.read(utterance.audio, dtype="float32")
        if rate != SR:
            raise BenchError(f"{utterance.audio}: {rate} Hz; the test set is {SR} Hz")
        clips.append(np.asarray(samples))
    references = [u.text for u in utterances]
    rows: list[Row] = []
    for vad in ("energy", "off"):
        config = ServeConfig.model_validate(
            {"model_dir": artifact, "threads": args.threads, "max_batch_size": 1, "vad": vad}
        )
        transcriber = build_transcriber(config)
        transcriber.warm_up()
        try:
            for padding, make in PADDINGS.items():
                rng = np.random.default_rng(0)
                audio = [make(c, rng) for c in clips]
                data = [wav(a) for a in audio]
                hyps, seconds = timed(partial(_texts, transcriber, data))
                audio_s = sum(len(a) for a in audio) / SR
                row = Row(padding, vad, word_error_rate(references, hyps), seconds, audio_s)
                rows.append(row)
                progress(
                    f"vad {vad}, padding {padding}: WER {100 * row.wer:.2f} %, {seconds:.1f} s"
                )
        finally:
            transcriber.batcher.close(timeout=5)
    finish(args, SECTION, "Silence and noise (`python -m bench.nonspeech`)", render(args, rows))
    return 0


def render(args: argparse.Namespace, rows: list[Row]) -> str:
    by = {(r.padding, r.vad): r for r in rows}
    clean = {vad: by["none", vad].wer for vad in ("energy", "off")}

    def cells(padding: str, vad: str) -> list[str]:
        row = by[padding, vad]
        return [
            f"{100 * row.wer:.2f} %",
            f"{100 * (row.wer - clean[vad]):+.2f}",
            fmt(row.seconds / row.audio_s, 4),
        ]

    table = markdown_table(
        [
            "padding",
            "WER, VAD on",
            "change (points)",
            "real-time factor",
            "WER, VAD off",
            "change (points)",
            "real-time factor",
        ],
        [[p, *cells(p, "energy"), *cells(p, "off")] for p in PADDINGS],
    )
    quiet = [p for p in PADDINGS if "-30 dBFS" not in p]
    worst = max(abs(by[p, "energy"].wer - clean["energy"]) for p in quiet)
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    clips = "4 clips of the test set" if args.smoke else "the committed test set"
    return "\n\n".join(
        [
            f"Run: {mode}; artifact {artifact_label(args.artifact)}; {clips} through the "
            "in-process pipeline (`build_transcriber`, batches of one), each clip clean and "
            f"padded with {PAD_S:g} s on both sides (20 s windows); VAD on = `--vad energy` "
            "(the default), off = `--vad off`; change = WER minus the clean WER of the same "
            "setting.",
            "\n".join(machine_facts(args.threads)),
            table,
            "Goal (issue 12.6): with VAD on, padding with silence or quiet noise moves the WER by "
            "at most 1 point; the largest move in this run: "
            f"{100 * worst:.2f} points. Noise 10 dB below the speech is harder for the model "
            "itself; the VAD must not make it worse by cutting speech.",
        ]
    )


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
