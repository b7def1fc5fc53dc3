"""``keysafe sync external-secret``: make the External Secrets Operator refresh now.

With the operator, keysafe never writes the Kubernetes Secret: the operator reads the
values itself, every ``refreshInterval`` (commonly an hour). So a rotated value reaches
the pods an hour later, unless someone annotates the ExternalSecret (spec 002: ``kubectl
annotate externalsecret NAME force-sync=$(date +%s) --overwrite``) and restarts the
workloads. This does that, when the scope changed and only then:

- the scope's *versions* are listed (names, versions, tags: never a value) and hashed;
- if the hash differs from the one keysafe left on the ExternalSecret (annotation
  ``keysafe.dev/scope-hash``), both annotations are set in one merge patch: a new
  ``force-sync`` makes the operator reconcile at once (it refreshes whenever the
  object's annotations change), and the new hash records what it was asked to fetch;
- then it waits (``--timeout``) for the operator to report the refresh: its status
  (``refreshTime``, ``syncedResourceVersion``, the ``Ready`` condition) changes, with
  ``Ready`` ``True``; ``Ready`` ``False`` (``SecretSyncedError``: the operator could not
  read a value) is an error naming the reason, and no answer in time means the operator
  is not running;
- then the ``--restart`` workloads are rolled out, as ``sync kubernetes`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from keysafe.errors import BackendUnavailable, KeysafeError, NotFound
from keysafe.kube import ESO_API_VERSION, FORCE_SYNC, KubeSync, PassResult

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from keysafe.models import SecretMetadata

#: What keysafe last asked the operator to fetch: a hash of the scope's versions.
SCOPE_HASH = "keysafe.dev/scope-hash"
GROUP, VERSION = ESO_API_VERSION.split("/")
PLURAL = "externalsecrets"
#: Seconds between looks at the ExternalSecret's status while waiting.
STATUS_POLL = 0.5


def scope_hash(listing: Sequence[SecretMetadata]) -> str:
    """A digest of what the operator would fetch: each secret's path, current version
    and tags (an ``env_var`` tag renames a key). Never a value."""
    rows = sorted((m.path, m.current_version, sorted(m.tags.items())) for m in listing)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _progress(es: dict[str, Any]) -> tuple[str, ...]:
    """What the operator's status says of its last refresh: refreshTime,
    syncedResourceVersion, and the Ready condition's status, reason and transition time.
    A refresh changes at least one of them."""
    status = es.get("status") or {}
    ready = next((c for c in status.get("conditions") or []
                  if isinstance(c, dict) and c.get("type") == "Ready"), {})
    return (str(status.get("refreshTime") or ""), str(status.get("syncedResourceVersion")
                                                      or ""),
            str(ready.get("status") or ""), str(ready.get("reason") or "")[:100],
            str(ready.get("lastTransitionTime") or ""))


class EsoRefresh:
    """One ExternalSecret, refreshed through the official client's CustomObjectsApi."""

    def __init__(self, kube: KubeSync, *, wait: float) -> None:
        self.kube = kube
        self.wait = wait
        self.custom = kube._k8s.client.CustomObjectsApi(kube.api_client)
        self.target = f"externalsecret {kube.namespace}/{kube.name}"

    def read(self) -> dict[str, Any]:
        what = f"read {self.target}"
        try:
            es: dict[str, Any] = self.kube._call(
                what, self.custom.get_namespaced_custom_object, GROUP, VERSION,
                self.kube.namespace, PLURAL, self.kube.name)
        except NotFound:
            raise NotFound(f"{self.target} does not exist (404): render it with `keysafe "
                           "export --format external-secret` and apply it, or check "
                           "--name and --namespace") from None
        return es

    def refresh(self, listing: Sequence[SecretMetadata], *, force: bool = False,
                restart: Iterable[str] = ()) -> PassResult:
        """One pass: ask for a refresh when the scope changed (or ``force``), wait for the
        operator, roll out ``restart``."""
        digest = scope_hash(listing)
        names = sorted(m.path.rsplit("/", 1)[-1] for m in listing)
        es = self.read()
        annotations = (es.get("metadata") or {}).get("annotations") or {}
        result = PassResult(action="unchanged", namespace=self.kube.namespace,
                            name=self.kube.name, keys=names, content_hash=digest,
                            kind="externalsecret")
        if annotations.get(SCOPE_HASH) == digest and not force:
            return result
        before = _progress(es)
        # A new value every time (nanoseconds): the same one twice would not be a change.
        patch = {"metadata": {"annotations": {FORCE_SYNC: str(time.time_ns()),
                                              SCOPE_HASH: digest}}}
        self._patch(patch)
        try:
            self._synced(before)
        except KeysafeError:
            # Not fetched: forget the hash, so the next pass asks again.
            with contextlib.suppress(KeysafeError):
                self._patch({"metadata": {"annotations": {SCOPE_HASH: None}}})
            raise
        result.action = "forced" if annotations.get(SCOPE_HASH) == digest else "refreshed"
        for workload in restart:
            self.kube.restart(workload, result.at)
            result.restarted.append(workload)
        return result

    def _patch(self, patch: dict[str, Any]) -> None:
        self.kube._call(f"annotate {self.target}",
                        self.custom.patch_namespaced_custom_object, GROUP, VERSION,
                        self.kube.namespace, PLURAL, self.kube.name, patch)

    def _synced(self, before: tuple[str, ...]) -> None:
        """Wait for the operator's status to move on from ``before`` (see _progress)."""
        deadline = time.monotonic() + self.wait
        while True:
            es = self.read()
            now = _progress(es)
            if now != before:
                if now[2] == "True":
                    return
                reason = now[3] or "not ready"
                raise KeysafeError(f"the External Secrets Operator could not refresh "
                                   f"{self.target} ({reason}); see `kubectl describe "
                                   f"externalsecret -n {self.kube.namespace} "
                                   f"{self.kube.name}` (the workloads were not restarted)")
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    f"the External Secrets Operator did not refresh {self.target} within "
                    f"{self.wait:g} s of being asked (is it running?); the workloads were "
                    "not restarted")
            time.sleep(STATUS_POLL)
