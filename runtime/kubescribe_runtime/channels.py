"""Call recordings: one speaker per channel (agent on the left, customer on the right).

With ``channel_mode=separate`` (an extension of OpenAI's API) each channel is transcribed on its
own and the results are merged by time: every word and segment carries its ``channel`` (0-based),
segments are numbered again in time order, and the text reads the segments in that order. Pure
functions; the service runs the channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kubescribe_runtime.ctc import text_of
from kubescribe_runtime.transcriber import Transcript

CHANNEL_MODES: tuple[str, ...] = ("mix", "separate")


def merge_channels(transcripts: Sequence[Transcript]) -> Transcript:
    """The transcripts of channels 0, 1, … as one, merged by time."""
    if not transcripts:
        raise ValueError("no channel to merge")
    words = sorted(
        (replace(w, channel=c) for c, t in enumerate(transcripts) for w in t.words),
        key=lambda w: (w.start, w.channel or 0),
    )
    segments = sorted(
        (replace(s, channel=c) for c, t in enumerate(transcripts) for s in t.segments),
        key=lambda s: (s.start, s.channel or 0),
    )
    segments = [replace(s, id=i) for i, s in enumerate(segments)]
    text = " ".join(s.text for s in segments) if segments else text_of(words)
    return Transcript(
        text=text,
        words=words,
        segments=segments,
        duration_s=max(t.duration_s for t in transcripts),
        language=transcripts[0].language,
    )
