"""The quality gate (contract 2's reference clips): before the pod turns ready, the loaded model
transcribes the clips its artifact carries, through the serving pipeline, and its WER on them
must stay within a tolerance of the WER the manifest declares. A model that loads and answers
200 with nonsense (e.g. shuffled tokens) passes every probe; it does not pass this.

Pure core: :func:`reference_wer` (also what the toolkit declares with, so both sides count words
alike) and :func:`judge`; :func:`run_gate` only reads the clips and calls a transcriber.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubescribe_runtime.manifest import ArtifactManifest

# Words: letters, digits and apostrophes; everything else separates them.
_NOT_WORD = re.compile(r"[^\w']+|_")


def words(text: str) -> list[str]:
    """``text`` as the gate compares it: NFKC, lowercase, punctuation dropped."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()


def _edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word-level Levenshtein distance (substitutions, deletions, insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def reference_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: all edits over all reference words (an empty reference counts one word)."""
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in length")
    edits = total = 0
    for ref_text, hyp_text in zip(references, hypotheses, strict=True):
        ref, hyp = words(ref_text), words(hyp_text)
        edits += _edits(ref, hyp) if ref else max(1, len(hyp))
        total += max(1, len(ref))
    return edits / total if total else 0.0


@dataclass(frozen=True)
class GateResult:
    """``passed`` is None when the gate was skipped; ``message`` says why, in one line."""

    passed: bool | None
    message: str
    measured: float | None = None
    declared: float | None = None
    tolerance: float = 0.0
    clips: int = 0


def declared_wer(manifest: ArtifactManifest, model_file: str) -> float | None:
    """The WER declared for ``model_file`` (else the highest declared for any file: a file
    served without its own figure is held to the loosest one), None without reference clips."""
    if manifest.reference is None:
        return None
    declared = manifest.reference.wer
    return declared.get(model_file, max(declared.values()))


def judge(measured: float, declared: float, tolerance: float, clips: int) -> GateResult:
    """Pass when ``measured`` <= ``declared`` + ``tolerance`` (rounding noise aside)."""
    passed = measured <= declared + tolerance + 1e-9
    verdict = "passed" if passed else "failed"
    message = (
        f"quality gate {verdict}: WER {measured:.2f} on {clips} reference clips, "
        f"declared {declared:.2f} + tolerance {tolerance:.2f}"
    )
    return GateResult(passed, message, measured, declared, tolerance, clips)


SKIPPED_NO_CLIPS = "quality gate skipped: the artifact carries no reference clips"
SKIPPED_DISABLED = "quality gate skipped: disabled (--quality-gate off)"


def run_gate(
    transcribe: Callable[[bytes], str],
    directory: Path,
    manifest: ArtifactManifest,
    model_file: str,
    tolerance: float,
) -> GateResult:
    """Transcribe the artifact's reference clips with ``transcribe`` and judge the WER."""
    declared = declared_wer(manifest, model_file)
    if manifest.reference is None or declared is None:
        return GateResult(None, SKIPPED_NO_CLIPS)
    clips = manifest.reference.clips
    hypotheses = [transcribe((directory / clip.path).read_bytes()) for clip in clips]
    measured = reference_wer([clip.text for clip in clips], hypotheses)
    return judge(measured, declared, tolerance, len(clips))
