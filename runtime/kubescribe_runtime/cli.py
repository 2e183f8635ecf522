"""`kubescribe serve`, `kubescribe transcribe`, `kubescribe fetch` (called by kubescribe.cli)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kubescribe.errors import KubescribeError
from kubescribe_runtime.config import FetchConfig, ServeConfig, build_parser, resolve
from kubescribe_runtime.fetch import fetch


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def serve_main(argv: Sequence[str]) -> int:
    parser = build_parser(
        ServeConfig,
        "kubescribe serve",
        "Serve a CTC ONNX artifact over the OpenAI-compatible HTTP API "
        "(default: the bundled demo model on 127.0.0.1:8080).",
    )
    config = resolve(ServeConfig, vars(parser.parse_args(list(argv))))
    setup_logging(config.log_level, config.log_format)
    from kubescribe_runtime.auth import ApiKeys
    from kubescribe_runtime.server import Server

    ApiKeys.from_config(config)  # an unreadable or empty keys file fails here, not per request

    return Server(config).serve_forever()


def transcribe_main(argv: Sequence[str]) -> int:
    parser = build_parser(
        ServeConfig, "kubescribe transcribe", "Print one transcript per input file, one a line."
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files")
    namespace = parser.parse_args(list(argv))
    config = resolve(ServeConfig, vars(namespace))
    setup_logging("warning" if config.log_level == "info" else config.log_level, config.log_format)
    from kubescribe_runtime.service import build_transcriber

    transcriber = build_transcriber(config)
    try:
        for path in namespace.files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise KubescribeError(f"{path}: {exc.strerror or exc}") from exc
            try:
                transcript = transcriber.transcribe(data)
            except KubescribeError as exc:
                raise KubescribeError(f"{path}: {exc}") from exc
            print(transcript.text, flush=True)
    finally:
        transcriber.batcher.close(timeout=5)
    return 0


def fetch_main(argv: Sequence[str]) -> int:
    parser = build_parser(
        FetchConfig,
        "kubescribe fetch",
        "Fetch a model artifact, verify every file against its manifest, install it in DEST.",
    )
    config = resolve(FetchConfig, vars(parser.parse_args(list(argv))))
    setup_logging("info", "text")
    result = fetch(
        config.uri,
        config.dest,
        sha256=config.sha256,
        cache_dir=config.cache_dir,
        pvc_root=config.pvc_root,
    )
    print(f"{result.how}: {result.dest} (sha256 {result.digest})")
    return 0
