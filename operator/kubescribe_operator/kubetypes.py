"""Kubernetes' own types, for the parts of a SpeechModel the CRD keeps as free-form objects.

`scheduling.affinity` and a `runtime.env` entry's `valueFrom` are copied into the pod template
as they are written; the CRD preserves unknown keys there, but the Deployment API does not:
server-side apply refuses a field its schema does not declare. `prune_unknown` keeps what the
official client's model of the type declares, as the API server's pruning would. Pure.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient, Configuration


@functools.cache
def _client() -> ApiClient:
    config = Configuration()
    config.client_side_validation = False  # the API server validates; this only prunes
    return ApiClient(configuration=config)


def prune_unknown(value: Mapping[str, Any], type_name: str) -> dict[str, Any]:
    """``value`` without the keys the Kubernetes type (e.g. ``V1Affinity``) does not declare.

    A value that does not parse as the type is returned as it is: the API server then refuses
    it with its own message (the SpeechModel's status shows it).
    """
    client = _client()
    try:
        parsed = client.deserialize(json.dumps(value), type_name, None)
    except (ValueError, TypeError, AttributeError):  # pydantic's ValidationError is a ValueError
        return dict(value)
    pruned = client.sanitize_for_serialization(parsed)
    return pruned if isinstance(pruned, dict) else dict(value)
