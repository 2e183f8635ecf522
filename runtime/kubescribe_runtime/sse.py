"""Server-sent events for ``stream=true`` on the transcription route, as OpenAI streams them.

Each event is one ``data:`` line of JSON (no ``event:`` line), a blank line after it:
``transcript.text.delta`` (``delta``: the text that became final, in audio order) as windows
are decoded, then ``transcript.text.done`` (``text``: the whole transcript, equal to the
concatenated deltas; ``usage``: tokens, as the OpenAI type has it: the audio at one token per
100 ms, as OpenAI counts a user's audio, and the model's output tokens), then
``data: [DONE]``. A failure after the stream has begun is an ``error`` event
(``{"type": "error", "error": {message, type, code}}``: the OpenAI client raises it as an
``APIError``) and ends the stream. Pure formatting: the
route supplies the transcript's progress and the error mapping.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kubescribe_runtime.ctc import text_of
from kubescribe_runtime.transcriber import Progress

CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"
AUDIO_TOKENS_PER_S = 10


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


def delta(text: str) -> bytes:
    return event({"type": "transcript.text.delta", "delta": text})


def usage(audio_s: float, output_tokens: int) -> dict[str, Any]:
    audio_tokens = math.ceil(round(audio_s * AUDIO_TOKENS_PER_S, 6))
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
        "output_tokens": output_tokens,
        "total_tokens": audio_tokens + output_tokens,
    }


def done(text: str, audio_s: float, output_tokens: int = 0) -> bytes:
    return event(
        {"type": "transcript.text.done", "text": text, "usage": usage(audio_s, output_tokens)}
    )


def error(payload: dict[str, Any]) -> bytes:
    """``payload`` is the JSON error body of the HTTP API: ``{"error": {...}}``."""
    return event({"type": "error", **payload})


def transcript_events(
    progress: Iterable[Progress],
    error_body: Callable[[Exception], dict[str, Any]],
    on_done: Callable[[float], None] = lambda audio_s: None,
) -> Iterator[bytes]:
    """Deltas as words become final, then the done event and the end of the stream.

    ``error_body`` maps an exception raised by ``progress`` to the API's error body;
    ``on_done`` gets the audio seconds of a transcript streamed to its end.
    """
    text = ""
    audio_s = 0.0
    tokens = 0
    try:
        for step in progress:
            audio_s = step.audio_s
            tokens += sum(word.tokens for word in step.words)
            piece = text_of(step.words)
            if not piece:
                continue
            piece = f" {piece}" if text else piece
            text += piece
            yield delta(piece)
    except Exception as exc:
        yield error(error_body(exc))
        return
    on_done(audio_s)
    yield done(text, audio_s, tokens)
    yield DONE
