"""Where kopf keeps the last-handled state of a SpeechModel: a digest in
``status.kopf.lastHandledConfiguration`` instead of the whole spec as a JSON string (kopf's
StatusDiffBaseStorage), so that `kubectl describe` shows one short line, not a blob.

Sound because the handlers never read kopf's ``old``, ``new`` or ``diff``: kopf only needs to
tell "changed" from "unchanged" (to call on.update), and two essences are equal exactly when
their digests are. An old full essence written by an earlier operator is digested on read, so an
upgrade triggers no spurious update.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, cast

import kopf

DIGEST_KEY = "digest"


def digest(essence: Any) -> dict[str, str]:
    text = json.dumps(essence, sort_keys=True, separators=(",", ":"))
    return {DIGEST_KEY: hashlib.sha256(text.encode()).hexdigest()[:32]}


class DigestDiffBaseStorage(kopf.StatusDiffBaseStorage):
    """kopf's status diff-base storage, holding the essence's digest only."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        return cast(kopf.BodyEssence, digest(essence))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = super().fetch(body=body)
        if stored is None or set(stored) == {DIGEST_KEY}:
            return stored
        return cast(kopf.BodyEssence, digest(stored))  # a full essence from before
