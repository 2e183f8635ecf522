"""The model card's first section: what the model does on recorded human speech.

Synthetic test sets measure regressions; recorded speech measures what a caller gets. The
section renders ``results.json``'s ``real_speech`` (from ``kubescribe_modeling.report
--real-speech``) and says in words what the figure means, so no synthetic figure reads as the
model's accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["headline", "limitations", "real_speech_section"]

#: Above this WER a model does not transcribe: the card says so in words.
UNUSABLE_WER = 0.5


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def headline(results: dict[str, Any]) -> str:
    """One sentence: the first real-speech figure, or ``""`` where none was measured."""
    rows = results.get("real_speech", {}).get("results", [])
    if not rows:
        return ""
    r = rows[0]
    verdict = (
        "it does not transcribe real human speech"
        if r["wer"] >= UNUSABLE_WER
        else "expect about this on similar recordings"
    )
    return (
        f"**On recorded human speech ({r['language']}, {r['channel']}, {r['utterances']} "
        f"prompts of `{r['test_set']}`) its word error rate is {_pct(r['wer'])}: {verdict}.**"
    )


def real_speech_section(results: dict[str, Any]) -> list[str]:
    section = results.get("real_speech")
    if not section or not section.get("results"):
        return []
    rows = section["results"]
    out = [
        "## Real recorded speech — read this first",
        "",
        "Measured by `python -m kubescribe_modeling.report --real-speech` through kubescribe's "
        "runtime on recorded human speech: Debian's Asterisk IVR prompts (a professional voice, "
        "8 kHz telephone audio, the call-centre domain; built by `kubescribe data --asterisk`). "
        "Only the test split counts here: its sentences never served for training or model "
        "selection (the split goes by sentence, `kubescribe_modeling.data.asterisk`).",
        "",
        _table(
            ["language", "test set", "audio", "voice", "utterances", "minutes", "WER"],
            [
                [
                    str(r.get("language")),
                    f"`{r['test_set']}`",
                    f"{r.get('channel')}, recorded",
                    str(r.get("voice")),
                    str(r["utterances"]),
                    f"{r.get('minutes', 0):.1f}",
                    _pct(r["wer"]),
                ]
                for r in rows
            ],
        ),
        "",
    ]
    twins = [r for r in rows if r.get("synthetic_twin")]
    out += [
        f"The same {r['utterances']} sentences spoken by espeak-ng `{t['voice']}` (a voice it "
        f"never trained on) and carried as a call ({t['channel']}): {_pct(t['wer'])} WER, "
        f"against {_pct(r['wer'])} for the recorded voice."
        for r in rows
        if (t := r.get("synthetic_twin"))
    ] + ([""] if twins else [])
    examples = [(r["test_set"], e) for r in rows for e in r.get("examples", [])]
    if examples:
        out += ["What that means — the first prompts of the set, reference → transcript:", ""]
        out += [f'- "{e["reference"]}" → "{e["hypothesis"]}"' for _, e in examples]
        out.append("")
    worst = max(r["wer"] for r in rows)
    if worst >= UNUSABLE_WER:
        out += [
            "A WER near or above 100 % means the transcript has about as many wrong or missing "
            "words as the prompt has words: on real voices this model is not usable. Serving "
            "real callers needs a model trained on real speech (docs/artifacts.md: import one). "
            "Figures on synthetic speech, where this card has them, measure regressions of the "
            "fixture, not accuracy on people.",
            "",
        ]
    licenses = sorted({str(r.get("license")) for r in rows if r.get("license")})
    packages = sorted({f"{p} {v}".strip() for r in rows for p, v in r.get("packages", {}).items()})
    if packages:
        out += [
            f"Audio and transcripts: {', '.join(f'`{p}`' for p in packages)} (Debian; "
            f"{', '.join(licenses)}, © Digium, Inc., voice Allison Smith), installed by "
            "`make tools`, never committed.",
            "",
        ]
    return out


def limitations(results: dict[str, Any]) -> str:
    rows = results.get("real_speech", {}).get("results", [])
    measured = (
        "on recorded human speech it scored "
        + ", ".join(f"{_pct(r['wer'])} ({r['language']}, {r['channel']})" for r in rows)
        + " (first section)"
        if rows
        else "expect much worse on real recordings (accents, noise, disfluencies)"
    )
    return (
        "Trained only on synthetic speech, on a small compute budget: the synthetic figures "
        f"of this card do not carry over to people — {measured}. Lowercase letters (and the "
        "apostrophe) only; numbers come out as words. A demo and test fixture, not a "
        "production model — bring a checkpoint trained on real speech with `kubescribe export` "
        "or `kubescribe import`."
    )
