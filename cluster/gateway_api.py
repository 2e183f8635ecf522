"""Gateway API on the local cluster: the standard channel's CRDs at a pinned version, and the
GatewayClasses and Gateways of the gateways that run beside it (cluster/gateways.py).

The CRDs come from the Go module proxy (``go mod download -json sigs.k8s.io/gateway-api@VER``
gives the module's directory; its config/crd/standard/ holds them) and are cached by version
under ~/.cache/kubescribe/gateway-api-VER (``KUBESCRIBE_CACHE`` moves it); nothing is committed.
Installing them is optional, per cluster: `make cluster` leaves them out, the gateway tests put
them in, and by hand:

    python3 cluster/gateway_api.py install [--state-dir .cluster]   # CRDs only
    python3 cluster/gateway_api.py crds                              # print the cached folder

Only the standard library (and `go`, `kubectl`) is needed, like the rest of cluster/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GROUP = "gateway.networking.k8s.io"
VERSIONS_ENV = HERE / "versions.env"
# What `kubectl` runs as: (args, stdin) -> stdout; raises on a failure.
Kubectl = Callable[[Sequence[str], str | None], str]


class GatewayApiError(RuntimeError):
    """The CRDs could not be fetched or installed."""


def pinned_version() -> str:
    """GATEWAY_API_VERSION from cluster/versions.env (the version Traefik 3.7 and Envoy Gateway
    1.9 are built against)."""
    for line in VERSIONS_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "GATEWAY_API_VERSION":
            return value.strip()
    raise GatewayApiError(f"no GATEWAY_API_VERSION in {VERSIONS_ENV}")


def cache_root() -> Path:
    base = os.environ.get("KUBESCRIBE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "kubescribe"
    )
    return Path(base)


def crd_dir(version: str | None = None) -> Path:
    """The standard channel's CRD files of ``version`` (default: the pin), fetched once."""
    version = version or pinned_version()
    target = cache_root() / f"gateway-api-{version}" / "standard"
    if (target / ".complete").exists():
        return target
    if shutil.which("go") is None:
        raise GatewayApiError("go is needed to fetch the Gateway API CRDs from the module proxy")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/gateway-api@{version}"],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=600,
    )  # fmt: skip
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise GatewayApiError(f"go mod download gateway-api@{version}: {info or out.stderr}")
    source = Path(info["Dir"]) / "config" / "crd" / "standard"
    files = sorted(source.glob("*.yaml"))
    if not files:
        raise GatewayApiError(f"no CRDs under {source}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for file in files:
        shutil.copyfile(file, target / file.name)  # the module cache's copies are read-only
    (target / ".complete").write_text(version + "\n")
    return target


def install(kubectl: Kubectl, version: str | None = None) -> Path:
    """Apply the CRDs (server-side: the HTTPRoute CRD is larger than client-side apply's
    annotation allows) and wait until they are served."""
    folder = crd_dir(version)
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", str(folder)], None)
    kubectl(["wait", "--for=condition=Established", "--timeout=60s",
             *(f"crd/{name}" for name in crd_names(folder))], None)  # fmt: skip
    return folder


def crd_names(folder: Path) -> list[str]:
    """The CRDs' names (``<plural>.<group>``, their file names) in ``folder``."""
    return sorted(
        f.stem.split("_", 1)[1] + "." + f.stem.split("_", 1)[0]
        for f in folder.glob(f"{GROUP}_*.yaml")
        if not f.stem.endswith("vap_safeupgrades")
    )


# ------------------------------------------------------------------------------ objects
def gateway_class(name: str, controller: str, description: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller, "description": description},
    }


def gateway(name: str, namespace: str, class_name: str, port: int) -> dict[str, Any]:
    """A Gateway with one plain-HTTP listener on ``port`` that takes routes from every
    namespace (the SpeechModels live in their teams' namespaces)."""
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": [
                {
                    "name": "http",
                    "protocol": "HTTP",
                    "port": port,
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


# ---------------------------------------------------------------------------------- cli
def _cluster_kubectl(state_dir: Path) -> Kubectl:
    state = json.loads((state_dir / "cluster.json").read_text())
    binary = Path(state["bin"]) / "kubectl"

    def run(args: Sequence[str], stdin: str | None) -> str:
        out = subprocess.run(
            [str(binary), "--kubeconfig", str(state_dir / "kubeconfig"), *args],
            input=stdin, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if out.returncode != 0:
            raise GatewayApiError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster/gateway_api.py", description=__doc__)
    parser.add_argument("command", choices=("install", "crds"))
    parser.add_argument("--state-dir", type=Path, default=HERE.parent / ".cluster")
    parser.add_argument("--version", help="default: GATEWAY_API_VERSION of cluster/versions.env")
    args = parser.parse_args(argv)
    try:
        if args.command == "crds":
            print(crd_dir(args.version))
        else:
            folder = install(_cluster_kubectl(args.state_dir.resolve()), args.version)
            print(f"Gateway API CRDs installed from {folder}")
    except (GatewayApiError, OSError, ValueError) as exc:
        print(f"gateway-api: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
