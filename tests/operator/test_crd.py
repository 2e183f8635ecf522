"""The SpeechModel CRD: generated from the models, structural, and refusing bad manifests.

How a manifest is checked here, as the API server would:
1. structural defaulting (`crd.apply_defaults`), then the OpenAPI schema with strict field
   validation (unknown fields refused, as `kubectl apply` does by default) through
   `jsonschema`'s Draft 2020-12 validator (`crd.manifest_errors`);
2. every `x-kubernetes-validations` CEL rule, evaluated with a real CEL implementation
   (`common-expression-language`) on the defaulted value at the rule's node, with `self` bound
   to that value, as the API server does (rules on list items / map values run per element).
Every bad manifest must also be refused by the pydantic model: the two sides agree.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cel
import kubernetes_validate
import pytest
import yaml
from kubescribe_operator import crd
from kubescribe_operator.spec import SpeechModel, SpeechModelSpec
from pydantic import BaseModel, ValidationError

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "speechmodel.yaml"
EXAMPLES = sorted((ROOT / "examples" / "speechmodels").glob("*.yaml"))


def committed_crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


def schema() -> dict[str, Any]:
    return crd.crd_schema(committed_crd())


# ------------------------------------------------------------------------ CEL evaluation


def cel_rules(node: dict[str, Any], value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, rule, self) for every CEL rule that applies to `value` under schema `node`."""
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule["rule"], value
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                yield from cel_rules(sub, value[key], f"{path}.{key}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                yield from cel_rules(extra, item, f"{path}[{key}]")
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            yield from cel_rules(node["items"], item, f"{path}[{index}]")


def cel_failures(manifest: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """The CEL rules `manifest` breaks; transition rules (oldSelf) only as an update of `old`,
    as the API server evaluates them."""
    root = schema()
    defaulted = crd.apply_defaults(root, manifest)
    before = {}
    if old is not None:
        old_rules = cel_rules(root, crd.apply_defaults(root, old))
        before = {(path, rule): value for path, rule, value in old_rules}
    failures = []
    for path, rule, value in cel_rules(root, defaulted):
        if "oldSelf" in rule:
            if (path, rule) not in before:
                continue  # a create, or the field is new: the rule does not apply
            variables = {"self": value, "oldSelf": before[path, rule]}
        else:
            variables = {"self": value}
        if cel.evaluate(rule, variables) is not True:
            failures.append(f"{path or '(root)'}: {rule}")
    return failures


def api_server_refusal(manifest: dict[str, Any]) -> list[str]:
    errors = crd.manifest_errors(manifest, committed_crd())
    return errors or cel_failures(manifest)


# ---------------------------------------------------------------------------- manifests


def base() -> dict[str, Any]:
    return {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": "demo", "namespace": "speech"},
        "spec": {
            "model": {"uri": "s3://bucket/models/demo", "version": "1.0.0"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 60},
        },
    }


def mutate(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    manifest = base()
    change(manifest)
    return manifest


def spec_set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        node = manifest["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return change


def spec_del(path: str) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        node = manifest["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        del node[leaf]

    return change


def _node_affinity(term: dict[str, Any]) -> dict[str, Any]:
    required = {"nodeSelectorTerms": [term]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


GPU_NODES = [{"key": "gpu", "operator": "In", "values": ["a100"]}]
AFFINITY_TYPO = _node_affinity({"matchExpresions": GPU_NODES})
# What the API server's pruning leaves of AFFINITY_TYPO (a client that does not ask for strict
# field validation): a term that matches no node.
AFFINITY_EMPTY_TERM = _node_affinity({})
AFFINITY = _node_affinity({"matchExpressions": GPU_NODES})

# (id, change, which check refuses it: "schema", "cel" or "list-map", a fragment of the refusal)
BAD_MANIFESTS: list[tuple[str, Callable[[dict[str, Any]], Any], str, str]] = [
    ("missing-uri", spec_del("model.uri"), "schema", "'uri' is a required property"),
    ("missing-version", spec_del("model.version"), "schema", "'version' is a required property"),
    ("missing-spec", lambda m: m.pop("spec"), "schema", "'spec' is a required property"),
    ("ftp-uri", spec_set("model.uri", "ftp://host/model"), "schema", "does not match"),
    (
        "plain-http-uri",
        spec_set("model.uri", "http://models.example.com/a"),
        "schema",
        "does not match",
    ),
    ("relative-uri", spec_set("model.uri", "models/demo"), "schema", "does not match"),
    ("s3-uri-without-bucket", spec_set("model.uri", "s3://"), "schema", "does not match"),
    ("pvc-uppercase-claim", spec_set("model.uri", "pvc://Models/x"), "schema", "does not match"),
    ("version-with-space", spec_set("model.version", "1.0 beta"), "schema", "does not match"),
    ("sha256-too-short", spec_set("model.sha256", "abc123"), "schema", "does not match"),
    ("sha256-uppercase", spec_set("model.sha256", "A" * 64), "schema", "does not match"),
    ("device-tpu", spec_set("runtime.device", "tpu"), "schema", "is not one of"),
    ("replicas-negative", spec_set("replicas", -1), "schema", "less than the minimum"),
    ("replicas-string", spec_set("replicas", "two"), "schema", "is not of type 'integer'"),
    ("batch-size-zero", spec_set("runtime.batching.maxBatchSize", 0), "schema", "minimum"),
    ("port-too-large", spec_set("service.port", 70000), "schema", "maximum"),
    ("service-type", spec_set("service.type", "ExternalName"), "schema", "is not one of"),
    ("unknown-field", spec_set("replica", 2), "schema", "'replica' was unexpected"),
    ("min-above-max", spec_set("autoscaling.minReplicas", 5), "cel", "minReplicas"),
    (
        "default-cpu-target-without-cpu-request",
        lambda m: (
            spec_del("autoscaling.targetCPUUtilization")(m),
            spec_set("runtime.resources", {"requests": {"memory": "1Gi"}})(m),
        ),
        "cel",
        "'cpu' in self.runtime.resources.requests",
    ),
    (
        "surge-and-unavailable-zero",
        spec_set("rollout", {"maxSurge": 0, "maxUnavailable": "0%"}),
        "cel",
        "maxSurge",
    ),
    ("surge-not-a-percentage", spec_set("rollout.maxSurge", "lots"), "cel", "maxSurge"),
    (
        "env-overrides-model-dir",
        spec_set("runtime.env", [{"name": "KUBESCRIBE_MODEL_DIR", "value": "/x"}]),
        "cel",
        "env",
    ),
    (
        "env-unknown-kubescribe-variable",
        spec_set("runtime.env", [{"name": "KUBESCRIBE_MAX_QEUE", "value": "8"}]),
        "cel",
        "startsWith",
    ),
    (
        "cache-both-kinds",
        spec_set("model.cache", {"claimName": "cache", "hostPath": "/var/cache/kubescribe"}),
        "cel",
        "claimName",
    ),
    # Finding 22.4: a hostPath cache only under the documented allow-list (a root init step
    # chowns it), no `..`; finding 22.3: one runtime.env entry per name.
    (
        "cache-host-path-root",
        spec_set("model.cache", {"hostPath": "/"}),
        "schema",
        "does not match",
    ),
    (
        "cache-host-path-system-dir",
        spec_set("model.cache", {"hostPath": "/var/lib/kubelet"}),
        "schema",
        "does not match",
    ),
    (
        "cache-host-path-escapes",
        spec_set("model.cache", {"hostPath": "/var/cache/kubescribe/../../../etc"}),
        "schema",
        "does not match",
    ),
    (
        "env-duplicate-name",
        spec_set("runtime.env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        "list-map",
        "Duplicate",
    ),
    ("cache-empty", spec_set("model.cache", {}), "cel", "claimName"),
    (
        "bad-quantity",
        spec_set("runtime.resources", {"limits": {"memory": "lots"}}),
        "schema",
        "'lots' does not match",
    ),
    (
        "cpu-target-without-cpu-request",
        spec_set("runtime.resources", {"limits": {"memory": "2Gi"}}),
        "cel",
        "runtime.resources.requests",
    ),
    (
        "name-not-dns",
        lambda m: m["metadata"].update(name="Demo_Model"),
        "cel",
        "metadata.name",
    ),
    # Issue 22.12: a `..` segment, GPUs on a cpu pod.
    ("uri-dot-dot", spec_set("model.uri", "file:///../../etc/passwd"), "cel", "[.][.]"),
    ("pvc-uri-dot-dot", spec_set("model.uri", "pvc://store/../other/x"), "cel", "[.][.]"),
    ("gpus-on-cpu", spec_set("runtime.gpus", 2), "cel", "self.gpus"),
    # Issue 22.6: the embedded Kubernetes types are declared field by field.
    (
        "unknown-field-in-affinity",
        spec_set("scheduling.affinity", AFFINITY_TYPO),
        "schema",
        "'matchExpresions' was unexpected",
    ),
    (
        "empty-node-selector-term",
        spec_set("scheduling.affinity", AFFINITY_EMPTY_TERM),
        "schema",
        "non-empty",
    ),
    (
        "unknown-field-in-value-from",
        spec_set("runtime.env", [{"name": "TOKEN", "valueFrom": {"secretKeyRf": {"key": "t"}}}]),
        "schema",
        "'secretKeyRf' was unexpected",
    ),
    # Deliver 2: pod options.
    (
        "pod-label-reserved",
        spec_set("pod.labels", {"app.kubernetes.io/instance": "other"}),
        "cel",
        "'app.kubernetes.io/instance'",
    ),
    (
        "pod-annotation-reserved",
        spec_set("pod.annotations", {"kubescribe.io/model-ref": "x"}),
        "cel",
        "startsWith('kubescribe.io/')",
    ),
    (
        "host-path-cache-without-fixed-user",
        lambda m: (
            spec_set("model.cache", {"hostPath": "/var/cache/kubescribe"})(m),
            spec_set("pod", {"fixedUser": False})(m),
        ),
        "cel",
        "fixedUser",
    ),
    # Issue 19: the traffic fields (spec.routing, rollout.strategy/canary, qualityGate).
    ("routing-without-gateway", spec_set("routing", {"names": ["a"]}), "schema", "parentRefs"),
    (
        "routing-name-with-slash",
        spec_set("routing", {"parentRefs": [{"name": "gw"}], "names": ["support/es"]}),
        "schema",
        "does not match",
    ),
    (
        "routing-duplicate-name",
        spec_set("routing", {"parentRefs": [{"name": "gw"}], "names": ["es", "es"]}),
        "list-set",
        "routing.names",
    ),
    (
        "routing-language-not-a-code",
        spec_set("routing", {"parentRefs": [{"name": "gw"}], "defaultForLanguages": ["Spanish"]}),
        "schema",
        "does not match",
    ),
    ("strategy-unknown", spec_set("rollout.strategy", "BlueGreen"), "schema", "BlueGreen"),
    (
        "canary-without-strategy",
        spec_set("rollout.canary", {"steps": [{"weight": 10}]}),
        "cel",
        "self.strategy == 'Canary'",
    ),
    (
        "canary-weight-above-100",
        lambda m: (
            spec_set("rollout.strategy", "Canary")(m),
            spec_set("rollout.canary", {"steps": [{"weight": 150}]})(m),
        ),
        "schema",
        "150",
    ),
    (
        "canary-error-ratio-above-1",
        lambda m: (
            spec_set("rollout.strategy", "Canary")(m),
            spec_set("rollout.canary", {"analysis": {"maxErrorRatio": 2}})(m),
        ),
        "schema",
        "maximum",
    ),
    ("gate-tolerance-negative", spec_set("qualityGate.werTolerance", -0.1), "schema", "minimum"),
]


def test_scaling_an_autoscaled_model_is_refused_as_an_update_only() -> None:
    # Issue 22.12: `kubectl scale` (or an edit of replicas) on an autoscaled model changed
    # nothing, silently. Creating one with any replicas stays valid; so does switching
    # autoscaling on or off together with replicas.
    autoscaled = base()
    assert "autoscaling" in autoscaled["spec"]
    scaled = mutate(spec_set("replicas", 5))
    assert cel_failures(scaled) == []
    assert any("oldSelf" in f for f in cel_failures(scaled, old=autoscaled))
    assert cel_failures(autoscaled, old=autoscaled) == []
    manual = mutate(spec_del("autoscaling"))
    assert cel_failures(scaled, old=manual) == []  # autoscaling turned on with new replicas
    assert cel_failures(mutate(spec_del("autoscaling")), old=autoscaled) == []


def test_enough_bad_manifests() -> None:
    assert len(BAD_MANIFESTS) >= 10
    assert {kind for _, _, kind, _ in BAD_MANIFESTS} == {"schema", "cel", "list-map", "list-set"}


def test_base_manifest_is_accepted() -> None:
    assert api_server_refusal(base()) == []
    SpeechModel.model_validate(base())


@pytest.mark.parametrize(
    ("change", "kind", "fragment"),
    [pytest.param(c, k, f, id=i) for i, c, k, f in BAD_MANIFESTS],
)
def test_bad_manifest_is_refused_by_the_crd_and_the_model(
    change: Callable[[dict[str, Any]], Any], kind: str, fragment: str
) -> None:
    manifest = mutate(change)
    schema_errors = crd.manifest_errors(manifest, committed_crd())
    if kind == "schema":
        assert any(fragment in e for e in schema_errors), schema_errors
    elif kind == "list-map":
        # The API server refuses a repeated key of a list-map ("Duplicate value", with the
        # entry's path: test_crd_live); the schema declares the list as one.
        env = schema()["properties"]["spec"]["properties"]["runtime"]["properties"]["env"]
        assert (env["x-kubernetes-list-type"], env["x-kubernetes-list-map-keys"]) == (
            "map",
            ["name"],
        )
    elif kind == "list-set":
        # The API server refuses a repeated entry of a set ("Duplicate value", with the entry's
        # path: test_crd_live); `fragment` is the field's path under spec.
        node = schema()["properties"]["spec"]
        for key in fragment.split("."):
            node = node["properties"][key]
        assert node["x-kubernetes-list-type"] == "set"
    else:
        # The OpenAPI part lets it through: only the CEL rule catches it.
        assert schema_errors == []
        failures = cel_failures(manifest)
        assert any(fragment in f for f in failures), failures
    with pytest.raises(ValidationError):
        SpeechModel.model_validate(manifest)


@pytest.mark.parametrize(
    "change",
    [
        spec_set("autoscaling.minReplicas", 3),  # min == max
        spec_set("rollout", {"maxSurge": "0%", "maxUnavailable": 1}),
        spec_set("rollout", {"maxSurge": "25%", "maxUnavailable": "10%"}),
        spec_set("model.version", "2024.06.01_rc-1"),
        spec_set("model.uri", "file:///opt/kubescribe/models/demo"),
        spec_set("model.uri", "/opt/kubescribe/models/demo"),
        spec_set("model.uri", "https://models.example.com/a/b"),
        spec_set("model.uri", "pvc://store/stt/x"),
        spec_set("model.cache", {"hostPath": "/var/cache/kubescribe"}),
        spec_set("runtime.env", [{"name": "KUBESCRIBE_MAX_QUEUE", "value": "8"}]),
        spec_set("runtime.resources", {"requests": {"cpu": "500m", "memory": 2}}),
        spec_set("replicas", 0),
        spec_set("scheduling.affinity", AFFINITY),
        spec_set("runtime.env", [{"name": "T", "valueFrom": {"secretKeyRef": {"key": "t"}}}]),
        spec_set("runtime.gpus", 1),  # the old schema's default, on cpu models
        spec_set("model.uri", "s3://bucket/models..v2/demo"),  # dots, not a `..` segment
        spec_set("pod", {"labels": {"team": "speech"}, "fixedUser": False}),
    ],
)
def test_edge_manifests_are_accepted_by_both(change: Callable[[dict[str, Any]], Any]) -> None:
    manifest = mutate(change)
    assert api_server_refusal(manifest) == []
    SpeechModel.model_validate(manifest)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_are_accepted(path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    assert api_server_refusal(manifest) == []
    SpeechModel.model_validate(manifest)


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 6


# ------------------------------------------------------------------------------- drift


def test_committed_crd_equals_the_generated_one() -> None:
    assert CRD_PATH.read_text() == crd.render_crd(), (
        "crds/speechmodel.yaml is stale: run `python -m kubescribe_operator.crd --write`"
    )


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v not in ([], {}, None)}
    return value


@pytest.mark.parametrize(
    "manifest",
    [base(), mutate(spec_del("autoscaling"))] + [yaml.safe_load(p.read_text()) for p in EXAMPLES],
)
def test_crd_defaults_equal_the_model_defaults(manifest: dict[str, Any]) -> None:
    """What the API server stores after defaulting is what the operator's model reads."""
    by_api_server = crd.apply_defaults(schema(), manifest)["spec"]
    by_model = SpeechModelSpec.model_validate(manifest["spec"]).dump()
    assert _without_empty(by_api_server) == _without_empty(by_model)


def test_every_model_field_is_in_the_schema() -> None:
    spec = schema()["properties"]["spec"]

    def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield annotation
        for arg in getattr(annotation, "__args__", ()):
            yield from models_in(arg)

    def walk(model: type[BaseModel], node: dict[str, Any], path: str) -> None:
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert key in node["properties"], f"{path}.{key} missing from the CRD"
            sub = node["properties"][key]
            for inner in models_in(field.annotation):
                walk(inner, sub["items"] if sub["type"] == "array" else sub, f"{path}.{key}")

    walk(SpeechModelSpec, spec, "spec")
    assert set(spec["required"]) == {"model"}
    assert set(spec["properties"]["model"]["required"]) == {"uri", "version"}


# ------------------------------------------------------------------------------ shape


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _nodes(node[key], f"{path}[]")


def test_schema_is_structural() -> None:
    """Kubernetes refuses non-structural CRD schemas; these are the rules that apply here."""
    for path, node in _nodes(committed_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
        assert "$ref" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node and node["anyOf"] == [
                {"type": "integer"},
                {"type": "string"},
            ], path
        else:
            assert "anyOf" not in node, path
            assert node.get("type") in {
                "object",
                "array",
                "string",
                "integer",
                "boolean",
                "number",
            }, path
        if "default" in node:
            assert (
                node.get("x-kubernetes-int-or-string")
                or node["type"] != "object"
                or (node["default"] == {})
            ), path


def test_crd_object_is_a_valid_customresourcedefinition() -> None:
    kubernetes_validate.validate(committed_crd(), "1.37.0", strict=True)


def test_crd_names_columns_and_subresources() -> None:
    spec = committed_crd()["spec"]
    assert spec["group"] == "kubescribe.io" and spec["scope"] == "Namespaced"
    assert {"sm", "stt"} <= set(spec["names"]["shortNames"])
    assert "kubescribe" in spec["names"]["categories"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Version"] == ".status.currentVersion"
    assert columns["Target"] == ".status.targetVersion"
    assert columns["Ready"] == ".status.ready"  # "2/3": ready/desired (issue 22.12)
    assert columns["Phase"] == ".status.phase"
    assert columns["Age"] == ".metadata.creationTimestamp"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for path in columns.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.") in status, path
    scale = version["subresources"]["scale"]
    assert scale["labelSelectorPath"].removeprefix(".status.") in status


def test_status_keeps_unknown_fields_for_kopf() -> None:
    status = schema()["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    assert set(status["properties"]["conditions"]["items"]["properties"]) >= {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


def test_defaulting_fills_nested_objects() -> None:
    minimal = {"spec": {"model": {"uri": "/m", "version": "1"}}}
    defaulted = crd.apply_defaults(schema(), copy.deepcopy(minimal))["spec"]
    assert defaulted["runtime"]["device"] == "cpu"
    assert defaulted["runtime"]["batching"] == {"maxBatchSize": 16, "maxDelayMs": 10}
    assert defaulted["rollout"] == {
        "strategy": "Rolling",
        "maxSurge": 1,
        "maxUnavailable": 0,
        "progressDeadlineSeconds": 600,
        "autoRollback": True,
    }
    assert "autoscaling" not in defaulted


def test_cel_rules_are_bounded_for_the_cost_estimator() -> None:
    """The API server refuses a CRD whose CEL rules may cost too much: what a rule iterates
    over has maxItems/maxProperties, and what it matches against a regex has maxLength."""
    root = committed_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = 0
    for path, node in _nodes(root):
        for rule in node.get("x-kubernetes-validations", []):
            rules += 1
            if ".all(" in rule["rule"]:
                assert "maxItems" in node or "maxProperties" in node, path
                for item in ("items", "additionalProperties"):
                    for key, sub in node.get(item, {}).get("properties", {}).items():
                        if f".{key}" in rule["rule"] and sub.get("type") == "string":
                            assert "maxLength" in sub, f"{path}[].{key}"
            if "self.matches(" in rule["rule"]:
                assert "maxLength" in node, path
            # Every rule parses (the API server refuses a CRD with a rule that does not) and
            # refers to nothing but `self` (and the variables its macros bind).
            assert "self" in cel.compile(rule["rule"]).variables(), path
    assert rules >= 8
