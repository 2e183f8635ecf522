"""The runtime image has no torch (nor the modeling or operator dependencies): importing every
runtime module and serving a request must not pull them in."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import kubescribe_runtime

FORBIDDEN = ("torch", "onnx", "kopf", "kubernetes", "kubescribe_modeling", "kubescribe_operator")


def test_runtime_imports_no_torch() -> None:
    modules = [
        m.name for m in pkgutil.iter_modules(kubescribe_runtime.__path__, "kubescribe_runtime.")
    ]
    assert "kubescribe_runtime.server" in modules and len(modules) >= 15
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []


def test_server_master_imports_no_onnxruntime() -> None:
    # The gunicorn master forks the worker that loads the model; onnxruntime's state does not
    # survive a fork, so the serve command's modules must leave it to the worker.
    code = (
        "import json, sys\n"
        "import kubescribe.cli, kubescribe_runtime.cli, kubescribe_runtime.server\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )
    assert [m for m in loaded if m.split(".")[0] == "onnxruntime"] == []
