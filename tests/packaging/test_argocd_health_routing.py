"""The Argo CD health check and the `Routed` condition (issue 19.1): a model its Gateways do not
route (yet) still serves through its Service, so it stays Healthy; the condition is a warning
read by people (`kubectl describe`), not by the health check."""

from __future__ import annotations

import pytest
from argocd_lua import health
from test_argocd_health import NOT_RECONCILING, NOT_STALLED, READY, cond, model


@pytest.mark.parametrize(
    "routed",
    [
        cond("Routed", "True", "Accepted", "routed by Gateway speech/speech-gateway"),
        cond("Routed", "False", "GatewayAPIMissing", "the cluster does not serve HTTPRoutes"),
        cond("Routed", "False", "NotAllowedByListeners", "Gateway speech/gw: Accepted=False"),
    ],
    ids=["routed", "no Gateway API", "refused by the Gateway"],
)
def test_a_serving_model_is_healthy_whatever_its_gateways_say(routed: dict[str, str]) -> None:
    status = {"observedGeneration": 3, "conditions": [READY, NOT_RECONCILING, NOT_STALLED, routed]}
    assert health(model(status))[0] == "Healthy"
