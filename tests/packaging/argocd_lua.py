"""Argo CD's own Lua settings for health checks: the `argocd-lua` runner (cluster/argocd-lua,
built by cluster/build.sh beside the control plane from gopher-lua, the interpreter Argo CD
embeds) opens only the libraries Argo CD opens for a custom health check — package, base and
table; no string, math, os or io — and hands the object over as Argo CD does."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "examples" / "argocd" / "health.lua"


class LuaError(RuntimeError):
    """The script failed under Argo CD's settings (Argo CD shows the resource's health as an
    error and the sync waits)."""


@functools.cache
def runner() -> Path:
    """The runner in the control plane's bin directory (`make test` sets
    KUBESCRIBE_CLUSTER_BIN; otherwise cluster/build.sh builds what is missing, as the cluster
    fixture does)."""
    bin_dir = os.environ.get("KUBESCRIBE_CLUSTER_BIN")
    if not bin_dir or not (Path(bin_dir) / "argocd-lua").exists():
        out = subprocess.run(
            ["bash", str(ROOT / "cluster" / "build.sh")],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        bin_dir = out.stdout.strip().splitlines()[-1]
    return Path(bin_dir) / "argocd-lua"


def run_health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """The health table a script returns for ``obj``, as Argo CD reads it."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"argocd-health-{os.getpid()}.lua"
    path.write_text(script)
    try:
        out = subprocess.run(
            [str(runner()), str(path)],
            input=json.dumps(obj),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        path.unlink()
    if out.returncode == 1:
        raise LuaError(out.stderr.strip())
    if out.returncode != 0:
        raise RuntimeError(f"argocd-lua: exit {out.returncode}: {out.stderr.strip()}")
    result: dict[str, str] = json.loads(out.stdout)
    return result


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of examples/argocd/health.lua for ``obj``."""
    result = run_health(HEALTH_LUA.read_text(), obj)
    return result.get("status", ""), result.get("message", "")
