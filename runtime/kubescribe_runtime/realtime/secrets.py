"""``POST /v1/realtime/client_secrets``: an ephemeral key for a browser's realtime session, as
OpenAI's ``client.realtime.client_secrets.create`` asks for one (:mod:`kubescribe_runtime.auth`
mints and checks it). The request's ``session`` (a transcription session) is validated and
echoed as the answer's session; the client still configures its session with
``session.update`` once connected.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubescribe_runtime import auth
from kubescribe_runtime.model_names import ModelNames, model_not_found
from kubescribe_runtime.realtime import events as ev
from kubescribe_runtime.realtime import session_config as sc
from kubescribe_runtime.service import Service

DEFAULT_TTL_S = 600
MAX_TTL_S = 7200


class _ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="ignore")
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(DEFAULT_TTL_S, ge=10, le=MAX_TTL_S)


class _CreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    expires_after: _ExpiresAfter | None = None
    session: dict[str, Any] | None = None


def _invalid(message: str, code: str, param: str | None = None) -> Response:
    response = jsonify(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "code": code,
                "param": param,
            }
        }
    )
    response.status_code = 400
    return response


def register(app: Flask, service: Service, names: ModelNames) -> None:
    @app.post("/v1/realtime/client_secrets")
    def client_secrets() -> Response:
        try:
            body = _CreateRequest.model_validate(request.get_json(force=True, silent=True) or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return _invalid(f"{where}: {first['msg']}", "invalid_value", where)
        session = body.session or {"type": "transcription"}
        try:
            update = ev.parse_client_event(
                json.dumps({"type": "session.update", "session": session})
            )
        except ev.ProtocolError as exc:
            return _invalid(exc.message, exc.code, exc.param)
        assert isinstance(update, ev.SessionUpdate)
        model = service.model_name()
        config = sc.SessionConfig(model=model).updated(update)
        if config.model != model and not names.accepts(config.model):
            # Another model's session: OpenAI's 404, as the session's own update would be.
            raise model_not_found(config.model, "session.audio.input.transcription.model")
        config = sc.SessionConfig(
            config.format, model, config.language, config.prompt, config.turn_detection,
            config.include,
        )  # fmt: skip
        value, expires_at = auth.mint_client_secret(
            auth.presented_key(),
            body.expires_after.seconds if body.expires_after else DEFAULT_TTL_S,
            time.time(),
        )
        shown = sc.session_object("sess_" + uuid.uuid4().hex[:12], config)
        shown["expires_at"] = expires_at
        return jsonify({"value": value, "expires_at": expires_at, "session": shown})
