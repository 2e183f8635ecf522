"""`kubescribe serve` plus a WebSocket echo route at /test/echo (flask-sock), for tests only:
the product has no such route. Run as a script with the flags of `kubescribe serve`."""

from __future__ import annotations

import sys

from flask import Flask
from flask_sock import Sock
from kubescribe_runtime.cli import setup_logging
from kubescribe_runtime.config import ServeConfig, build_parser, resolve
from kubescribe_runtime.server import Application
from simple_websocket import Server as WebSocket


class EchoApplication(Application):
    def load(self) -> Flask:
        app = super().load()

        @Sock(app).route("/test/echo")
        def echo(ws: WebSocket) -> None:
            while True:
                ws.send(ws.receive())

        return app


def main() -> int:
    parser = build_parser(ServeConfig, "rt_echo_server", __doc__ or "")
    config = resolve(ServeConfig, vars(parser.parse_args(sys.argv[1:])))
    setup_logging(config.log_level, config.log_format)
    try:
        EchoApplication(config).run()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
