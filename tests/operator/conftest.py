"""Fixtures for the operator's integration tests: a local Kubernetes API and a Deployment
controller on a background loop, and a synchronous client for the test body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from kube.deployment_controller import DeploymentController
from kube.emulator import Emulator
from kube.operator_process import OperatorProcess
from kube.runner import TEST_USER_AGENT, KubeThread
from kube.scenario import add_peering, free_port

CRD = Path(__file__).parents[2] / "crds" / "speechmodel.yaml"


def declare_resources(emulator: Emulator) -> None:
    """The resources a cluster with kubescribe's chart installed serves beyond the built-ins."""
    emulator.register_crd(yaml.safe_load(CRD.read_text()))
    emulator.register(
        "kopf.dev/v1/clusterkopfpeerings", kind="ClusterKopfPeering", namespaced=False
    )
    emulator.register("kopf.dev/v1/kopfpeerings", kind="KopfPeering")


@pytest.fixture()
def kube() -> Iterator[KubeThread]:
    with KubeThread(declare_resources) as thread:
        yield thread


@pytest.fixture()
def controller(kube: KubeThread) -> DeploymentController:
    ctl = DeploymentController(kube.emulator)
    kube.spawn(ctl.run)
    return ctl


@pytest.fixture()
def api(kube: KubeThread) -> Iterator[kubernetes.client.ApiClient]:
    config = kubernetes.client.Configuration()
    config.host = kube.url
    client = kubernetes.client.ApiClient(config)
    client.user_agent = TEST_USER_AGENT
    yield client
    client.close()


@pytest.fixture()
def kubeconfig(kube: KubeThread, tmp_path: Path) -> Path:
    return kube.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture()
def operator(
    kube: KubeThread, kubeconfig: Path, tmp_path: Path, controller: DeploymentController
) -> Iterator[OperatorProcess]:
    kube.call(lambda: add_peering(kube.emulator))
    proc = OperatorProcess(kubeconfig, tmp_path, "--metrics-port", str(free_port()))
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()  # a graceful stop only costs time here
        print(proc.logs()[-20000:])  # shown by pytest when the test fails


@pytest.fixture()
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)
