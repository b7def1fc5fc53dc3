"""STAND-IN for the Kubernetes API server: no cluster can run here, so the sync tests
talk to this small loopback HTTP server instead. It is NOT Kubernetes.

It implements only what ``keysafe sync kubernetes`` calls, with the JSON shapes the
API documents (https://kubernetes.io/docs/reference/kubernetes-api/):

- ``GET/PUT/PATCH /api/v1/namespaces/{ns}/secrets/{name}`` and ``POST
  /api/v1/namespaces/{ns}/secrets`` (create: 201, 409 AlreadyExists; replace: 409
  Conflict on a stale ``metadata.resourceVersion``);
- ``GET/PATCH /apis/apps/v1/namespaces/{ns}/{resource}/{name}`` for deployments,
  statefulsets and daemonsets (strategic-merge or merge patch of nested maps);
- request bodies as JSON (no Content-Type, as the real server defaults to JSON, or
  ``application/json``); patches as strategic-merge or merge patches, else 415;
- ``GET/PATCH /apis/external-secrets.io/v1/namespaces/{ns}/externalsecrets/{name}``
  (merge patch), with the External Secrets Operator simulated: a change to the object's
  annotations (its ``force-sync``) makes it "refresh" at once, setting
  ``status.refreshTime`` (RFC 3339, whole seconds), ``status.syncedResourceVersion``
  and the ``Ready`` condition (``True``/``SecretSynced``, or ``False``/
  ``SecretSyncedError`` when ``eso_failing``); with ``eso_running`` False nothing
  answers (an operator that is not installed or not running). ``eso_refreshes`` counts
  the refreshes;
- errors as ``v1/Status`` objects: 404 with ``details.kind`` ``secrets``/``namespaces``/
  a workload resource, 403 Forbidden for verbs listed in ``deny``, 401 without the bearer
  token of the generated kubeconfig.

Every request is recorded (method, path, content type) so tests can count them. It
listens on 127.0.0.1 only, on a free port, in a daemon thread.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

_SECRET = re.compile(r"/api/v1/namespaces/([^/]+)/secrets(?:/([^/?]+))?")
# JSON patch (a list of operations) is not implemented by this stand-in.
_PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")
_WORKLOAD = re.compile(
    r"/apis/apps/v1/namespaces/([^/]+)/(deployments|statefulsets|daemonsets)/([^/?]+)")
_ESO = re.compile(r"/apis/external-secrets\.io/v1/namespaces/([^/]+)/externalsecrets/([^/?]+)")
_KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet",
          "daemonsets": "DaemonSet"}


@dataclass
class Request:
    method: str
    path: str
    content_type: str | None
    body: Any


@dataclass
class FakeCluster:
    namespaces: set[str] = field(default_factory=lambda: {"default"})
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deployments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    statefulsets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    daemonsets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    externalsecrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: The simulated External Secrets Operator: running, and whether its fetch fails.
    eso_running: bool = True
    eso_failing: bool = False
    eso_refreshes: int = 0
    #: (verb, resource) pairs answered with 403, e.g. ("create", "secrets").
    deny: set[tuple[str, str]] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    #: One-shot failures: (method, resource, status) answered once, first match wins.
    inject: list[tuple[str, str, int]] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    _rv: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_deployment(self, namespace: str, name: str) -> None:
        self.add_workload("deployments", namespace, name)

    def add_workload(self, resource: str, namespace: str, name: str) -> None:
        """A Deployment, StatefulSet or DaemonSet (``resource`` as in the API path)."""
        getattr(self, resource)[(namespace, name)] = {
            "apiVersion": "apps/v1", "kind": _KINDS[resource],
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app",
                                                           "image": "busybox"}]}}}}

    def add_external_secret(self, namespace: str, name: str) -> None:
        """An ExternalSecret the operator has synced once (Ready)."""
        self.externalsecrets[(namespace, name)] = {
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1",
                         "generation": 1, "annotations": {}},
            "spec": {"refreshInterval": "1h", "target": {"name": name}},
            "status": {"refreshTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "reason": "SecretSynced"}]}}

    def _operator(self, obj: dict[str, Any]) -> None:
        """The operator's reconcile after an annotation change (a force-sync)."""
        if not self.eso_running:
            return
        from datetime import UTC, datetime

        self.eso_refreshes += 1
        ok = not self.eso_failing
        obj["status"] = {
            "refreshTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "syncedResourceVersion": f"1-{self.eso_refreshes}",
            "conditions": [{"type": "Ready", "status": "True" if ok else "False",
                            "reason": "SecretSynced" if ok else "SecretSyncedError",
                            "message": "secret synced" if ok else
                            "could not get secret data from provider"}]}

    def writes(self, resource: str = "secrets") -> list[Request]:
        return [r for r in self.requests
                if r.method in ("POST", "PUT", "PATCH") and f"/{resource}" in r.path]

    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)


def status(code: int, reason: str, message: str, kind: str = "",
           name: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "reason": reason,
                           "code": code}
    if kind:
        out["details"] = {"name": name, "kind": kind}
    return out


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge (strategic merge is the same for the nested maps used here)."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
    return target


class _Handler(BaseHTTPRequestHandler):
    cluster: FakeCluster

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        c = self.cluster
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        path = self.path.split("?", 1)[0]
        with c.lock:
            c.requests.append(Request(method, path, self.headers.get("Content-Type"), body))
            if self.headers.get("Authorization") != f"Bearer {c.token}":
                return self._send(401, status(401, "Unauthorized", "Unauthorized"))
            wm = _WORKLOAD.fullmatch(path)
            em = _ESO.fullmatch(path)
            resource = wm.group(2) if wm else "externalsecrets" if em else "secrets"
            for i, (imethod, iresource, code) in enumerate(c.inject):
                if imethod == method and iresource == resource:
                    del c.inject[i]
                    reason = {409: "Conflict", 500: "InternalError"}.get(code, "Injected")
                    return self._send(code, status(code, reason, f"injected {code}"))
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            allowed = (_PATCH_TYPES if method == "PATCH"
                       else ("", "application/json") if method in ("POST", "PUT") else None)
            if allowed is not None and ctype not in allowed:
                return self._send(415, status(415, "UnsupportedMediaType",
                                              f"the body of the request was in an unknown "
                                              f"format - accepted media types include: "
                                              f"{', '.join(t for t in allowed if t)}"))
            m = _SECRET.fullmatch(path)
            if m:
                return self._secrets(method, m.group(1), m.group(2), body)
            if wm:
                return self._workloads(method, wm.group(2), wm.group(1), wm.group(3), body)
            if em:
                return self._external_secret(method, em.group(1), em.group(2), body)
            return self._send(404, status(404, "NotFound", "the server could not find the "
                                          "requested resource"))

    def _forbidden(self, verb: str, resource: str, ns: str, name: str | None) -> bool:
        if (verb, resource) in self.cluster.deny:
            self._send(403, status(
                403, "Forbidden",
                f'{resource} "{name or ""}" is forbidden: User "system:serviceaccount:{ns}:'
                f'keysafe" cannot {verb} resource "{resource}" in API group "" in the '
                f'namespace "{ns}"', kind=resource, name=name or ""))
            return True
        return False

    def _secrets(self, method: str, ns: str, name: str | None, body: Any) -> None:
        c = self.cluster
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
        if verb is None or (name is None) != (method == "POST"):
            return self._send(405, status(405, "MethodNotAllowed", "method not allowed"))
        if self._forbidden(verb, "secrets", ns, name):
            return None
        if method == "GET":
            obj = c.secrets.get((ns, name or ""))
            if obj is None:
                return self._send(404, status(404, "NotFound", f'secrets "{name}" not found',
                                              "secrets", name or ""))
            return self._send(200, obj)
        if ns not in c.namespaces:
            return self._send(404, status(404, "NotFound", f'namespaces "{ns}" not found',
                                          "namespaces", ns))
        if method == "POST":
            key = (ns, body["metadata"]["name"])
            if key in c.secrets:
                return self._send(409, status(409, "AlreadyExists",
                                              f'secrets "{key[1]}" already exists',
                                              "secrets", key[1]))
            obj = copy.deepcopy(body)
            obj["metadata"]["namespace"] = ns
            obj["metadata"]["resourceVersion"] = c.next_rv()
            c.secrets[key] = obj
            return self._send(201, obj)
        key = (ns, name or "")
        if key not in c.secrets:
            return self._send(404, status(404, "NotFound", f'secrets "{name}" not found',
                                          "secrets", name or ""))
        if method == "PUT":
            have = c.secrets[key]["metadata"]["resourceVersion"]
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent is not None and sent != have:
                return self._send(409, status(
                    409, "Conflict", f'Operation cannot be fulfilled on secrets "{name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again", "secrets", name or ""))
            obj = copy.deepcopy(body)
        else:
            obj = merge(copy.deepcopy(c.secrets[key]), body)
        obj["metadata"]["namespace"] = ns
        obj["metadata"]["resourceVersion"] = c.next_rv()
        c.secrets[key] = obj
        return self._send(200, obj)

    def _workloads(self, method: str, resource: str, ns: str, name: str,
                   body: Any) -> None:
        c = self.cluster
        verb = {"GET": "get", "PATCH": "patch"}.get(method)
        if verb is None:
            return self._send(405, status(405, "MethodNotAllowed", "method not allowed"))
        if self._forbidden(verb, resource, ns, name):
            return None
        obj = getattr(c, resource).get((ns, name))
        if obj is None:
            return self._send(404, status(404, "NotFound",
                                          f'{resource}.apps "{name}" not found',
                                          resource, name))
        if method == "PATCH":
            merge(obj, body)
            obj["metadata"]["resourceVersion"] = c.next_rv()
        return self._send(200, obj)

    def _external_secret(self, method: str, ns: str, name: str, body: Any) -> None:
        c = self.cluster
        verb = {"GET": "get", "PATCH": "patch"}.get(method)
        if verb is None:
            return self._send(405, status(405, "MethodNotAllowed", "method not allowed"))
        if self._forbidden(verb, "externalsecrets", ns, name):
            return None
        obj = c.externalsecrets.get((ns, name))
        if obj is None:
            return self._send(404, status(404, "NotFound", f'externalsecrets.external-secrets'
                                          f'.io "{name}" not found', "externalsecrets", name))
        if method == "PATCH":
            before = copy.deepcopy(obj["metadata"].get("annotations") or {})
            merge(obj, body)
            obj["metadata"]["resourceVersion"] = c.next_rv()
            if (obj["metadata"].get("annotations") or {}) != before:
                c._operator(obj)
        return self._send(200, obj)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")


class FakeKubeServer:
    """The stand-in server on 127.0.0.1 in a daemon thread; a context manager."""

    def __init__(self, cluster: FakeCluster | None = None) -> None:
        self.cluster = cluster or FakeCluster()
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeKubeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def kubeconfig(self, path: Path, *, context: str = "fake") -> Path:
        """A kubeconfig (written with PyYAML) pointing at this server with its token."""
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "keysafe", "user": {"token": self.cluster.token}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "keysafe",
                                                       "namespace": "default"}}],
        }
        path.write_text(yaml.safe_dump(doc))
        return path
