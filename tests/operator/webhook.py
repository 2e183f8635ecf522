"""Errors and stalls from the real API server, on cue: a validating admission webhook on loopback.

A real API server cannot be asked to fail a request, but it calls its admission webhooks, and
when one refuses a request the API server answers the client with the status the webhook gave
(code, reason, message). `FaultWebhook` is such a webhook for one namespace: it refuses the
next `times` requests of one user that match (operation, resource) with the code the test chose
(500, 409, ...), or holds them until the test releases them; everything else it admits. It is
served over TLS with the local API server's own certificate (SAN 127.0.0.1, signed by the
cluster's CA) and registered with failurePolicy Ignore, so it never blocks the cluster by being
down.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kube_cluster import OPERATOR_USER, Cluster, eventually, free_port

HOLD_SECONDS = 25  # below the webhook's 30 s timeout: the API server then admits the request


@dataclass
class Fault:
    operation: str  # CREATE, UPDATE, DELETE
    resource: str  # "deployments", "speechmodels/status", ...
    code: int  # the status to answer with; 0: hold the request until released
    times: int
    hits: int = 0
    released: threading.Event = field(default_factory=threading.Event)

    def matches(self, request: dict[str, Any]) -> bool:
        resource = request["resource"]["resource"]
        if request.get("subResource"):
            resource += "/" + request["subResource"]
        return (
            self.hits < self.times
            and request["operation"] == self.operation
            and resource == self.resource
        )


class FaultWebhook:
    def __init__(self, cluster: Cluster, namespace: str, user: str = OPERATOR_USER) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.user = user
        self.name = f"faults-{namespace}"
        self.faults: list[Fault] = []
        self.seen = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --------------------------------------------------------------------- cues
    def inject(self, operation: str, resource: str, code: int, times: int = 1) -> Fault:
        fault = Fault(operation, resource, code, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def hold(self, operation: str, resource: str) -> Fault:
        """Hold the next such request (up to HOLD_SECONDS) until ``fault.released`` is set."""
        return self.inject(operation, resource, 0)

    def pending(self) -> int:
        with self._lock:
            return sum(f.times - f.hits for f in self.faults)

    def _answer(self, request: dict[str, Any]) -> Fault | None:
        with self._lock:
            self.seen += 1
            if request.get("userInfo", {}).get("username") != self.user:
                return None
            fault = next((f for f in self.faults if f.matches(request)), None)
            if fault is not None:
                fault.hits += 1
            return fault

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> FaultWebhook:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                fault = webhook._answer(request)
                response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
                if fault is not None and fault.code == 0:
                    fault.released.wait(HOLD_SECONDS)
                elif fault is not None:
                    response["allowed"] = False
                    response["status"] = {
                        "code": fault.code,
                        "reason": "InjectedByTheTest",
                        "message": f"{fault.code} injected by the test's admission webhook",
                    }
                answer = {"apiVersion": review["apiVersion"], "kind": review["kind"]}
                body = json.dumps({**answer, "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        pki = self.cluster.local.pki
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.cluster.apply(self._configuration(port, pki.ca_cert.read_bytes()))
        # The API server picks the configuration up from its own watch: probe until it calls.
        eventually(lambda: self._probe() and self.seen > 0, "the API server to call the webhook")
        return self

    def __exit__(self, *_: object) -> None:
        self.cluster.kubectl(
            "delete", "validatingwebhookconfiguration", self.name, "--ignore-not-found"
        )
        for fault in self.faults:
            fault.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _probe(self) -> bool:
        self.cluster.kubectl(
            "create", "configmap", f"probe-{uuid.uuid4().hex[:6]}", "-n", self.namespace,
            "--dry-run=server",
        )  # fmt: skip
        return True

    def _configuration(self, port: int, ca: bytes) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": self.name},
            "webhooks": [
                {
                    "name": "faults.tests.kubescribe.io",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/",
                        "caBundle": base64.b64encode(ca).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": ["*"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE", "DELETE"],
                            "resources": ["*/*"],
                            "scope": "Namespaced",
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": self.namespace}
                    },
                    "failurePolicy": "Ignore",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 30,
                }
            ],
        }
