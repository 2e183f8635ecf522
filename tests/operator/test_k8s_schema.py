"""The Kubernetes types the CRD embeds (issue 22.6): generated from the official schemas
(kubernetes-validate), committed beside the operator, and strict where the API server is."""

from __future__ import annotations

import pytest
from kubescribe_operator import k8s_schema


def test_committed_schemas_equal_the_generated_ones() -> None:
    assert k8s_schema.PATH.read_text() == k8s_schema.render(), (
        "k8s_schemas.json is stale: run `python -m kubescribe_operator.k8s_schema --write`"
    )


def test_a_real_affinity_passes() -> None:
    affinity = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "demo"}},
                    },
                }
            ]
        }
    }
    assert k8s_schema.check("Affinity", affinity) == affinity


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
            "'nodeSelectorTerms' is a required property",
        ),
        (
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}
                }
            },
            "nodeSelectorTerms.0",
        ),
        ({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]}}, "topologyKey"),
        ({"nodeAfinity": {}}, "'nodeAfinity' was unexpected"),
    ],
)
def test_wrong_affinities_are_named(value: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        k8s_schema.check("Affinity", value)


def test_quantities_are_int_or_string() -> None:
    source = {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}
    assert k8s_schema.check("EnvVarSource", source) == source
    assert k8s_schema.check("EnvVarSource", {"resourceFieldRef": {"resource": "x", "divisor": 1}})
