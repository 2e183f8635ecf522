"""The Flask application: the upload spooling, the error mapping (:mod:`.errors`, once for
every route), API keys (:mod:`.auth`), the HTTP routes (:mod:`.routes`) and the Realtime
WebSocket route (:mod:`.realtime.edge`), over one :class:`~.service.Service`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO

from flask import Flask, Request

from kubescribe_runtime import auth, routes
from kubescribe_runtime.errors import error_response
from kubescribe_runtime.model_names import ModelNames
from kubescribe_runtime.realtime import edge as realtime
from kubescribe_runtime.service import Service


class _SpoolingRequest(Request):
    """An upload is held once: in memory up to ``spool_threshold`` bytes, beyond that in an
    unlinked file in ``scratch_dir`` (bounded by MAX_CONTENT_LENGTH either way). The decoder
    reads that file; nothing copies the body again."""

    spool_threshold = 1024 * 1024
    scratch_dir: Path | None = None

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        directory = None if self.scratch_dir is None else str(self.scratch_dir)
        return tempfile.SpooledTemporaryFile(max_size=self.spool_threshold, dir=directory)


def create_app(service: Service) -> Flask:
    app = Flask("kubescribe_runtime")
    app.request_class = type(
        "Request",
        (_SpoolingRequest,),
        {
            "spool_threshold": service.config.spool_threshold_bytes,
            "scratch_dir": service.config.scratch_dir,
        },
    )
    app.config["MAX_CONTENT_LENGTH"] = service.config.max_upload_bytes
    app.register_error_handler(Exception, error_response)
    auth.install(app, auth.ApiKeys.from_config(service.config))
    # The names this server answers for: one view for files, Realtime and client secrets.
    names = ModelNames(service.config.served_model_names, service.config.model_catalog)
    app.register_blueprint(routes.blueprint(service, names))
    realtime.register(app, service, names)  # /v1/realtime: WebSocket transcription sessions
    return app
