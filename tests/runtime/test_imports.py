"""The runtime image has no torch (nor the modeling or operator dependencies): importing every
runtime module and serving a request must not pull them in."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

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


# The protocol-conformance and end-to-end tests check the server with the official `openai`
# client (its strict types are the point); every other runtime test is a unit test of the
# runtime alone and must not need the client, nor the modeling toolkit (torch).
CONFORMANCE = {
    "test_e2e",
    "test_sse",
    "test_auth",
    "test_realtime_events",
    "test_realtime_flood",
    "test_realtime_server",
    "test_realtime_bad_input",
    "test_model_names",
    "test_imports",
}
NOT_FOR_UNIT_TESTS = ("openai", "kubescribe_modeling", "torch")


def test_runtime_unit_tests_import_neither_openai_nor_the_modeling_toolkit() -> None:
    here = Path(__file__).parent
    units = sorted(p.stem for p in here.glob("test_*.py") if p.stem not in CONFORMANCE)
    assert "test_scheduling" in units and "test_intake" in units
    code = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]\n"
        f"forbidden = {NOT_FOR_UNIT_TESTS!r}\n"
        "culprits = {}\n"
        f"for name in {units!r}:\n"
        "    importlib.import_module(name)\n"
        "    for m in list(sys.modules):\n"
        "        if m.split('.')[0] in forbidden and m.split('.')[0] not in culprits:\n"
        "            culprits[m.split('.')[0]] = name\n"
        "print(json.dumps(culprits))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    culprits = json.loads(done.stdout.splitlines()[-1])
    assert culprits == {}, (
        f"{culprits}: a unit test imports these (directly or through a helper); import them "
        "where a conformance test uses them, or list a real-server test in CONFORMANCE"
    )
