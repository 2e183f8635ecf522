"""A local Kubernetes API for the operator's integration tests: kmock's emulator, made faithful.

kmock 0.8 serves real HTTP, lists and watches, but (see DESIGN.md, "How it is tested here") it
does not behave like an API server where kopf and the operator rely on it. This subclass closes
those gaps:

- create fills ``metadata.namespace``, ``uid``, ``resourceVersion``, ``generation`` and
  ``creationTimestamp`` (and ``generateName``), answers 201, and 409 when the name is taken;
- every change bumps a global ``resourceVersion``; ``generation`` only moves when something
  outside ``metadata`` and ``status`` changes; a patch that changes nothing changes nothing
  (no new version, no watch event), as on a real server;
- built-in objects are defaulted and stripped of empty lists like kube-apiserver does
  (``defaulting.py``), so that comparing desired with live objects is tested for real;
- for resources with a ``status`` subresource, ``/status`` only changes ``status`` and the main
  endpoint ignores ``status`` (also on create);
- merge patches, JSON patches (a failed ``test`` is 422) and PUT; a stale
  ``metadata.resourceVersion`` in the body is 409;
- DELETE honours finalizers, then garbage-collects dependents whose owners are all gone;
- ``/api/v1/namespaces`` works; list/watch honour ``labelSelector``; a watch cannot miss an event
  that happens while it sends its initial snapshot;
- fault injection: answer the next N matching requests with an error status; holds: keep
  matching requests waiting until the test releases them (a reconcile caught mid-way).

Everything runs on the event loop that serves HTTP; :class:`~tests.operator.kube.runner.KubeThread`
runs that loop in a thread so that synchronous clients (and the operator process) can call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import dicts, enums, parsing, references, rendering

from .defaulting import apply_defaults

JSON = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]

_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock's path parser, fixed for the namespaces resource itself (it crashes on it)."""
    match = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?(?:/(status|finalize))?/?", path)
    if match:
        return parsing.ParsedPath(
            group="", version="v1", plural="namespaces", name=match[1], subresource=match[2]
        )
    return _original_parse_path(path)


parsing.parse_path = _parse_path


@dataclass
class Fault:
    """Answer the next ``times`` requests that match with ``status``."""

    status: int
    times: int
    method: str | None = None
    path: re.Pattern[str] | None = None

    def matches(self, request: rendering.Request) -> bool:
        if self.method is not None and request.method.value != self.method.upper():
            return False
        return self.path is None or bool(self.path.search(request.url.path))


@dataclass
class Hold:
    """Keep requests that match waiting (unanswered) until released; ``held`` counts them."""

    method: str | None
    path: re.Pattern[str] | None
    released: asyncio.Event
    held: int = 0

    def matches(self, request: rendering.Request) -> bool:
        if self.method is not None and request.method.value != self.method.upper():
            return False
        return self.path is None or bool(self.path.search(request.url.path))


class KubeError(Exception):
    """An API error answered with a Kubernetes ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _parse_selector(selector: str) -> list[Callable[[dict[str, str]], bool]]:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            checks.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            checks.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif term.startswith("!"):
            name = term[1:].strip()
            checks.append(lambda labels, k=name: k not in labels)
        else:
            checks.append(lambda labels, k=term: k in labels)
    return checks


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's ``KubernetesEmulator`` with the semantics kopf and the operator rely on."""

    _rv: int = attrs.field(default=1000, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _holds: list[Hold] = attrs.field(factory=list, init=False)
    _changed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    # ---- setup -------------------------------------------------------------------------------

    def register(
        self,
        resource: str,
        *,
        kind: str,
        namespaced: bool = True,
        subresources: Iterable[str] = (),
        shortnames: Iterable[str] = (),
    ) -> None:
        """Declare a resource (e.g. a CRD's) for discovery, listing and watching."""
        self.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            subresources=set(subresources),
            shortnames=set(shortnames),
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
        )

    def register_crd(self, crd: JSON) -> None:
        """Serve a CustomResourceDefinition's served versions (names, scope, subresources)."""
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if version.get("served", True):
                self.register(
                    f"{spec['group']}/{version['name']}/{names['plural']}",
                    kind=names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    subresources=set(version.get("subresources") or {}),
                    shortnames=names.get("shortNames", ()),
                )

    def inject_fault(
        self, status: int, *, times: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path`` (a regex) with
        the error ``status``."""
        self._faults.append(Fault(status, times, method, re.compile(path) if path else None))

    def hold(self, *, method: str | None = None, path: str | None = None) -> Hold:
        """Keep requests matching ``method`` and ``path`` (a regex) unanswered until
        :meth:`release` (call on the emulator's loop)."""
        hold = Hold(method, re.compile(path) if path else None, asyncio.Event())
        self._holds.append(hold)
        return hold

    def release(self, hold: Hold) -> None:
        """Answer the held requests (with the state of the moment) and hold no more."""
        if hold in self._holds:
            self._holds.remove(hold)
        hold.released.set()

    def change_token(self) -> asyncio.Event:
        """A token for :meth:`changed_since`: take it before looking at the state."""
        return self._changed

    async def changed_since(self, token: asyncio.Event, timeout: float) -> None:
        """Return once the state changed or a request was served since ``token`` was taken
        (at once if that happened already), or after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(token.wait(), timeout)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def pending_faults(self) -> int:
        return sum(f.times for f in self._faults)

    # ---- reading (for tests; call on the emulator's loop or via KubeThread) ------------------

    def recorded(self) -> list[rendering.Request]:
        """Every request served so far, in order (faulted ones included)."""
        return list(self._requests)

    def get(self, resource: str, namespace: str | None, name: str) -> JSON | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def list(self, resource: str, namespace: str | None = None) -> list[JSON]:
        res = kmock.resource(resource)
        return [
            copy.deepcopy(obj.raw)
            for (r, ns, _), obj in list(self.objects.items())
            if r == res and not obj.deleted and (namespace is None or ns == namespace)
        ]

    # ---- state changes (shared by HTTP and by the in-process controllers) --------------------

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo | None:
        for res in self.resources:
            if res == resource:
                return self.resources[res]
        return None

    def _has_status(self, resource: kmock.resource) -> bool:
        info = self._info(resource)
        return info is not None and "status" in info.subresources

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _emit(self, resource: kmock.resource, type_: str, obj: JSON) -> None:
        await self._buses[resource].put({"type": type_, "object": copy.deepcopy(obj)})
        self._notify()

    async def store_create(
        self,
        resource: kmock.resource,
        namespace: str | None,
        body: JSON,
        *,
        keep_status: bool = False,
    ) -> JSON:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if namespace is not None:
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise KubeError(422, "Invalid", "metadata.name: Required value")
        key: Key = (resource, meta.get("namespace"), name)
        if key in self.objects and not self.objects[key].deleted:
            raise KubeError(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
        if self._has_status(resource) and not keep_status:
            obj.pop("status", None)
        obj = apply_defaults(resource.plural, resource.group, obj, creating=True)
        meta = obj["metadata"]
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            generation=1,
            creationTimestamp=_now(),
        )
        meta.pop("deletionTimestamp", None)
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        await self._emit(resource, "ADDED", obj)
        owners = [ref.get("uid") for ref in meta.get("ownerReferences", [])]
        if owners and not any(uid in self._alive_uids() for uid in owners):
            await self._remove(key)  # the garbage collector removes dependents of gone owners
        return obj

    def _alive_uids(self) -> set[str]:
        return {o.raw["metadata"].get("uid") for o in self.objects.values() if not o.deleted}

    async def store_update(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        change: Callable[[JSON], JSON],
        *,
        subresource: str | None = None,
        expected_rv: str | None = None,
    ) -> JSON:
        """Apply ``change`` to a copy of the object, keeping what the endpoint may not change."""
        key: Key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            raise KubeError(404, "NotFound", f'{resource.plural} "{name}" not found')
        old = copy.deepcopy(self.objects[key].raw)
        if expected_rv is not None and expected_rv != old["metadata"].get("resourceVersion"):
            raise KubeError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
            )
        new = change(copy.deepcopy(old))
        if subresource == "status":
            new = {**old, "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
        elif self._has_status(resource):
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                new["status"] = old["status"]
        if subresource != "status":
            new = apply_defaults(resource.plural, resource.group, new, creating=False)
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "generation", "namespace", "name"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        if old["metadata"].get("deletionTimestamp"):
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op: no new resourceVersion, no watch event
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key].create(new)  # keep the released state in the history
            await self._remove(key)
            return new
        self.objects[key].create(new)
        await self._emit(resource, "MODIFIED", new)
        return new

    async def store_delete(
        self, resource: kmock.resource, namespace: str | None, name: str
    ) -> JSON:
        key: Key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            raise KubeError(404, "NotFound", f'{resource.plural} "{name}" not found')
        obj = copy.deepcopy(self.objects[key].raw)
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = _now()
                meta["resourceVersion"] = self._next_rv()
                self.objects[key].create(obj)
                await self._emit(resource, "MODIFIED", obj)
            return obj
        await self._remove(key)
        return obj

    async def _remove(self, key: Key) -> None:
        """Delete the object, then collect the garbage: dependents whose owners are all gone."""
        obj = self.objects[key].raw
        self.objects[key].delete()
        await self._emit(key[0], "DELETED", obj)
        alive = self._alive_uids()
        for dep_key, dep in list(self.objects.items()):
            if dep.deleted:
                continue
            owners = [r.get("uid") for r in dep.raw["metadata"].get("ownerReferences", [])]
            if owners and not any(uid in alive for uid in owners):
                await self.store_delete(*dep_key)

    # ---- HTTP ----------------------------------------------------------------------------------

    @staticmethod
    def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": code,
                "reason": reason,
                "message": message,
            },
            status=code,
        )

    def _take_fault(self, request: rendering.Request) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.matches(request):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._notify()  # a request was recorded (tests wait on requests too)
        if request.resource is None or request.resource.version is None:
            return await super()._handle(request)
        hold = next((h for h in self._holds if h.matches(request)), None)
        if hold is not None:
            hold.held += 1
            await hold.released.wait()
        fault = self._take_fault(request)
        if fault is not None:
            return self._status(fault.status, "InjectedFault", f"injected {fault.status}")
        is_watch = request.action == enums.action.WATCH
        if request.resource.plural is None:
            return await super()._handle(request)  # discovery
        try:
            if request.subresource == "scale" and request.name:
                return await self._http_scale(request)
            if request.subresource not in (None, "status") and not is_watch:
                raise KubeError(404, "NotFound", f"no subresource {request.subresource}")
            if request.method == enums.method.POST and request.name is None:
                return await self._http_create(request)
            if request.method in (enums.method.PATCH, enums.method.PUT) and request.name:
                return await self._http_update(request)
            if request.method == enums.method.DELETE and request.name:
                async with self._lock:
                    obj = await self.store_delete(
                        self._resource(request), request.namespace, request.name
                    )
                return aiohttp.web.json_response(obj)
        except KubeError as exc:
            return self._status(exc.code, exc.reason, exc.message)
        return await super()._handle(request)

    def _resource(self, request: rendering.Request) -> kmock.resource:
        assert request.resource is not None
        res = kmock.resource(request.resource)
        if self._info(res) is None and not any(r == res for r, _, _ in self.objects):
            raise KubeError(404, "NotFound", f"the server could not find the resource {res}")
        return res

    async def _http_scale(self, request: rendering.Request) -> aiohttp.web.Response:
        """The ``scale`` subresource (what an HPA or ``kubectl scale`` uses): spec.replicas."""
        assert request.name is not None
        resource = self._resource(request)
        if request.method == enums.method.PATCH:
            replicas = (request.data or {}).get("spec", {}).get("replicas")
            if not isinstance(replicas, int):
                raise KubeError(422, "Invalid", "spec.replicas must be an integer")

            def change(old: JSON) -> JSON:
                return {**old, "spec": {**old.get("spec", {}), "replicas": replicas}}

            async with self._lock:
                await self.store_update(resource, request.namespace, request.name, change)
        key: Key = (resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise KubeError(404, "NotFound", f'"{request.name}" not found')
        obj = self.objects[key].raw
        return aiohttp.web.json_response(
            {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "uid")},
                "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
                "status": {"replicas": obj.get("status", {}).get("replicas", 0)},
            }
        )

    async def _http_create(self, request: rendering.Request) -> aiohttp.web.Response:
        if not isinstance(request.data, dict):
            raise KubeError(400, "BadRequest", "the body must be a JSON object")
        async with self._lock:
            obj = await self.store_create(self._resource(request), request.namespace, request.data)
        return aiohttp.web.json_response(obj, status=201)

    async def _http_update(self, request: rendering.Request) -> aiohttp.web.Response:
        assert request.name is not None
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = request.data
        expected_rv: str | None = None
        change: Callable[[JSON], JSON]
        if request.method == enums.method.PUT:
            if not isinstance(body, dict):
                raise KubeError(400, "BadRequest", "the body must be a JSON object")
            expected_rv = body.get("metadata", {}).get("resourceVersion")

            def change(old: JSON) -> JSON:
                return copy.deepcopy(body)

        elif content_type == "application/json-patch+json" and isinstance(body, list):

            def change(old: JSON) -> JSON:
                try:
                    return jsonpatch.apply_patch(old, body)  # type: ignore[no-any-return]
                except jsonpatch.JsonPatchTestFailed as exc:
                    raise KubeError(422, "Invalid", f"the test operation failed: {exc}") from exc
                except jsonpatch.JsonPatchException as exc:
                    raise KubeError(422, "Invalid", str(exc)) from exc

        elif content_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ) and isinstance(body, dict):
            expected_rv = body.get("metadata", {}).get("resourceVersion")

            def change(old: JSON) -> JSON:
                return dict(dicts.merge_patch_dict(old, body))

        else:
            raise KubeError(415, "UnsupportedMediaType", f"unsupported patch: {content_type}")
        async with self._lock:
            obj = await self.store_update(
                self._resource(request),
                request.namespace,
                request.name,
                change,
                subresource=request.subresource,
                expected_rv=expected_rv,
            )
        return aiohttp.web.json_response(obj)

    # ---- reading over HTTP: list and watch with selectors, no lost events ----------------------

    def _select(self, request: rendering.Request) -> list[JSON]:
        checks = _parse_selector(request.params.get("labelSelector", ""))
        result = []
        for (res, ns, name), obj in self.objects.items():
            if obj.deleted or res != request.resource:
                continue
            if request.namespace is not None and ns != request.namespace:
                continue
            if request.name is not None and name != request.name:
                continue
            labels = obj.raw.get("metadata", {}).get("labels") or {}
            if all(check(labels) for check in checks):
                result.append(copy.deepcopy(obj.raw))
        return result

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource is None or (
            self._info(kmock.resource(request.resource)) is None
            and not any(r == request.resource for r, _, _ in self.objects)
        ):
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._select(request)
            rv = str(max([0, *(int(i["metadata"]["resourceVersion"]) for i in items)]))
        return {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""
        assert request.resource is not None
        bus = self._buses[kmock.resource(request.resource)]
        checks = _parse_selector(request.params.get("labelSelector", ""))
        # A watch resumed from a resourceVersion gets only what is newer, as from an API server
        # (kopf resumes after 70 s of silence; replaying everything made it reconcile every child
        # again). Unset or "0": the full snapshot. Deletions in between are not replayed: the
        # emulator keeps no event history.
        since = request.params.get("resourceVersion") or ""
        floor = int(since) if since.isdigit() and since != "0" else None
        async with self._lock:  # the mark and the snapshot are consistent: nothing lost in between
            marker = await bus.mark()
            snapshot = [
                {"type": "ADDED", "object": o}
                for o in self._select(request)
                if floor is None or int(o["metadata"]["resourceVersion"]) > floor
            ]
        try:
            for event in snapshot:
                yield event
            async for event in bus.stream(since=marker):
                meta = event.get("object", {}).get("metadata", {})
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                if request.name is not None and meta.get("name") != request.name:
                    continue
                labels = meta.get("labels") or {}
                if all(check(labels) for check in checks):
                    yield event
        finally:
            await bus.unmark(marker)


def owner_reference(owner: JSON, *, controller: bool = True) -> JSON:
    """An ownerReference to ``owner`` (for objects the test's controllers create)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def as_resource(value: str | references.resource) -> kmock.resource:
    return kmock.resource(value)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
