"""The runtime's quality gate as the operator sees it (issue 19.5). Pure.

Every pod of a new version transcribes the reference clips its artifact carries before it turns
ready (the runtime's `--quality-gate`, rendered from `spec.qualityGate`); a pod refused by the
gate exits (`--exit-on-load-failure`) with its verdict as the container's termination message,
e.g. ``quality gate failed: WER 0.93 on 4 reference clips, declared 0.21 + tolerance 0.05``.
`verdict` finds that line in what the kubelet reports, so the pod's problem is named
`QualityGateFailed` and the rollout's (or the canary's) condition quotes both WERs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubescribe_operator.spec import SpeechModelSpec

REASON = "QualityGateFailed"
# kubescribe_runtime.quality_gate.judge's failing line (the operator image has no runtime).
_VERDICT = re.compile(
    r"quality gate failed: WER \S+ on \d+ reference clips, declared \S+ \+ tolerance [0-9.]+"
)


def verdict(termination_message: str) -> str | None:
    """The gate's failing verdict in a container's termination message, if it is one."""
    match = _VERDICT.search(termination_message)
    return match.group(0) if match else None


def runtime_env(spec: SpeechModelSpec) -> list[tuple[str, str]]:
    """The runtime's gate settings (contract 4) from `spec.qualityGate`."""
    gate = spec.quality_gate
    return [
        ("KUBESCRIBE_QUALITY_GATE", "on" if gate.enabled else "off"),
        ("KUBESCRIBE_QUALITY_GATE_WER_TOLERANCE", f"{gate.wer_tolerance:g}"),
    ]
