"""Stream a WAV file to a kubescribe runtime (or any OpenAI Realtime transcription endpoint) at
real-time pace, and print the partial transcript as it grows and each turn's final transcript.

    python examples/clients/realtime_wav.py examples/audio/sample.wav
    python examples/clients/realtime_wav.py call.wav --format pcmu --base-url http://speech:8080/v1

Needs the official client with its realtime extra (``pip install "openai[realtime]"``), numpy,
soundfile and soxr. ``--format pcmu|pcma`` sends 8 kHz G.711 telephone audio (encoded with
kubescribe's codec). Turns end by server VAD, or with ``--manual`` by one commit at the end.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import threading
import time

import numpy as np
import soundfile as sf
import soxr
from openai import OpenAI

CHUNK_S = 0.1
RATES = {"pcm": 24000, "pcmu": 8000, "pcma": 8000}


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Mono float samples at ``rate`` → the session's audio format."""
    wave = soxr.resample(samples, rate, RATES[fmt]) if rate != RATES[fmt] else samples
    if fmt == "pcm":
        return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    from kubescribe_runtime import g711  # the runtime's G.711 codec (numpy tables)

    return g711.from_float(wave, fmt)  # type: ignore[arg-type]


def session(fmt: str, language: str | None, manual: bool) -> dict[str, object]:
    audio_format: dict[str, object] = {"type": f"audio/{fmt}"}
    if fmt == "pcm":
        audio_format["rate"] = 24000
    vad = None if manual else {"type": "server_vad", "silence_duration_ms": 500}
    transcription = {"model": "kubescribe", **({"language": language} if language else {})}
    return {
        "type": "transcription",
        "audio": {
            "input": {"format": audio_format, "transcription": transcription, "turn_detection": vad}
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", help="audio file (any rate and channel count libsndfile reads)")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "unused"))
    parser.add_argument("--language", default=None, help="ISO 639-1 code, e.g. en")
    parser.add_argument("--format", choices=sorted(RATES), default="pcm")
    parser.add_argument("--manual", action="store_true", help="no server VAD: commit at the end")
    parser.add_argument("--speed", type=float, default=1.0, help="2: twice real time")
    parser.add_argument("--tail-seconds", type=float, default=1.0, help="silence sent after")
    args = parser.parse_args(argv)

    samples, rate = sf.read(args.wav, dtype="float32", always_2d=True)
    mono = np.concatenate([samples.mean(axis=1), np.zeros(int(args.tail_seconds * rate))])
    audio = encode(mono.astype(np.float32), rate, args.format)
    step = int(RATES[args.format] * CHUNK_S) * (2 if args.format == "pcm" else 1)

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        conn.session.update(session=session(args.format, args.language, args.manual))  # type: ignore[arg-type]
        state = {"speaking": False, "open_turns": 0, "done": False}
        lock = threading.Lock()

        def send() -> None:
            started = time.monotonic()
            for i, offset in enumerate(range(0, len(audio), step)):
                chunk = base64.b64encode(audio[offset : offset + step]).decode()
                conn.input_audio_buffer.append(audio=chunk)
                time.sleep(max(0.0, started + (i + 1) * CHUNK_S / args.speed - time.monotonic()))
            if args.manual:
                with lock:
                    state["open_turns"] += 1
                conn.input_audio_buffer.commit()
            while True:  # every turn transcribed: hang up
                with lock:
                    if not state["speaking"] and not state["open_turns"]:
                        state["done"] = True
                        break
                time.sleep(0.05)
            conn.close()

        threading.Thread(target=send, daemon=True).start()
        status = 0
        while True:
            try:
                event = conn.recv()
            except Exception as exc:  # closed: by us when done, else by the server
                if not state["done"]:
                    print(f"\n[closed: {exc}]", file=sys.stderr)
                    return 1
                return status
            with lock:
                if event.type == "input_audio_buffer.speech_started":
                    state["speaking"] = True
                elif event.type == "input_audio_buffer.committed":
                    state["speaking"] = False
                    state["open_turns"] += 0 if args.manual else 1
                elif event.type == "conversation.item.input_audio_transcription.delta":
                    print(event.delta, end="", flush=True)  # the partial grows, never changes
                elif event.type in (
                    "conversation.item.input_audio_transcription.completed",
                    "conversation.item.input_audio_transcription.failed",
                ):
                    text = getattr(event, "transcript", "(failed)")
                    print(f"\r\x1b[K[final] {text}", flush=True)
                    state["open_turns"] -= 1
                elif event.type == "error":
                    print(f"\n[error {event.error.code}] {event.error.message}", file=sys.stderr)
                    status = 1
                    if event.error.code == "input_audio_buffer_commit_empty":
                        state["open_turns"] -= 1


if __name__ == "__main__":
    sys.exit(main())
