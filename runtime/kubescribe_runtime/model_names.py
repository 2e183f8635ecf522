"""The model names this server answers for, and the list ``GET /v1/models`` gives. Pure but
for reading the catalogue file.

Behind a shared endpoint (a Gateway routing by ``model``, docs/user-guide.md) each runtime
answers only for its own names (``--served-model-names``): a request naming another model gets
OpenAI's 404 ``model_not_found``, the answer a client expects for a model the endpoint does not
serve. Routing itself is the Gateway's; this is all the runtime knows of it. Unset, any name is
accepted (the model field is informational, as before).

``GET /v1/models`` lists every model behind the endpoint: this server's own names (each one a
card with the loaded model's details, like vLLM's ``--served-model-name``) and the others of the
catalogue the operator writes (``--model-catalog``: a directory with one JSON entry per model,
``{"name", "names", "version", "defaultForLanguages"}``, mounted from a ConfigMap; or one file
``{"models": [...]}``), read at each request so that a changed ConfigMap shows without a
restart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubescribe_runtime.config import split_names
from kubescribe_runtime.errors import ApiError

log = logging.getLogger(__name__)

Card = dict[str, Any]


def model_not_found(model: str, param: str | None = "model") -> ApiError:
    """OpenAI's answer for a model it does not serve."""
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "model_not_found",
        param=param,
    )


@dataclass(frozen=True)
class ModelNames:
    served: tuple[str, ...] = ()  # empty: any name is accepted
    catalog: Path | None = None

    def accepts(self, model: str | None) -> bool:
        """Whether a request naming ``model`` is this server's (no model named: yes)."""
        return not self.served or not model or model in self.served

    def check(self, model: str | None, param: str | None = "model") -> None:
        if not self.accepts(model):
            raise model_not_found(str(model), param)

    def own_cards(self, card: Mapping[str, Any]) -> list[Card]:
        """The loaded model's card under each served name (its manifest's name when unset)."""
        names = self.served or (str(card["id"]),)
        root = str(card["id"])
        return [{**card, "id": name, "root": root} for name in names]

    def cards(self, card: Mapping[str, Any]) -> list[Card]:
        """Every model behind the endpoint: this server's first, then the catalogue's."""
        own = self.own_cards(card)
        seen = {c["id"] for c in own}
        others: list[Card] = []
        for entry in read_catalog(self.catalog):
            for name in entry["names"]:
                if name not in seen:
                    seen.add(name)
                    others.append(catalog_card(name, entry))
        return own + sorted(others, key=lambda c: str(c["id"]))

    def card(self, model: str, card: Mapping[str, Any]) -> Card:
        """``GET /v1/models/{model}``; 404 ``model_not_found`` for a name nobody serves."""
        found = next((c for c in self.cards(card) if c["id"] == model), None)
        if found is None:
            raise model_not_found(model, None)
        return found


def catalog_card(name: str, entry: Mapping[str, Any]) -> Card:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "kubescribe",
        "root": entry["name"],
        "version": entry.get("version"),
        "default_for_languages": list(entry.get("defaultForLanguages") or []),
    }


def parse_catalog(text: str) -> list[dict[str, Any]]:
    """The catalogue's entries (ValueError when it is not one)."""
    data = json.loads(text)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ValueError("expected {'models': [...]}")
    entries = []
    for raw in models:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ValueError(f"an entry without a name: {raw!r}")
        names = split_names([raw["name"], *(raw.get("names") or [])])
        entries.append({**raw, "names": list(names)})
    return entries


def read_catalog(path: Path | None) -> Sequence[dict[str, Any]]:
    """The catalogue's entries: a file ``{"models": [...]}``, or a directory of one entry per
    ``*.json`` file (the operator's ConfigMap, mounted); none when unset, missing or unreadable
    (logged: the server keeps listing its own names)."""
    if path is None:
        return ()
    try:
        if path.is_dir():
            texts = [p.read_text() for p in sorted(path.glob("*.json")) if p.is_file()]
            return parse_catalog('{"models": [' + ",".join(texts) + "]}")
        return parse_catalog(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("model catalogue %s not read: %s", path, exc)
        return ()
