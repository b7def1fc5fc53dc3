"""Multi-step jobs behind ``keysafe init``, ``rekey``, ``doctor`` and ``test-secrets``.

They are library functions (the CLI only renders their results) so that operators can
script them and tests can drive them without a terminal. None of them ever returns or
reports a secret value: self-test values are random, compared in place and dropped.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from keysafe.backends.base import Rekeyable
from keysafe.crypto.wrapped import looks_wrapped
from keysafe.errors import ConfigError, Conflict, KeysafeError, NotFound, Unsupported

#: Stores that keysafe encrypts itself, with its master key.
ENVELOPE_BACKENDS = ("sqlite", "postgres")

if TYPE_CHECKING:
    from keysafe.backends.base import Progress
    from keysafe.config import Settings
    from keysafe.crypto.kms import Kms
    from keysafe.manager.manager import SecretManager

__all__ = [
    "SELFTEST_ORG",
    "Check",
    "Diagnosis",
    "InitResult",
    "RekeyResult",
    "SelfTestResult",
    "Step",
    "WrapResult",
    "diagnose",
    "initialise",
    "rekey",
    "rewrap_key_ring",
    "self_test",
    "unwrap_key_ring",
    "wrap_key_ring",
]

#: The org the self-test writes to; nothing else should live there.
SELFTEST_ORG = "keysafe-selftest"
_SELFTEST_PREFIX = "selftest-"


def _open(settings: Settings) -> SecretManager:
    from keysafe.manager.manager import SecretManager

    mgr = SecretManager.from_settings(settings)
    mgr.client = "keysafe-cli"
    return mgr


def _mode_problem(path: Path, *, expected: int = 0o600) -> str | None:
    """Why ``path``'s permissions are too open (or not its owner's), or None."""
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.getuid():
        return f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    if mode & 0o077:
        return (f"{path} has mode {mode:04o}; other users may read it: "
                f"run `chmod {expected:o} {path}`")
    return None


# -- init ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InitResult:
    backend: str
    home: Path
    key_source: Literal["file", "KEYSAFE_MASTER_KEY", "none"]
    key_file: Path | None
    key_created: bool
    active_key_id: str | None
    store: Path | None
    store_created: bool
    warnings: list[str] = field(default_factory=list)
    #: The KMS key the ring is wrapped by (KEYSAFE_MASTER_KEY_KMS), else None.
    kms: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("home", "key_file", "store"):
            d[k] = None if d[k] is None else str(d[k])
        return d


def initialise(settings: Settings) -> InitResult:
    """Create KEYSAFE_HOME, the master key file (mode 0600) and the embedded store.

    Idempotent: what exists is kept as it is (a key file is never overwritten). With
    KEYSAFE_MASTER_KEY set no key file is made. Other backends are only pinged. An
    explicit init may create a key file for any environment, unlike implicit first use.
    With KEYSAFE_MASTER_KEY_KMS set, a new key file is written wrapped by that key.
    Raises ConfigError (unreadable key file, bad KEYSAFE_MASTER_KEY, a ring not wrapped
    by the configured KMS key) or BackendUnavailable (the store or the KMS).
    """
    from keysafe.crypto.keys import KeyRing, load_keyring
    from keysafe.crypto.kms import kms_from_settings

    if settings.backend != "sqlite":
        with _open(settings) as mgr:
            mgr.ping()
        return InitResult(settings.backend, settings.home, "none", None, False, None,
                          None, False)
    kms = kms_from_settings(settings)
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    warnings: list[str] = []
    key_file: Path | None
    if settings.master_key:
        ring = KeyRing.from_env_value(settings.master_key, kms)
        source: Literal["file", "KEYSAFE_MASTER_KEY", "none"] = "KEYSAFE_MASTER_KEY"
        key_file, key_created = None, False
    else:
        key_file = settings.key_file
        key_created = not key_file.is_file()
        ring = load_keyring(None, key_file, create=True, announce=False, kms=kms)
        source = "file"
        problem = _mode_problem(key_file)
        if problem:
            warnings.append(problem)
    store = settings.sqlite_path
    store_created = not store.exists()
    with _open(settings) as mgr:
        mgr.ping()
        if store_created or key_created:
            mgr.record("init", None, "ok", durable=True,
                       detail={"key_created": key_created, "store_created": store_created})
    return InitResult("sqlite", settings.home, source, key_file, key_created, ring.active,
                      store, store_created, warnings,
                      kms.reference if kms is not None else None)


# -- rekey --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RekeyResult:
    active_key_id: str
    #: Key ids no data key uses any more: dropped from the key file, or (rewrap-only)
    #: safe to drop from KEYSAFE_MASTER_KEY once backups no longer need them.
    retired_key_ids: list[str]
    rewrapped: int
    key_file: Path | None
    rewrap_only: bool
    #: The KMS key the saved ring is wrapped by, else None.
    kms: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key_file"] = None if self.key_file is None else str(self.key_file)
        return d


def _env_key_message(settings: Settings) -> str:
    from keysafe.crypto.keys import KeyRing

    if looks_wrapped(settings.master_key):
        return (
            "KEYSAFE_MASTER_KEY holds a wrapped key ring, so keysafe cannot store a new "
            "master key for you. Rotate through a key file: (1) write the value to a file "
            "(mode 0600) and set KEYSAFE_MASTER_KEY_FILE to it, with KEYSAFE_MASTER_KEY "
            "unset; (2) run `keysafe rekey` (the file stays wrapped); (3) put the file's new "
            "content in KEYSAFE_MASTER_KEY (e.g. the Kubernetes Secret) and restart.")
    active = KeyRing.from_env_value(settings.master_key or "").active
    return (
        "KEYSAFE_MASTER_KEY is set, so keysafe cannot store a new master key for you. "
        "To rotate it: (1) make a new 32-byte key, e.g. "
        "`python -c \"import base64, os; print(base64.b64encode(os.urandom(32)).decode())\"`; "
        "(2) set KEYSAFE_MASTER_KEY=\"newkid:NEWB64,<old entries unchanged>\" with the new "
        f"key first (the active key id now is {active}); "
        "(3) run `keysafe rekey --rewrap-only`; "
        "(4) then remove the old key from KEYSAFE_MASTER_KEY."
    )


def _key_ids_in_use(backend: object) -> set[str]:
    if not isinstance(backend, Rekeyable):
        raise Unsupported(f"cannot check which master keys the {backend!r} store uses")
    return backend.key_ids_in_use()


def _rewrap(settings: Settings, progress: Progress | None) -> tuple[str, list[str], int]:
    """Re-wrap every data key to the ring's active key; (active, ring ids, count).

    Raises Conflict if a row still uses another key afterwards (a process holding the
    old ring wrote during the re-wrap).
    """
    with _open(settings) as mgr:
        backend = mgr.backend
        if not isinstance(backend, Rekeyable):
            raise Unsupported(f"the {backend.name} backend has no master key to rotate")
        ring = backend.envelope.keyring  # type: ignore[attr-defined]  # both envelope stores
        n = mgr.rekey(progress)
        leftover = sorted(_key_ids_in_use(backend) - {ring.active})
    if leftover:
        raise Conflict(
            f"data keys are still wrapped by old master key(s) {', '.join(leftover)} after "
            "the re-wrap (did a process still using the old key ring write meanwhile?); "
            "every key is kept. Stop such processes and run `keysafe rekey --rewrap-only`.")
    return ring.active, ring.ids, n


def rekey(settings: Settings, *, rewrap_only: bool = False,
          progress: Progress | None = None) -> RekeyResult:
    """Rotate the master key of the embedded store without changing any value.

    In order, so that a crash at any point strands nothing: the key file is saved with
    the new key active *and* the old ones; every data key is re-wrapped to the new key;
    no row may still use an old key; only then is the file saved without the old keys.
    Long-running processes must be restarted afterwards to pick up the new key file.

    ``rewrap_only`` skips making a key: it re-wraps to the ring's active key (the way to
    rotate a KEYSAFE_MASTER_KEY, where keysafe cannot store keys) and leaves the key
    source as it is, reporting the ids no longer in use.

    With KEYSAFE_MASTER_KEY_KMS set the key file is read and saved wrapped by that key
    (each save asks the KMS to encrypt, then to decrypt its answer, before the file is
    replaced).

    Raises ConfigError (KEYSAFE_MASTER_KEY without ``rewrap_only``, no key file),
    Unsupported (not the embedded store), Conflict (an old key still in use afterwards),
    and the KMS's errors (BackendUnavailable, PermissionDenied, IntegrityError).
    """
    if settings.backend not in ENVELOPE_BACKENDS:
        raise Unsupported(
            f"rekey rotates the master key of keysafe's own stores (sqlite, postgres); "
            f"the {settings.backend} backend manages its own encryption keys")
    if rewrap_only:
        active, ids, n = _rewrap(settings, progress)
        key_file = None if settings.master_key else settings.key_file
        return RekeyResult(active, [k for k in ids if k != active], n, key_file, True)
    if settings.master_key:
        raise ConfigError(_env_key_message(settings))

    from keysafe.crypto.keys import KeyRing
    from keysafe.crypto.kms import kms_from_settings

    kms = kms_from_settings(settings)
    key_file = settings.key_file
    if not key_file.is_file():
        raise ConfigError(f"no master key file at {key_file}; run `keysafe init` first")
    ring = KeyRing.from_file(key_file, kms)
    old_ids = ring.ids
    both, new_id = ring.with_new_active()
    both.save(key_file)
    active, _, n = _rewrap(settings, progress)
    if active != new_id:
        raise ConfigError(f"the key file {key_file} changed during the rekey; "
                          "it was left as it is now")
    both.without(old_ids).save(key_file)
    return RekeyResult(new_id, old_ids, n, key_file, False,
                       kms.reference if kms is not None else None)


# -- wrap / unwrap (KEYSAFE_MASTER_KEY_KMS) --------------------------------------------
@dataclass(frozen=True, slots=True)
class WrapResult:
    action: Literal["wrap", "unwrap", "rewrap"]
    kms: str
    #: The key file rewritten (or found already so); None: the ring is in
    #: KEYSAFE_MASTER_KEY.
    key_file: Path | None
    changed: bool
    active_key_id: str
    key_ids: list[str]
    #: ``wrap`` or ``rewrap`` of KEYSAFE_MASTER_KEY: the wrapped ring to put in its
    #: place (the KMS's ciphertext, not secret); None otherwise.
    wrapped_value: str | None = None

    @property
    def where(self) -> str:
        """Where the ring is, for people."""
        return "KEYSAFE_MASTER_KEY" if self.key_file is None else str(self.key_file)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key_file"] = None if self.key_file is None else str(self.key_file)
        return d


def _kms_required(settings: Settings, action: str) -> Kms:
    from keysafe.crypto.kms import REFERENCE_FORMS, kms_from_settings

    kms = kms_from_settings(settings)
    if kms is None:
        raise ConfigError(f"{action} needs KEYSAFE_MASTER_KEY_KMS: the KMS key "
                          f"({REFERENCE_FORMS})")
    return kms


def settings_as_found(settings: Settings, from_reference: str | None = None) -> Settings:
    """``settings`` with the KMS setting that opens the key file as it is now (before a
    ``master-key`` command changes it): the KEYSAFE_MASTER_KEY_KMS key, or
    ``from_reference``, when it is wrapped; none when it holds a plaintext ring."""
    if not _is_wrapped_file(settings.key_file):
        return settings.with_overrides(master_key_kms=None)
    return settings.with_overrides(master_key_kms=from_reference or settings.master_key_kms)


def _is_wrapped_file(key_file: Path) -> bool:
    import json

    from keysafe.crypto import wrapped

    if not key_file.is_file():
        raise ConfigError(f"no master key file at {key_file}; run `keysafe init` first")
    try:
        return wrapped.is_wrapped(json.loads(key_file.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read master key file {key_file}: {exc}") from None


def wrap_key_ring(settings: Settings) -> WrapResult:
    """Wrap the plaintext master key ring with the KEYSAFE_MASTER_KEY_KMS key.

    The key file is replaced atomically (a crash leaves the old plaintext file or the
    new wrapped one) and only after the KMS has decrypted the new ciphertext back. A
    ring in KEYSAFE_MASTER_KEY cannot be rewritten: the wrapped value to put in its
    place is returned instead. Already wrapped by this key: nothing changes.

    Raises ConfigError (no KMS configured, no key file, wrapped by another key) and
    the KMS's errors; the key file is then unchanged.
    """
    import json

    from keysafe.crypto.keys import KeyRing

    kms = _kms_required(settings, "wrapping the master key ring")
    if settings.master_key:
        if looks_wrapped(settings.master_key):
            ring = KeyRing.from_env_value(settings.master_key, kms)
            return WrapResult("wrap", kms.reference, None, False, ring.active, ring.ids)
        ring = KeyRing.from_env_value(settings.master_key).with_kms(kms)
        value = json.dumps(ring.to_document(), sort_keys=True)
        return WrapResult("wrap", kms.reference, None, False, ring.active, ring.ids, value)
    key_file = settings.key_file
    if _is_wrapped_file(key_file):
        ring = KeyRing.from_file(key_file, kms)  # the same key, and it still decrypts
        return WrapResult("wrap", kms.reference, key_file, False, ring.active, ring.ids)
    ring = KeyRing.from_file(key_file).with_kms(kms)
    ring.save(key_file)
    return WrapResult("wrap", kms.reference, key_file, True, ring.active, ring.ids)


def unwrap_key_ring(settings: Settings) -> WrapResult:
    """Turn the key file's wrapped ring back into a plaintext ring (mode 0600),
    atomically. Unset KEYSAFE_MASTER_KEY_KMS afterwards. Already plaintext: nothing
    changes.

    Raises ConfigError (no KMS configured, no key file, wrapped by another key, a
    wrapped KEYSAFE_MASTER_KEY: that is unwrapped through a key file, never printed)
    and the KMS's errors; the key file is then unchanged.
    """
    from keysafe.crypto.keys import KeyRing

    kms = _kms_required(settings, "unwrapping the master key ring")
    if settings.master_key:
        if looks_wrapped(settings.master_key):
            raise ConfigError(
                "KEYSAFE_MASTER_KEY holds the wrapped key ring; keysafe never prints "
                "plaintext keys. Write the value to a file (mode 0600), set "
                "KEYSAFE_MASTER_KEY_FILE to it, unset KEYSAFE_MASTER_KEY and run "
                "`keysafe master-key unwrap` again")
        ring = KeyRing.from_env_value(settings.master_key)
        return WrapResult("unwrap", kms.reference, None, False, ring.active, ring.ids)
    key_file = settings.key_file
    if not _is_wrapped_file(key_file):
        ring = KeyRing.from_file(key_file)
        return WrapResult("unwrap", kms.reference, key_file, False, ring.active, ring.ids)
    ring = KeyRing.from_file(key_file, kms).with_kms(None)
    ring.save(key_file)
    return WrapResult("unwrap", kms.reference, key_file, True, ring.active, ring.ids)


def rewrap_key_ring(settings: Settings, from_reference: str | None = None) -> WrapResult:
    """Decrypt the wrapped ring and encrypt it again, in memory, with the
    KEYSAFE_MASTER_KEY_KMS key: under its newest version after a KMS key rotation, or
    (``from_reference``: the KMS reference that wrapped it) under another KMS key. The
    plaintext ring never touches the disk. The key file is replaced atomically after the
    KMS has decrypted the new form back; a wrapped KEYSAFE_MASTER_KEY is not changed:
    the new value to put in its place is returned.

    Raises ConfigError (no KMS configured, a plaintext ring: that is ``wrap``'s job, a
    ring wrapped by another key than ``from_reference`` names) and the KMS's errors;
    the key file is then unchanged.
    """
    import json

    from keysafe.crypto.keys import KeyRing
    from keysafe.crypto.kms import kms_for

    kms = _kms_required(settings, "re-wrapping the master key ring")
    old = kms_for(from_reference, settings) if from_reference else kms
    plain = ("holds a plaintext key ring: `keysafe master-key wrap` wraps it (nothing was "
             "changed)")
    if settings.master_key:
        if not looks_wrapped(settings.master_key):
            raise ConfigError(f"KEYSAFE_MASTER_KEY {plain}")
        ring = KeyRing.from_env_value(settings.master_key, old).with_kms(kms)
        value = json.dumps(ring.to_document(), sort_keys=True)
        return WrapResult("rewrap", kms.reference, None, False, ring.active, ring.ids, value)
    key_file = settings.key_file
    if not _is_wrapped_file(key_file):
        raise ConfigError(f"{key_file} {plain}")
    ring = KeyRing.from_file(key_file, old).with_kms(kms)
    ring.save(key_file)
    return WrapResult("rewrap", kms.reference, key_file, True, ring.active, ring.ids)


# -- doctor -------------------------------------------------------------------------
CheckStatus = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    #: The KeysafeError code behind a failure (the CLI maps it to an exit status).
    error_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    settings: list[tuple[str, str, str]]
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "settings": [{"setting": s, "value": v, "source": src}
                         for s, v, src in self.settings],
            "checks": [c.to_dict() for c in self.checks],
        }


def _fail(name: str, exc: Exception) -> Check:
    if isinstance(exc, KeysafeError):
        return Check(name, "fail", exc.message, exc.code)
    if isinstance(exc, OSError):
        return Check(name, "fail", f"{exc.strerror}: {exc.filename}", "config_error")
    return Check(name, "fail", f"unexpected {type(exc).__name__}", "error")


def diagnose(settings: Settings) -> Diagnosis:
    """Effective settings with their sources, and checks of the key, store and backend.

    Creates nothing: an uninitialised embedded store is reported, not made.
    """
    checks: list[Check] = []
    cfg = settings.config_file
    checks.append(Check("config file", "ok",
                        str(cfg) if cfg else "none found (environment and defaults only)"))
    checks.extend(_server_checks(settings))
    sqlite = settings.backend == "sqlite"
    key_ok = _check_key(settings, checks, sqlite)
    store_ok = True
    if sqlite:
        db = settings.sqlite_path
        if not db.exists():
            checks.append(Check("store", "warn", f"{db} does not exist yet: run `keysafe init`"))
            store_ok = False
        else:
            problem = _mode_problem(db)
            checks.append(Check("store", "warn", problem) if problem else
                          Check("store", "ok", str(db)))
    if not (key_ok and store_ok):
        checks.append(Check("backend", "warn", f"{settings.backend}: not checked (see above)"))
        return Diagnosis(settings.describe(), checks)
    try:
        with _open(settings) as mgr:
            t0 = time.perf_counter()
            mgr.ping()
            ms = (time.perf_counter() - t0) * 1000
            checks.append(Check("backend", "ok", f"{settings.backend}: reachable "
                                                 f"(ping {ms:.1f} ms)"))
            if settings.backend in ENVELOPE_BACKENDS:
                checks.append(_check_keys_in_use(mgr))
    except Exception as exc:
        checks.append(_fail("backend", exc))
    return Diagnosis(settings.describe(), checks)


def _server_checks(settings: Settings) -> list[Check]:
    """What ``keysafe serve`` would refuse or warn about in its own settings."""
    out = []
    if settings.jwt_trust_file:
        try:
            from keysafe.server.trust import trust_verifier

            trusts = trust_verifier(settings)
            n = len(trusts.trusts) if trusts is not None else 0
            out.append(Check("workload identity", "ok",
                             f"{n} trust(s) from {settings.jwt_trust_file}"))
        except KeysafeError as exc:
            out.append(_fail("workload identity", exc))
        except ImportError:
            out.append(Check("workload identity", "warn", "the server extra is not "
                             "installed: pip install 'keysafe[server]'"))
    if settings.event_changes and not settings.event_webhooks:
        out.append(Check("change events", "warn", "KEYSAFE_EVENT_CHANGES is set but "
                         "KEYSAFE_EVENT_WEBHOOKS is not: no change event is sent"))
    if settings.audit_anchor_interval > 0 and not (settings.audit_anchor_file
                                                   or settings.event_webhooks):
        out.append(Check("audit anchors", "warn",
                         "KEYSAFE_AUDIT_ANCHOR_INTERVAL is set but anchors would reach only "
                         "the server's log: set KEYSAFE_AUDIT_ANCHOR_FILE or "
                         "KEYSAFE_EVENT_WEBHOOKS"))
    return out


def _check_key(settings: Settings, checks: list[Check], sqlite: bool) -> bool:
    """Append the master-key check; False when the store cannot be opened. A wrapped
    ring is unwrapped here, so the check also proves the KMS answers."""
    from keysafe.crypto.keys import KeyRing
    from keysafe.crypto.kms import kms_from_settings

    kms: Kms | None = None
    try:
        kms = kms_from_settings(settings)
    except KeysafeError as exc:
        checks.append(_fail("master key", exc))
        return False
    how = f", wrapped by KMS {kms.reference}" if kms is not None else ""
    if settings.master_key:
        try:
            ring = KeyRing.from_env_value(settings.master_key, kms)
        except KeysafeError as exc:
            checks.append(_fail("master key", exc))
            return False
        checks.append(Check("master key", "ok", f"from KEYSAFE_MASTER_KEY{how}; active key "
                                                f"id {ring.active}, {len(ring.ids)} key(s)"))
        return True
    key_file = settings.key_file
    if not key_file.is_file():
        if settings.backend not in ENVELOPE_BACKENDS:
            checks.append(Check("master key", "ok",
                                f"not used by the {settings.backend} backend"))
            return True
        if not sqlite:
            if settings.profile in ("local", "test"):
                # Opening the store would create the key and record it in the database:
                # doctor creates nothing, so the backend is not checked.
                checks.append(Check("master key", "warn", f"{key_file} does not exist yet; "
                                    "it is created on first use (local and test only)"))
                return False
            checks.append(Check("master key", "fail",
                                f"the {settings.backend} backend needs KEYSAFE_MASTER_KEY "
                                "(the same on every replica) outside local and test",
                                "config_error"))
            return False
        if settings.sqlite_path.exists():
            checks.append(Check("master key", "fail",
                                f"the store {settings.sqlite_path} exists but the key file "
                                f"{key_file} does not: its values cannot be read; restore "
                                "the key file from your backup", "config_error"))
        else:
            checks.append(Check("master key", "warn",
                                f"{key_file} does not exist yet: run `keysafe init`"))
        return False
    try:
        ring = KeyRing.from_file(key_file, kms)
    except KeysafeError as exc:
        checks.append(_fail("master key", exc))
        return False
    problem = _mode_problem(key_file)
    detail = f"{key_file}{how}; active key id {ring.active}, {len(ring.ids)} key(s)"
    checks.append(Check("master key", "warn", f"{problem}") if problem else
                  Check("master key", "ok", f"{detail} (mode 0600)"))
    return True


def _check_keys_in_use(mgr: SecretManager) -> Check:
    backend = mgr.backend
    if not isinstance(backend, Rekeyable) or not hasattr(backend, "envelope"):
        return Check("key ids in use", "ok", "not applicable")
    ring = backend.envelope.keyring
    used = backend.key_ids_in_use()
    missing = sorted(used - set(ring.ids))
    if missing:
        return Check("key ids in use", "fail",
                     f"data keys wrapped by master key(s) {', '.join(missing)}, which the "
                     "key ring lacks: those values cannot be read", "config_error")
    idle = sorted(set(ring.ids) - used - {ring.active})
    if idle:
        return Check("key ids in use", "warn",
                     f"key(s) {', '.join(idle)} wrap no data key; after a backup check, "
                     "drop them (`keysafe rekey` does this for a key file)")
    return Check("key ids in use", "ok", ", ".join(sorted(used)) or "no values stored yet")


# -- self-test (spec 000's test_secrets) -----------------------------------------------
StepStatus = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    status: StepStatus
    detail: str = ""
    ms: float = 0.0
    error_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SelfTestResult:
    backend: str
    org: str
    steps: list[Step]

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    @property
    def first_failure(self) -> Step | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "backend": self.backend, "org": self.org,
                "steps": [s.to_dict() for s in self.steps]}


class _Mismatch(Exception):
    """A step read back something other than what it wrote (never says what)."""


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise _Mismatch(what)


def self_test(mgr: SecretManager, *, cleanup: bool = False,
              org: str = SELFTEST_ORG) -> SelfTestResult:
    """Put, has, get, versions, JSON credentials, delete and restore on the configured
    store, in ``org``, with random values that are never returned or shown.

    Stops at the first failed step (the rest are skipped). A step the backend cannot do
    (Unsupported) is skipped, not failed. With ``cleanup`` every self-test secret in
    ``org`` is purged afterwards, including leftovers of earlier runs, even after a
    failure.
    """
    run = secrets.token_hex(4)
    plain = f"{_SELFTEST_PREFIX}{run}-value"
    creds = f"{_SELFTEST_PREFIX}{run}-credentials"
    v1, v2 = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    c1 = {"bot_token": secrets.token_urlsafe(24), "signing_secret": secrets.token_hex(16)}
    new_bot = secrets.token_urlsafe(24)
    steps: list[Step] = []
    failed = False

    def step(name: str, fn: Callable[[], str]) -> None:
        nonlocal failed
        if failed:
            steps.append(Step(name, "skipped", "an earlier step failed"))
            return
        t0 = time.perf_counter()
        try:
            detail = fn()
        except Unsupported as exc:
            steps.append(Step(name, "skipped", exc.message, _ms(t0)))
            return
        except _Mismatch as exc:
            failed = True
            steps.append(Step(name, "failed", str(exc), _ms(t0), "integrity_error"))
            return
        except KeysafeError as exc:
            failed = True
            steps.append(Step(name, "failed", exc.message, _ms(t0), exc.code))
            return
        except Exception as exc:
            failed = True
            steps.append(Step(name, "failed", f"unexpected {type(exc).__name__}", _ms(t0),
                              "error"))
            return
        steps.append(Step(name, "ok", detail, _ms(t0)))

    def put() -> str:
        info = mgr.put(plain, v1, org, expected_version=0, check_format=False,
                       description="keysafe self-test", secret_type="generic")
        _expect(info.version == 1, f"first write made version {info.version}, not 1")
        return f"{mgr.path(plain, org)} version 1"

    def has() -> str:
        _expect(mgr.has(plain, org), "has() is false right after put")
        _expect(not mgr.has(f"{plain}-absent", org), "has() is true for a missing secret")
        return "present; a missing name is absent"

    def get() -> str:
        _expect(mgr.get(plain, org, fresh=True) == v1,
                "the value read back differs from the value written")
        return "value matches (read from the store, not the cache)"

    def overwrite() -> str:
        info = mgr.put(plain, v2, org, expected_version=1, check_format=False)
        _expect(info.version == 2, f"second write made version {info.version}, not 2")
        try:
            mgr.put(plain, v1, org, expected_version=1, check_format=False)
        except Conflict:
            pass
        else:
            raise _Mismatch("a stale check-and-set write was accepted")
        _expect(mgr.get(plain, org, fresh=True) == v2,
                "the value read back differs from the value written")
        return "version 2; a stale check-and-set write was refused"

    def versions() -> str:
        got = [v.version for v in mgr.versions(plain, org)]
        _expect(got[-2:] == [1, 2], f"versions are {got}, expected 1 and 2")
        _expect(mgr.get(plain, org, version=1) == v1,
                "version 1 read back differs from what was written")
        return f"{len(got)} versions; version 1 still readable"

    def put_json() -> str:
        info = mgr.put_json(creds, c1, org, description="keysafe self-test credentials")
        return f"{mgr.path(creds, org)} version {info.version}"

    def update_json() -> str:
        info = mgr.update_json(creds, {"bot_token": new_bot}, org)
        return f"bot_token replaced, other fields kept: version {info.version}"

    def get_json() -> str:
        data = mgr.get_json(creds, org, fresh=True)
        _expect(data == {**c1, "bot_token": new_bot},
                "the credentials read back differ from those written")
        _expect(mgr.get_json_field(creds, "signing_secret", org) == c1["signing_secret"],
                "one credential field read back differs from the one written")
        return f"{len(data)} fields match"

    def delete() -> str:
        mgr.delete(plain, org)
        _expect(not mgr.has(plain, org), "has() is true after delete")
        try:
            mgr.get(plain, org, fresh=True)
        except NotFound:
            pass
        else:
            raise _Mismatch("a deleted secret could still be read")
        return "soft-deleted; reads now fail with not found"

    def restore() -> str:
        mgr.restore(plain, org)
        _expect(mgr.get(plain, org, fresh=True) == v2,
                "the restored value differs from the value written")
        return "restored with its value"

    step("put", put)
    step("has", has)
    step("get", get)
    step("put new version (check-and-set)", overwrite)
    step("versions", versions)
    step("put JSON credentials", put_json)
    step("update JSON credentials", update_json)
    step("get JSON credentials", get_json)
    step("delete", delete)
    step("restore", restore)
    if cleanup:
        failed = False  # clean up whatever happened before
        step("cleanup", lambda: _cleanup(mgr, org))
    return SelfTestResult(mgr.backend.name, org, steps)


def _cleanup(mgr: SecretManager, org: str) -> str:
    """Purge every self-test secret in ``org`` (this run's and earlier runs')."""
    def mine() -> list[str]:
        return [m.path for m in mgr.list(org, include_deleted=True)
                if mgr.parse(m.path).name.startswith(_SELFTEST_PREFIX)]

    paths = mine()
    for path in paths:
        try:
            mgr.delete(path, force=True)
        except NotFound:
            continue
    left = mine()
    _expect(not left, f"{len(left)} self-test secret(s) remain after cleanup")
    return f"purged {len(paths)} self-test secret(s); none left"


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
