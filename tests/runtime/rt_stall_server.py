"""`kubescribe serve` whose model blocks while the file named by RT_STALL_FILE
exists: a wedged inference loop, for the liveness test only (the product reads no such
variable). Run as a script with the flags of `kubescribe serve`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from kubescribe_runtime.cli import setup_logging
from kubescribe_runtime.config import ServeConfig, build_parser, resolve
from kubescribe_runtime.model import AcousticModel
from kubescribe_runtime.server import Application

STALL_FILE = Path(os.environ["RT_STALL_FILE"])
_real_infer = AcousticModel.infer


def _blocking_infer(self: AcousticModel, items: Any) -> Any:
    while STALL_FILE.exists():
        time.sleep(0.05)
    return _real_infer(self, items)


def main() -> int:
    AcousticModel.infer = _blocking_infer  # type: ignore[method-assign,assignment]
    parser = build_parser(ServeConfig, "rt_stall_server", __doc__ or "")
    config = resolve(ServeConfig, vars(parser.parse_args(sys.argv[1:])))
    setup_logging(config.log_level, config.log_format)
    try:
        Application(config).run()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
