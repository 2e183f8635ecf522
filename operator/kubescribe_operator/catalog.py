"""The catalogue of the models behind a shared endpoint, and what a routed model's pods get. Pure.

``GET /v1/models`` through a Gateway reaches one runtime; it must list every model behind the
endpoint (the OpenAI client calls it). The operator keeps, per namespace, one ConfigMap
(``kubescribe-models``) with an entry per routed SpeechModel (``<name>.json``: its name, its
other names, its version, the languages it is the default for), and mounts it read-only into
every routed model's pods (an optional volume: a pod starts before the ConfigMap exists); the
runtime lists its own names and the catalogue's (``KUBESCRIBE_MODEL_CATALOG``), and answers
only for its own (``KUBESCRIBE_SERVED_MODEL_NAMES``), a 404 ``model_not_found`` for another's.

Each SpeechModel writes its own entry by server-side apply under a field manager of its own
(``kubescribe-operator/catalog/<name>``), with an ownerReference of its own: no SpeechModel reads
or writes another's entry, and applying its ownerReference alone (routing removed) takes its
entry away (a deleted model's: a merge patch, routing.forget). The ownerReference stays
(removing one needs ``delete`` on the ConfigMap where OwnerReferencesPermissionEnforcement is
on); the garbage collector drops it with the model, and the ConfigMap with its last owner.
The ConfigMap is not a child of any one model (no instance label), so the children's watches
do not see it.

Scope: a namespace. Models of several namespaces on one Gateway each list their namespace's.
"""

from __future__ import annotations

import json
from typing import Any

from kubescribe_operator.httproute import served_names
from kubescribe_operator.kinds import FIELD_MANAGER
from kubescribe_operator.naming import LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, owner_reference
from kubescribe_operator.spec import SpeechModelSpec

Obj = dict[str, Any]

CONFIGMAP = "kubescribe-models"
MOUNT_DIR = "/etc/kubescribe/catalog"
VOLUME = "model-catalog"
SERVED_NAMES_ENV = "KUBESCRIBE_SERVED_MODEL_NAMES"
CATALOG_ENV = "KUBESCRIBE_MODEL_CATALOG"


def field_manager(name: str) -> str:
    return f"{FIELD_MANAGER}/catalog/{name}"


def entry(name: str, spec: SpeechModelSpec) -> Obj | None:
    """The model's catalogue entry, None when it is not routed."""
    if spec.routing is None:
        return None
    return {
        "name": name,
        "names": served_names(name, spec.routing)[1:],
        "version": spec.model.version,
        "defaultForLanguages": list(spec.routing.default_for_languages),
    }


def build_entry(name: str, namespace: str, uid: str, data: Obj | None) -> Obj:
    """What the model's field manager applies to the catalogue: its ownerReference and its
    entry (``entry``; None: not routed, no entry)."""
    metadata: Obj = {
        "name": CONFIGMAP,
        "namespace": namespace,
        "labels": {
            LABEL_NAME: "kubescribe",
            LABEL_PART_OF: "kubescribe",
            LABEL_MANAGED_BY: FIELD_MANAGER,
        },
    }
    # Not the controller: every routed model of the namespace owns the catalogue.
    metadata["ownerReferences"] = [{**owner_reference(name, uid), "controller": False}]
    body: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    if data is not None:
        body["data"] = {f"{name}.json": json.dumps(data, sort_keys=True)}
    return body


def runtime_env(name: str, spec: SpeechModelSpec) -> list[Obj]:
    """The routed model's runtime settings (contract 4): its names and the catalogue."""
    if spec.routing is None:
        return []
    return [
        {"name": SERVED_NAMES_ENV, "value": ",".join(served_names(name, spec.routing))},
        {"name": CATALOG_ENV, "value": MOUNT_DIR},
    ]


def volume(spec: SpeechModelSpec) -> tuple[Obj, Obj] | None:
    """(the pod's volume, the runtime container's mount) of the catalogue, when routed."""
    if spec.routing is None:
        return None
    return (
        {"name": VOLUME, "configMap": {"name": CONFIGMAP, "optional": True}},
        {"name": VOLUME, "mountPath": MOUNT_DIR, "readOnly": True},
    )
