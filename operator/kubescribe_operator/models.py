"""Compatibility: the SpeechModel API moved to `api`, `spec` and `status`; import from those."""

from kubescribe_operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION, ModelRef
from kubescribe_operator.runtime_spec import DEFAULT_IMAGE, RESERVED_ENV, TUNABLE_ENV
from kubescribe_operator.spec import (
    AutoscalingSpec,
    SpecError,
    SpeechModel,
    SpeechModelSpec,
    parse_spec,
)
from kubescribe_operator.status import MAX_HISTORY, Condition, SpeechModelStatus

__all__ = [
    "API_VERSION",
    "DEFAULT_IMAGE",
    "GROUP",
    "KIND",
    "MAX_HISTORY",
    "PLURAL",
    "RESERVED_ENV",
    "TUNABLE_ENV",
    "VERSION",
    "AutoscalingSpec",
    "Condition",
    "ModelRef",
    "SpecError",
    "SpeechModel",
    "SpeechModelSpec",
    "SpeechModelStatus",
    "parse_spec",
]
