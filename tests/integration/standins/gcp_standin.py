"""A loopback stand-in for GCP Secret Manager's v1 REST API.

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service.

It serves the calls keysafe's GCP backend makes, as the official
``google-cloud-secret-manager`` client sends them with ``transport="rest"``
(https://cloud.google.com/secret-manager/docs/reference/rest):

- ``projects.secrets``: create (POST ``/v1/projects/P/secrets?secretId=ID``), get,
  list (``pageSize``, ``pageToken``, ``filter``), patch (``updateMask``; ``etag``
  checked), delete (``etag`` checked), ``:addVersion``;
- ``projects.secrets.versions``: get, list (newest first), ``:access``,
  ``:destroy``, ``:disable``, ``:enable`` (``etag`` checked); ``latest`` resolves to
  the highest version number.

Documented behaviour it keeps: version numbers count from 1 per secret and restart
when the secret is deleted and created again; accessing a DISABLED or DESTROYED
version is FAILED_PRECONDITION (HTTP 400); a stale etag is ABORTED (HTTP 409, as
AIP-154 prescribes); secret ids are ``[A-Za-z0-9_-]{1,255}``; label keys
``[a-z][a-z0-9_-]{0,62}``, values ``[a-z0-9_-]{0,63}``, at most 64 labels; annotation
keys and values together under 16 KiB; payloads at most 64 KiB; a client-supplied
``dataCrc32c`` is verified. Errors are ``{"error": {"code", "message", "status"}}``.
Filters support ``name:TEXT`` (substring, optionally quoted) and ``labels.KEY:*``.
Enums are numbers when the client asks for ``$alt=json;enum-encoding=int``.
Authentication is not checked (tests use anonymous credentials).
"""

from __future__ import annotations

import base64
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from standins._http import LoopbackServer, Request, Response

_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_ANNOTATION_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
MAX_PAYLOAD = 65_536
MAX_ANNOTATIONS_BYTES = 16 * 1024
MAX_LABELS = 64
DEFAULT_PAGE = 25
_STATE_NUMBER = {"ENABLED": 1, "DISABLED": 2, "DESTROYED": 3}

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Secret Manager checksums payloads."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _table() -> list[int]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_TABLE = _table()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _etag() -> str:
    return f'"{uuid.uuid4().hex[:14]}"'


@dataclass
class _Version:
    number: int
    data: bytes | None
    create_time: str
    state: str = "ENABLED"
    destroy_time: str | None = None
    etag: str = field(default_factory=_etag)
    checksum: bool = False


@dataclass
class _Secret:
    secret_id: str
    create_time: str
    labels: dict[str, str]
    annotations: dict[str, str]
    replication: dict[str, Any]
    etag: str = field(default_factory=_etag)
    versions: dict[int, _Version] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, message: str, grpc: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.grpc = grpc or _STATUS.get(status, "UNKNOWN")


class GcpSecretManagerStandin(LoopbackServer):
    """Secret Manager for one or more projects, in memory, over loopback HTTP."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], _Secret] = {}
        self.lock = threading.RLock()
        self._int_enums = False

    @property
    def endpoint(self) -> str:
        return self.url

    # -- plumbing ---------------------------------------------------------------------
    def error(self, status: int, message: str, grpc: str | None = None) -> Response:
        return Response(status, {"error": {"code": status, "message": message,
                                           "status": grpc or _STATUS.get(status, "UNKNOWN")}})

    _ROUTES = [
        ("GET", re.compile(r"/v1/projects/([^/]+)/secrets"), "list_secrets"),
        ("POST", re.compile(r"/v1/projects/([^/]+)/secrets"), "create_secret"),
        ("GET", re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)"), "get_secret"),
        ("PATCH", re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)"), "update_secret"),
        ("DELETE", re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)"), "delete_secret"),
        ("POST", re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+):addVersion"),
         "add_version"),
        ("GET", re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions"),
         "list_versions"),
        ("GET", re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions/([^/:]+)"),
         "get_version"),
        ("GET", re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions/([^/:]+):access"),
         "access_version"),
        ("POST", re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions/([^/:]+)"
                            r":(destroy|disable|enable)"), "change_version"),
    ]

    def handle(self, request: Request) -> Response:
        for method, pattern, name in self._ROUTES:
            m = pattern.fullmatch(request.path)
            if m and method == request.method:
                try:
                    with self.lock:
                        # The client asks for enums as numbers ($alt=json;enum-encoding=int).
                        self._int_enums = "enum-encoding=int" in request.query.get("$alt", "")
                        body = getattr(self, "_" + name)(request, *m.groups())
                except ApiError as exc:
                    return self.error(exc.status, str(exc), exc.grpc)
                return Response(200, body)
        return self.error(404, f"no route for {request.method} {request.path}")

    # -- helpers ----------------------------------------------------------------------
    def _secret(self, project: str, secret_id: str) -> _Secret:
        s = self.secrets.get((project, secret_id))
        if s is None:
            raise ApiError(404, f"Secret [projects/{project}/secrets/{secret_id}] not found.")
        return s

    def _version(self, project: str, s: _Secret, ref: str) -> _Version:
        if ref == "latest":
            if not s.versions:
                raise ApiError(404, f"Secret [projects/{project}/secrets/{s.secret_id}] "
                                    "not found or has no versions.")
            return s.versions[max(s.versions)]
        if not ref.isdigit() or int(ref) < 1:
            raise ApiError(400, f"Invalid secret version [{ref}].")
        v = s.versions.get(int(ref))
        if v is None:
            raise ApiError(404, f"Secret Version [projects/{project}/secrets/{s.secret_id}"
                                f"/versions/{ref}] not found.")
        return v

    @staticmethod
    def _check_etag(given: str | None, current: str, what: str) -> None:
        if given and given != current:
            raise ApiError(409, f"The etag provided for {what} does not match its current "
                                "etag.", "ABORTED")

    @staticmethod
    def _check_labels(labels: dict[str, str]) -> None:
        if len(labels) > MAX_LABELS:
            raise ApiError(400, f"A secret may have at most {MAX_LABELS} labels.")
        for k, v in labels.items():
            if not _LABEL_KEY.fullmatch(k) or not isinstance(v, str) \
                    or not _LABEL_VALUE.fullmatch(v):
                raise ApiError(400, f"Invalid label {k!r}: {v!r}.")

    @staticmethod
    def _check_annotations(annotations: dict[str, str]) -> None:
        size = 0
        for k, v in annotations.items():
            if not _ANNOTATION_KEY.fullmatch(k) or not isinstance(v, str):
                raise ApiError(400, f"Invalid annotation key {k!r}.")
            size += len(k.encode()) + len(v.encode())
        if size >= MAX_ANNOTATIONS_BYTES:
            raise ApiError(400, "The total size of annotation keys and values must be less "
                                f"than 16KiB; it is {size} bytes.")

    def _secret_json(self, project: str, s: _Secret) -> dict[str, Any]:
        return {"name": f"projects/{project}/secrets/{s.secret_id}",
                "replication": s.replication, "createTime": s.create_time,
                "labels": dict(s.labels), "annotations": dict(s.annotations),
                "etag": s.etag}

    def _version_json(self, project: str, s: _Secret, v: _Version) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": f"projects/{project}/secrets/{s.secret_id}/versions/{v.number}",
            "createTime": v.create_time,
            "state": _STATE_NUMBER[v.state] if self._int_enums else v.state, "etag": v.etag,
            "replicationStatus": {"automatic": {}},
            "clientSpecifiedPayloadChecksum": v.checksum}
        if v.destroy_time:
            out["destroyTime"] = v.destroy_time
        return out

    @staticmethod
    def _page(items: list[Any], request: Request) -> tuple[list[Any], str | None]:
        size = int(request.query.get("pageSize") or DEFAULT_PAGE)
        start = int(request.query.get("pageToken") or 0)
        chunk = items[start:start + size]
        more = start + size < len(items)
        return chunk, (str(start + size) if more else None)

    @staticmethod
    def _matches(s: _Secret, flt: str) -> bool:
        for term in (t for t in re.split(r"\s+AND\s+|\s+", flt.strip()) if t):
            m = re.fullmatch(r"name:(\"?)(.*)\1", term)
            if m:
                if m.group(2) not in s.secret_id:
                    return False
                continue
            m = re.fullmatch(r"labels\.([a-z0-9_-]+):\*", term)
            if m:
                if m.group(1) not in s.labels:
                    return False
                continue
            raise ApiError(400, f"Invalid filter term {term!r}.")
        return True

    # -- projects.secrets -------------------------------------------------------------
    def _list_secrets(self, request: Request, project: str) -> dict[str, Any]:
        flt = request.query.get("filter", "")
        found = sorted((s for (p, _), s in self.secrets.items() if p == project
                        and (not flt or self._matches(s, flt))), key=lambda s: s.secret_id)
        chunk, token = self._page(found, request)
        out: dict[str, Any] = {"secrets": [self._secret_json(project, s) for s in chunk],
                               "totalSize": len(found)}
        if token:
            out["nextPageToken"] = token
        return out

    def _create_secret(self, request: Request, project: str) -> dict[str, Any]:
        secret_id = request.query.get("secretId", "")
        if not _ID.fullmatch(secret_id):
            raise ApiError(400, f"Invalid secret id [{secret_id}].")
        if (project, secret_id) in self.secrets:
            raise ApiError(409, f"Secret [projects/{project}/secrets/{secret_id}] "
                                "already exists.", "ALREADY_EXISTS")
        body = request.json()
        if "replication" not in body:
            raise ApiError(400, "Secret.replication is required.")
        labels = dict(body.get("labels") or {})
        annotations = dict(body.get("annotations") or {})
        self._check_labels(labels)
        self._check_annotations(annotations)
        s = _Secret(secret_id, _now(), labels, annotations, body["replication"])
        self.secrets[(project, secret_id)] = s
        return self._secret_json(project, s)

    def _get_secret(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        return self._secret_json(project, self._secret(project, secret_id))

    def _update_secret(self, request: Request, project: str,
                       secret_id: str) -> dict[str, Any]:
        s = self._secret(project, secret_id)
        body = request.json()
        self._check_etag(body.get("etag"), s.etag, f"secret {secret_id}")
        mask = [m for m in request.query.get("updateMask", "").split(",") if m]
        if not mask:
            raise ApiError(400, "updateMask is required.")
        labels, annotations = s.labels, s.annotations
        for path in mask:
            if path == "labels":
                labels = dict(body.get("labels") or {})
                self._check_labels(labels)
            elif path == "annotations":
                annotations = dict(body.get("annotations") or {})
                self._check_annotations(annotations)
            else:
                raise ApiError(400, f"Unsupported update mask path {path!r} (stand-in).")
        s.labels, s.annotations, s.etag = labels, annotations, _etag()
        return self._secret_json(project, s)

    def _delete_secret(self, request: Request, project: str,
                       secret_id: str) -> dict[str, Any]:
        s = self._secret(project, secret_id)
        self._check_etag(request.query.get("etag"), s.etag, f"secret {secret_id}")
        del self.secrets[(project, secret_id)]
        return {}

    def _add_version(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        s = self._secret(project, secret_id)
        payload = request.json().get("payload") or {}
        data = base64.b64decode(payload.get("data") or "")
        if len(data) > MAX_PAYLOAD:
            raise ApiError(400, f"Secret Payload cannot be larger than 64KiB "
                                f"(it is {len(data)} bytes).")
        given = payload.get("dataCrc32c")
        if given is not None and int(given) != crc32c(data):
            raise ApiError(400, "Checksum mismatch: the dataCrc32c given does not match "
                                "the payload.")
        number = max(s.versions, default=0) + 1
        v = _Version(number, data, _now(), checksum=given is not None)
        s.versions[number] = v
        return self._version_json(project, s, v)

    # -- projects.secrets.versions ----------------------------------------------------
    def _list_versions(self, request: Request, project: str,
                       secret_id: str) -> dict[str, Any]:
        s = self._secret(project, secret_id)
        newest_first = [s.versions[n] for n in sorted(s.versions, reverse=True)]
        chunk, token = self._page(newest_first, request)
        out: dict[str, Any] = {"versions": [self._version_json(project, s, v) for v in chunk],
                               "totalSize": len(newest_first)}
        if token:
            out["nextPageToken"] = token
        return out

    def _get_version(self, request: Request, project: str, secret_id: str,
                     ref: str) -> dict[str, Any]:
        s = self._secret(project, secret_id)
        return self._version_json(project, s, self._version(project, s, ref))

    def _access_version(self, request: Request, project: str, secret_id: str,
                        ref: str) -> dict[str, Any]:
        s = self._secret(project, secret_id)
        v = self._version(project, s, ref)
        name = f"projects/{project}/secrets/{secret_id}/versions/{v.number}"
        if v.state != "ENABLED" or v.data is None:
            raise ApiError(400, f"Secret Version [{name}] is in {v.state} state.",
                           "FAILED_PRECONDITION")
        return {"name": name, "payload": {"data": base64.b64encode(v.data).decode(),
                                          "dataCrc32c": str(crc32c(v.data))}}

    def _change_version(self, request: Request, project: str, secret_id: str, ref: str,
                        verb: str) -> dict[str, Any]:
        s = self._secret(project, secret_id)
        v = self._version(project, s, ref)
        self._check_etag(request.json().get("etag"), v.etag, f"version {v.number}")
        name = f"projects/{project}/secrets/{secret_id}/versions/{v.number}"
        if v.state == "DESTROYED":
            raise ApiError(400, f"Secret Version [{name}] is in DESTROYED state.",
                           "FAILED_PRECONDITION")
        if verb == "destroy":
            v.state, v.data, v.destroy_time = "DESTROYED", None, _now()
        elif verb == "disable":
            v.state = "DISABLED"
        else:
            v.state = "ENABLED"
        v.etag = _etag()
        return self._version_json(project, s, v)

    # -- for tests --------------------------------------------------------------------
    def raw_secret(self, project: str, secret_id: str) -> _Secret | None:
        with self.lock:
            return self.secrets.get((project, secret_id))
