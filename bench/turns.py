"""Server VAD turns before (the energy detector) and after (Silero VAD): turn boundaries on
synthetic calls of test-set sentences and on real recorded speech (Debian's Asterisk prompts,
8 kHz, run at 8 kHz) with noise mixed in, turns opened by a minute of noise or by tones, and the
detector's CPU cost per session.

    .venv/bin/python -m bench.turns            # full run (a few minutes), updates the doc
    .venv/bin/python -m bench.turns --smoke    # seconds: checks that it runs

The Asterisk prompts come from ``make tools`` (asterisk-core-sounds-en-wav, transcripts in
asterisk-core-sounds-en); nothing is committed or downloaded by this script.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bench.calls import noise, speech_bounds
from bench.common import (
    SAMPLE_RATE,
    BenchError,
    base_parser,
    finish,
    machine_facts,
    main_wrapper,
    markdown_table,
    progress,
    read_audio,
    read_testset,
)

SECTION = "turns"
APPEND_S = 0.1  # a client's append
TOLERANCE_S = 0.2
Audio = npt.NDArray[np.float32]


class Detector(Protocol):
    def feed(self, samples: npt.NDArray[np.floating]) -> list[object]: ...

    def flush(self) -> list[object]: ...


def _energy(rate: int) -> Detector:
    from bench.energy_turns import TurnDetector

    return TurnDetector(rate)  # type: ignore[return-value]


def _silero(rate: int) -> Detector:
    from kubescribe_runtime.realtime.turns import TurnDetector

    return TurnDetector(rate)  # type: ignore[return-value]


DETECTORS: dict[str, Callable[[int], Detector]] = {
    "energy (before)": _energy,
    "Silero VAD (after)": _silero,
}


@dataclass(frozen=True)
class Call:
    samples: Audio
    rate: int
    truth: list[tuple[float, float]]


def build_call(
    clips: Sequence[Audio], rate: int, pauses: Sequence[float], snr_db: float, kind: str, seed: int
) -> Call:
    """The clips (at ``rate``) in order after 1 s of quiet, each followed by its pause, under
    stationary noise at ``snr_db`` over the speech; truth from the clean clips."""
    import soxr

    pieces: list[Audio] = [np.zeros(rate, np.float32)]
    truth = []
    t = 1.0
    for clip, pause in zip(clips, pauses, strict=True):
        wide = clip if rate == SAMPLE_RATE else soxr.resample(clip, rate, SAMPLE_RATE)
        start, end = speech_bounds(np.asarray(wide, dtype=np.float32))
        truth.append((t + start, t + end))
        pieces += [clip, np.zeros(int(pause * rate), np.float32)]
        t += len(clip) / rate + pause
    clean = np.concatenate(pieces)
    speech = np.concatenate([clean[int(a * rate) : int(b * rate)] for a, b in truth])
    scale = np.sqrt(np.mean(speech.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    noisy = (
        clean + 1e-4 * noise("white", len(clean), seed + 99) + scale * noise(kind, len(clean), seed)
    )
    return Call(noisy.astype(np.float32), rate, truth)


def turns_of(
    factory: Callable[[int], Detector], samples: Audio, rate: int
) -> list[tuple[float, float]]:
    detector = factory(rate)
    step = int(APPEND_S * rate)
    events: list[object] = []
    for i in range(0, len(samples), step):
        events += detector.feed(samples[i : i + step])
    events += detector.flush()
    starts = [e.time_s for e in events if e.kind == "started"]  # type: ignore[attr-defined]
    stops = [e.time_s for e in events if e.kind == "stopped"]  # type: ignore[attr-defined]
    return list(zip(starts, stops, strict=False))


@dataclass(frozen=True)
class Score:
    calls: int
    exact: int  # one turn per sentence
    within: float  # share of boundaries within TOLERANCE_S (exact calls)
    worst: float
    turns: int
    sentences: int


def score(factory: Callable[[int], Detector], calls: Sequence[Call]) -> Score:
    exact, errors, turns, sentences = 0, [], 0, 0
    for call in calls:
        got = turns_of(factory, call.samples, call.rate)
        turns += len(got)
        sentences += len(call.truth)
        if len(got) != len(call.truth):
            continue
        exact += 1
        for (a, b), (s, e) in zip(call.truth, got, strict=True):
            errors += [abs(s - a), abs(e - b)]
    within = sum(x <= TOLERANCE_S for x in errors) / len(errors) if errors else 0.0
    worst = max(errors) if errors else float("nan")
    return Score(len(calls), exact, within, worst, turns, sentences)


@dataclass(frozen=True)
class Prompt:
    samples: Audio  # 8 kHz
    text: str


def asterisk_prompts(count: int) -> list[Prompt]:
    """Prompts of the test split, 1.5-6 s long, in a fixed pseudo-random order (8 kHz)."""
    import soundfile as sf

    try:
        from kubescribe_modeling.data.asterisk import load_prompts
        from kubescribe_modeling.errors import ModelingError
    except ImportError as exc:  # pragma: no cover - the dev install has the toolkit
        raise BenchError(f"the modeling toolkit is needed for the Asterisk prompts: {exc}") from exc
    try:
        prompts, _ = load_prompts("en")
    except ModelingError as exc:
        raise BenchError(str(exc)) from exc
    chosen = []
    for prompt in sorted(prompts, key=lambda p: p.name):
        if prompt.split != "test":
            continue
        samples, rate = sf.read(prompt.audio, dtype="float32", always_2d=True)
        if rate != 8000:
            raise BenchError(f"{prompt.audio}: {rate} Hz; the Asterisk prompts are 8 kHz")
        if 1.5 <= len(samples) / rate <= 6.0:
            mono = np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))
            chosen.append(Prompt(mono, prompt.text))
    order = np.random.default_rng(0).permutation(len(chosen))
    return [chosen[i] for i in order[:count]]


def synthetic_calls(
    per_cell: int, sentences: int, source: Sequence[Audio], rate: int
) -> dict[tuple[str, float], list[Call]]:
    rng = np.random.default_rng(0)
    cells: dict[tuple[str, float], list[Call]] = {}
    for kind in ("white", "pink", "brown"):
        for snr in (10.0, 15.0, 20.0):
            calls = []
            for c in range(per_cell):
                picked = [source[i] for i in rng.choice(len(source), sentences, replace=False)]
                pauses = list(rng.uniform(1.0, 2.5, sentences))
                calls.append(build_call(picked, rate, pauses, snr, kind, seed=c))
            cells[kind, snr] = calls
    return cells


def steady(kind: str, seconds: float, rate: int) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)  # 50 ms on and off: a click
    tones = {"dial tone": (350, 440), "ringback": (440, 480), "hum": (250,), "beep": (1000,)}
    wave = 0.05 * ramp * sum(np.sin(2 * np.pi * hz * t) for hz in tones[kind])
    return (wave + 1e-3 * noise("white", len(t), 1)).astype(np.float32)


def false_turns(factory: Callable[[int], Detector], seconds: float) -> dict[str, int]:
    """Turns opened by background alone: noise at three levels, tones switched on and off."""
    rate = SAMPLE_RATE
    out = {}
    for kind in ("white", "pink", "brown"):
        total = 0
        for level in (1e-3, 0.01, 0.1):
            total += len(
                turns_of(
                    factory, (level * noise(kind, int(seconds * rate), 7)).astype(np.float32), rate
                )
            )
        out[f"{kind} noise, 3 levels × {seconds:g} s"] = total
    quiet = np.zeros(rate, np.float32)
    for kind in ("dial tone", "ringback", "hum", "beep"):
        audio = np.concatenate([quiet, steady(kind, 6.0, rate), quiet] * max(1, int(seconds / 8)))
        out[f"{kind}, 6 s on and off × {max(1, int(seconds / 8))}"] = len(
            turns_of(factory, audio, rate)
        )
    return out


def cpu_cost(factory: Callable[[int], Detector], audio: Audio, rate: int) -> float:
    """CPU seconds per second of audio, fed as a session does (100 ms appends)."""
    detector = factory(rate)
    step = int(APPEND_S * rate)
    started = time.process_time()
    for i in range(0, len(audio), step):
        detector.feed(audio[i : i + step])
    return (time.process_time() - started) / (len(audio) / rate)


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "turns benchmark")
    args = parser.parse_args(argv)
    per_cell, seconds, prompts = (1, 10.0, 8) if args.smoke else (4, 60.0, 200)
    testset = [read_audio(u.audio) for u in read_testset()]
    progress(f"synthetic calls: {per_cell} per cell, 4 test-set sentences each")
    synthetic = synthetic_calls(per_cell, 4, testset, SAMPLE_RATE)
    clips = [p.samples for p in asterisk_prompts(prompts)]
    progress(f"Asterisk calls at 8 kHz: {per_cell} per cell from {len(clips)} prompts")
    asterisk = synthetic_calls(per_cell, 4, clips, 8000)
    grids: dict[str, dict[str, dict[tuple[str, float], Score]]] = {"test set": {}, "asterisk": {}}
    for name, factory in DETECTORS.items():
        for label, cells in (("test set", synthetic), ("asterisk", asterisk)):
            grids[label][name] = {key: score(factory, calls) for key, calls in cells.items()}
            progress(f"{name}, {label}: done")
    falses = {name: false_turns(factory, seconds) for name, factory in DETECTORS.items()}
    long_call = np.concatenate([c.samples for c in synthetic["white", 15.0]])
    long8 = np.concatenate([c.samples for c in asterisk["white", 15.0]])
    costs = {
        name: (cpu_cost(factory, long_call, SAMPLE_RATE), cpu_cost(factory, long8, 8000))
        for name, factory in DETECTORS.items()
    }
    body = render(args, per_cell, len(clips), grids, falses, costs, len(long_call) / SAMPLE_RATE)
    finish(
        args,
        SECTION,
        "Server VAD turns before and after Silero VAD (`python -m bench.turns`)",
        body,
    )
    return 0


def _grid_table(grid: dict[str, dict[tuple[str, float], Score]]) -> str:
    rows = []
    names = list(grid)
    for key in grid[names[0]]:
        kind, snr = key
        for name in names:
            s = grid[name][key]
            rows.append([kind, f"{snr:g} dB", name, f"{s.exact}/{s.calls}",
                         f"{s.turns}/{s.sentences}", f"{100 * s.within:.0f} %",
                         f"{s.worst:.2f} s"])  # fmt: skip
    header = ["noise", "SNR", "detector", "calls exact", "turns / sentences",
              f"boundaries within {TOLERANCE_S:g} s", "worst boundary"]  # fmt: skip
    return markdown_table(header, rows)


def _totals(grid: dict[str, dict[tuple[str, float], Score]]) -> str:
    parts = []
    for name, cells in grid.items():
        exact = sum(s.exact for s in cells.values())
        calls = sum(s.calls for s in cells.values())
        parts.append(f"{name} {exact}/{calls}")
    return ", ".join(parts)


def render(
    args: argparse.Namespace,
    per_cell: int,
    prompts: int,
    grids: dict[str, dict[str, dict[tuple[str, float], Score]]],
    falses: dict[str, dict[str, int]],
    costs: dict[str, tuple[float, float]],
    cost_audio_s: float,
) -> str:
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    names = list(falses)
    false_rows = [[what, *(falses[n][what] for n in names)] for what in falses[names[0]]]
    cost_rows = [
        [
            n,
            f"{1000 * c16:.2f} ms",
            f"{100 * c16:.2f} %",
            f"{1000 * c8:.2f} ms",
            f"{100 * c8:.2f} %",
        ]
        for n, (c16, c8) in costs.items()
    ]
    return "\n\n".join(
        [
            f"Run: {mode}; the detectors alone (`TurnDetector`, default threshold 0.5 and "
            "silence_duration_ms 500, fed 100 ms appends), before = the energy detector the "
            "runtime used until issue 20 (`bench/energy_turns.py`), after = Silero VAD "
            "(`runtime/kubescribe_runtime/realtime/turns.py`). Calls: 1 s of quiet, then 4 "
            f"sentences with 1-2.5 s pauses under stationary noise, {per_cell} call(s) per cell; "
            "truth: each sentence's first and last 20 ms frame within 30 dB of its loudest; a "
            "call is exact when it gives one turn per sentence. The model's blank evidence (the "
            "second signal) is not in these figures: it can end or drop a turn, never open one.",
            "\n".join(machine_facts(1)),
            "Synthetic calls (the committed test set, espeak-ng voices, 16 kHz): exact calls "
            + _totals(grids["test set"])
            + ".",
            _grid_table(grids["test set"]),
            f"Real recorded speech: Debian's Asterisk prompts (`asterisk-core-sounds-en-wav`, "
            f"one human voice, 8 kHz telephone recordings; {prompts} prompts of 1.5-6 s from the "
            "test split), the detectors run at 8 kHz: exact calls "
            + _totals(grids["asterisk"])
            + ".",
            _grid_table(grids["asterisk"]),
            "Turns opened by background alone (none is right):",
            markdown_table(["background", *names], false_rows),
            f"CPU per session (one core; a 16 kHz call of {cost_audio_s:.0f} s and the 8 kHz "
            "calls, fed in 100 ms appends; CPU time per second of audio, and the share of a core "
            "one real-time session takes):",
            markdown_table(
                ["detector", "16 kHz: per audio s", "of a core", "8 kHz: per audio s", "of a core"],
                cost_rows,
            ),
        ]
    )


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
