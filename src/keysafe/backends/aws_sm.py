"""AWS Secrets Manager: keysafe's path is the secret's name, the value its SecretString.

How keysafe's model maps onto Secrets Manager's (docs/backends/aws.md has the whole
story):

- Versions. Each version keysafe writes carries a staging label ``keysafe-v{n}``;
  AWSCURRENT marks the current one, as for every other Secrets Manager client. A
  current version without such a label (written by another tool, or by a keysafe
  writer that stopped between its two steps) counts as the highest labelled number
  plus one, and the next keysafe write labels it. ``max_versions`` is honoured by
  taking the label off older versions: Secrets Manager then treats them as deprecated
  and deletes them itself (not at once).
- Check-and-set. The new value goes in under a temporary label of its own, then
  AWSCURRENT is moved to it with ``RemoveFromVersionId`` naming the version the writer
  saw as current. Secrets Manager refuses that move if AWSCURRENT has moved meanwhile,
  so of two writers that saw the same version exactly one wins; the loser's version is
  left unlabelled (deprecated) and it gets Conflict. ``ClientRequestToken`` (the new
  VersionId) makes every retried call idempotent.
- Soft delete is DeleteSecret with a recovery window (7-30 days), restore is
  RestoreSecret, purge is ForceDeleteWithoutRecovery. Secrets Manager cannot destroy
  one version's value, so this backend lists versions (``Versioned``) but has no
  ``destroy`` (not ``Destroyable``).
- Metadata: the description is the secret's Description; created/updated stamps,
  the secret type, rotation days, expiry and last rotation are tags under
  ``keysafe:``; user tags are plain tags.
"""

from __future__ import annotations

import builtins
import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keysafe.backends import _aws
from keysafe.backends._aws import Refused, check_size, check_user_tags, stamp, tag_list
from keysafe.backends.base import NamesArePaths, WriteContext, check_cas, not_found
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidValue,
    KeysafeError,
    Unsupported,
)
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

if TYPE_CHECKING:
    from keysafe.config import Settings

STORE = "AWS Secrets Manager"
#: Secrets Manager's own limits.
MAX_VALUE_BYTES = 65_536
MAX_NAME = 512
MAX_DESCRIPTION = 2048
#: Staging labels are limited to 20 per secret, across its versions. AWSCURRENT,
#: AWSPREVIOUS, one temporary label per write in flight and one label per kept version
#: must fit, so at most 15 versions are kept.
MAX_KEPT_VERSIONS = 15

_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]+")
_LABEL = "keysafe-v"
_PENDING = "keysafe-pending-"
_CURRENT = "AWSCURRENT"
_PREVIOUS = "AWSPREVIOUS"
_CREATED = _aws.TAG_PREFIX + "created"
_UPDATED = _aws.TAG_PREFIX + "updated"
_DELETED = _aws.TAG_PREFIX + "deleted"
_VERSION = _aws.TAG_PREFIX + "v:"
#: Rounds of describe-then-move an unconditional write makes before giving up.
_ROUNDS = 25
_MOVE_REFUSED = frozenset({"InvalidParameterException", "InvalidRequestException"})


@contextlib.contextmanager
def _committed(path: str, version: int) -> Iterator[None]:
    """Bookkeeping after the value became current. A failure here must not read as a
    failed write (a retry would add a duplicate version): the value is in, and an
    unlabelled current version still gets the right number (see _State)."""
    try:
        yield
    except KeysafeError as exc:
        raise KeysafeError(f"{path}: the value was written as version {version}, but "
                           f"updating its labels or metadata failed ({exc.code}); the next "
                           "write completes the labels", path=path) from exc


def _label(n: int) -> str:
    return f"{_LABEL}{n}"


def _label_number(labels: builtins.list[str] | None) -> int | None:
    found = [int(x[len(_LABEL):]) for x in labels or ()
             if x.startswith(_LABEL) and x[len(_LABEL):].isdigit()]
    return max(found) if found else None


@dataclass(frozen=True)
class _State:
    """One DescribeSecret (or ListSecrets) entry, decoded."""

    name: str
    raw: dict[str, Any]
    tags: dict[str, str]
    numbered: dict[str, int]  # VersionId -> keysafe version, from its label
    virtual: dict[str, int]  # the same for staged versions another tool wrote
    current_vid: str | None
    current: int
    deleted: bool

    @classmethod
    def of(cls, entry: dict[str, Any]) -> _State:
        stages = entry.get("VersionIdsToStages") or entry.get("SecretVersionsToStages") or {}
        numbered: dict[str, int] = {}
        current_vid = previous_vid = None
        for vid, labels in stages.items():
            if _CURRENT in labels:
                current_vid = vid
            if _PREVIOUS in labels:
                previous_vid = vid
            n = _label_number(labels)
            if n is not None:
                numbered[vid] = n
        top = max(numbered.values(), default=0)
        # Versions written by other tools get the next numbers, in the order AWS's own
        # labels give (AWSPREVIOUS before AWSCURRENT); the next keysafe write labels them.
        virtual: dict[str, int] = {}
        if current_vid is not None and current_vid not in numbered:
            if previous_vid is not None and previous_vid not in numbered:
                top += 1
                virtual[previous_vid] = top
            virtual[current_vid] = top + 1
        current = top if current_vid is None else {**numbered, **virtual}[current_vid]
        return cls(str(entry["Name"]), entry, _aws.tag_dict(entry.get("Tags")), numbered,
                   virtual, current_vid, current, entry.get("DeletedDate") is not None)

    @property
    def foreign_current(self) -> bool:
        """The current version carries no keysafe label (another tool wrote it)."""
        return self.current_vid is not None and self.current_vid not in self.numbered

    @property
    def numbers(self) -> dict[str, int]:
        return {**self.numbered, **self.virtual}

    def holder(self, n: int) -> str | None:
        for vid, k in self.numbers.items():
            if k == n:
                return vid
        return None


class AwsSecretsManagerBackend(NamesArePaths):
    """keysafe's protocol over AWS Secrets Manager, with soft delete (Recoverable),
    metadata updates (MetadataWritable) and version listing (Versioned); no destroy of
    one version's value, so not Destroyable.

    Raises NotFound, Conflict, InvalidName, ValueTooLarge, PermissionDenied,
    BackendUnavailable (retryable: throttling, timeouts, an unreachable endpoint) and
    ConfigError (no region or credentials, boto3 missing).
    """

    name = "aws-sm"
    remote = True  # calls cross a network: servers run them off the event loop
    store = STORE

    def __init__(self, *, region: str | None = None, endpoint_url: str | None = None,
                 profile_name: str | None = None, kms_key_id: str | None = None,
                 recovery_window_days: int = 7, max_versions: int = 10,
                 max_attempts: int = 3, connect_timeout: float = 3.0,
                 read_timeout: float = 10.0) -> None:
        if not 7 <= recovery_window_days <= 30:
            raise ConfigError(f"{STORE} takes a recovery window of 7 to 30 days, not "
                              f"{recovery_window_days}")
        if not 1 <= max_versions <= MAX_KEPT_VERSIONS:
            raise ConfigError(
                f"{STORE} keeps 1 to {MAX_KEPT_VERSIONS} versions through keysafe (each "
                f"holds one of the secret's 20 staging labels), not {max_versions}")
        self.kms_key_id = kms_key_id
        self.recovery_window_days = recovery_window_days
        self.max_versions = max_versions
        self._opts = _aws.ClientOptions(region, endpoint_url, profile_name, max_attempts,
                                        connect_timeout, read_timeout)
        self._sdk = _aws.load_sdk()
        self._client = _aws.make_client("secretsmanager", self._opts, store=STORE)
        self._call = _aws.Caller(self._client, self._sdk, STORE)

    @classmethod
    def from_settings(cls, settings: Settings) -> AwsSecretsManagerBackend:
        """Options from the profile's table in keysafe.toml (region, endpoint_url,
        profile_name, kms_key_id, recovery_window_days, max_versions, max_attempts,
        connect_timeout, read_timeout); the rest from the standard AWS sources."""
        own = frozenset({"kms_key_id", "recovery_window_days", "max_versions"})
        opts, extra = _aws.split_options(settings.backend_options, own, STORE)
        try:
            window = int(extra.get("recovery_window_days", settings.recovery_window_days))
            keep = int(extra.get("max_versions", settings.max_versions))
        except (TypeError, ValueError):
            raise ConfigError(f"{STORE}: recovery_window_days and max_versions must be "
                              "whole numbers") from None
        kms = extra.get("kms_key_id")
        return cls(**asdict(opts), kms_key_id=str(kms) if kms else None,
                   recovery_window_days=window, max_versions=keep)

    def __repr__(self) -> str:
        region = self._client.meta.region_name
        return f"AwsSecretsManagerBackend(region={region!r})"

    # -- the External Secrets Operator reading this store (keysafe.kube) -----------------
    def eso_provider(self) -> dict[str, Any]:
        return {"aws": {"service": "SecretsManager", "region": self._client.meta.region_name}}

    def eso_remote_ref(self, path: str) -> dict[str, Any]:
        """The secret's name is the path; its SecretString is the value as stored."""
        return {"key": path}

    # -- reading ------------------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        self._check_name(path)
        if version is not None and version < 1:
            raise not_found(path, version)
        if version is None:
            try:
                r = self._call("get_secret_value", path, action="read",
                               expect=frozenset({"InvalidRequestException"}), SecretId=path,
                               VersionStage=_CURRENT)
            except Refused:  # scheduled for deletion
                raise not_found(path) from None
            n = _label_number(r.get("VersionStages"))
            if n is None:
                n = self._state(path).current
            return self._text(r, path), n
        try:
            r = self._call("get_secret_value", path, action="read", version=version,
                           expect=frozenset({"InvalidRequestException",
                                             "ResourceNotFoundException"}),
                           SecretId=path, VersionStage=_label(version))
        except Refused:
            st = self._state(path)
            vid = None if st.deleted else st.holder(version)
            if vid is None or vid in st.numbered:
                raise not_found(path, version) from None
            r = self._call("get_secret_value", path, action="read", version=version,
                           SecretId=path, VersionId=vid)
        return self._text(r, path), version

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        self._check_name(path)
        st = self._state(path)
        if st.deleted and not include_deleted:
            raise not_found(path)
        return self._meta(st)

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        if prefix and not _NAME.fullmatch(prefix):
            return []  # no secret name can start with it
        kwargs: dict[str, Any] = {"IncludePlannedDeletion": include_deleted,
                                  "MaxResults": 100}
        if prefix:
            # The name filter is a case-insensitive prefix match: narrowed again below.
            kwargs["Filters"] = [{"Key": "name", "Values": [prefix]}]
        entries = _aws.paginate(lambda **kw: self._call("list_secrets", prefix,
                                                        action="list", **kw),
                                "SecretList", "NextToken", "NextToken", **kwargs)
        out = []
        for e in entries:
            st = _State.of(e)
            if st.name.startswith(prefix) and (include_deleted or not st.deleted):
                out.append(self._meta(st))
        return sorted(out, key=lambda m: m.path)

    def versions(self, path: str) -> builtins.list[VersionInfo]:
        """Versions keysafe can reach (labelled, or the current one), oldest first.
        Secrets Manager cannot destroy a version, so ``destroyed`` is always False."""
        self._check_name(path)
        st = self._state(path)
        numbered = st.numbers
        created: dict[str, datetime] = {}
        if any(_VERSION + vid not in st.tags for vid in numbered):
            listed = _aws.paginate(
                lambda **kw: self._call("list_secret_version_ids", path,
                                        action="list versions of", **kw),
                "Versions", "NextToken", "NextToken", SecretId=path)
            for v in listed:
                when = _aws.aws_time(v.get("CreatedDate"))
                if when is not None:
                    created[v["VersionId"]] = when
        out = []
        for vid, n in sorted(numbered.items(), key=lambda kv: kv[1]):
            when, by = self._version_stamp(st, vid)
            if when is None:
                when = created.get(vid) or self._created(st)[0]
            out.append(VersionInfo(n, when, by))
        return out

    def ping(self) -> None:
        self._call("list_secrets", "", action="reach", MaxResults=1)

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    # -- writing ------------------------------------------------------------------------
    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        self._check_name(path)
        check_size(value, MAX_VALUE_BYTES, STORE, path)
        self._check_meta(meta)
        for _ in range(_ROUNDS):
            st = self._state_or_none(path)
            check_cas(path, expected_version, st.current if st else 0)
            if st is not None:
                return self._put_version(st, value, ctx, expected_version, meta)
            info = self._create(path, value, ctx, meta)
            if info is not None:
                return info
            # Created by someone else since we looked: go round, and CAS sees it.
        raise Conflict(f"{path} kept changing while writing; nothing was written", path=path)

    def _create(self, path: str, value: str, ctx: WriteContext,
                meta: MetadataUpdate | None) -> VersionInfo | None:
        token = str(uuid.uuid4())
        tags, _ = _aws.meta_tag_changes(meta, {})
        tags[_CREATED] = stamp(ctx.now, ctx.actor)
        tags[_VERSION + token] = stamp(ctx.now, ctx.actor)
        kwargs: dict[str, Any] = {"Name": path, "SecretString": value,
                                  "ClientRequestToken": token, "Tags": tag_list(tags)}
        if meta is not None and meta.description:
            kwargs["Description"] = meta.description
        if self.kms_key_id:
            kwargs["KmsKeyId"] = self.kms_key_id
        try:
            self._call("create_secret", path, action="write", secret=True,
                       expect=frozenset({"ResourceExistsException",
                                         "InvalidRequestException"}), **kwargs)
        except Refused as r:
            if r.code == "ResourceExistsException":
                return None
            # A purged secret's name stays taken until Secrets Manager finishes deleting.
            raise BackendUnavailable(f"{STORE} is still deleting an earlier secret named "
                                     f"{path}; retry shortly", path=path) from None
        with _committed(path, 1):
            self._stage(path, _label(1), move_to=token)
        return VersionInfo(1, ctx.now, ctx.actor)

    def _put_version(self, st: _State, value: str, ctx: WriteContext,
                     expected: int | None, meta: MetadataUpdate | None) -> VersionInfo:
        path = st.name
        restored = st.deleted
        if restored:
            self._call("restore_secret", path, action="restore", SecretId=path)
        st = self._adopt(st)
        token = str(uuid.uuid4())
        pending = _PENDING + token[:8]
        r = self._call("put_secret_value", path, action="write", secret=True,
                       SecretId=path, SecretString=value, ClientRequestToken=token,
                       VersionStages=[pending])
        if _CURRENT not in (r.get("VersionStages") or []):
            # (The first value of a secret created empty becomes current by itself.)
            st = self._make_current(st, token, pending, expected)
        # If an earlier attempt's move went through, ``st`` already shows it as current.
        new = st.current if st.current_vid == token else st.current + 1
        with _committed(path, new):
            holder = st.holder(new)
            self._stage(path, _label(new), move_to=token,
                        remove_from=holder if holder not in (None, token) else None)
            self._stage(path, pending, remove_from=token, expect=_MOVE_REFUSED)
            pruned = self._prune(st, new, token)
            remove = [_VERSION + vid for vid in pruned]
            if restored:
                remove.append(_DELETED)
            self._write_meta(st, meta, {_VERSION + token: stamp(ctx.now, ctx.actor)},
                             remove)
        return VersionInfo(new, ctx.now, ctx.actor)

    def _make_current(self, st: _State, token: str, pending: str,
                      expected: int | None) -> _State:
        """Move AWSCURRENT to ``token`` from the version ``st`` shows as current: the
        check-and-set step, since Secrets Manager refuses the move once AWSCURRENT is
        elsewhere. Returns the state the move was made from (or, if a retried call had
        already made it, the state showing ``token`` current)."""
        for _ in range(_ROUNDS):
            try:
                self._stage(st.name, _CURRENT, move_to=token, remove_from=st.current_vid,
                            expect=_MOVE_REFUSED)
                return st
            except Refused:
                now = self._state(st.name)
                if now.current_vid == token:  # an earlier attempt did go through
                    return now
                if expected is not None:
                    self._abandon(st.name, token, pending)
                    raise Conflict(f"{st.name} is at version {now.current}, not the "
                                   f"expected {expected}", path=st.name,
                                   current_version=now.current) from None
                st = self._adopt(now)  # no check asked for: go again from what is current
        self._abandon(st.name, token, pending)
        raise Conflict(f"{st.name} kept changing while writing; nothing was written",
                       path=st.name, current_version=st.current)

    def _adopt(self, st: _State) -> _State:
        """Label the versions another tool wrote, so their numbers stay put."""
        for vid, n in sorted(st.virtual.items(), key=lambda kv: kv[1]):
            self._stage(st.name, _label(n), move_to=vid)
        return replace(st, numbered=st.numbers, virtual={}) if st.virtual else st

    def _abandon(self, path: str, token: str, pending: str) -> None:
        """A losing writer's version: unlabelled, it is deprecated (AWS removes it)."""
        with contextlib.suppress(KeysafeError):  # best effort: the Conflict matters
            self._stage(path, pending, remove_from=token, expect=_MOVE_REFUSED)

    def _prune(self, st: _State, new: int, token: str) -> builtins.list[str]:
        """Take labels off versions beyond max_versions; returns their VersionIds."""
        done = []
        for vid, n in sorted(st.numbered.items(), key=lambda kv: kv[1]):
            if vid == token or n > new - self.max_versions:
                continue
            self._stage(st.name, _label(n), remove_from=vid, expect=_MOVE_REFUSED)
            if vid == st.current_vid:  # it now holds AWSPREVIOUS: drop that too
                self._stage(st.name, _PREVIOUS, remove_from=vid, expect=_MOVE_REFUSED)
            done.append(vid)
        return done

    def _stage(self, path: str, label: str, *, move_to: str | None = None,
               remove_from: str | None = None,
               expect: frozenset[str] = frozenset()) -> None:
        kwargs: dict[str, Any] = {"SecretId": path, "VersionStage": label}
        if move_to:
            kwargs["MoveToVersionId"] = move_to
        if remove_from:
            kwargs["RemoveFromVersionId"] = remove_from
        try:
            self._call("update_secret_version_stage", path, action="label a version of",
                       expect=expect, **kwargs)
        except Refused:
            if label == _CURRENT:
                raise
            # Removing a label that is already gone: nothing left to do.

    def _write_meta(self, st: _State, meta: MetadataUpdate | None, extra: dict[str, str],
                    remove: builtins.list[str]) -> None:
        path = st.name
        put, drop = _aws.meta_tag_changes(meta, st.tags)
        put.update(extra)
        drop = [k for k in [*drop, *remove] if k in st.tags or k == _DELETED]
        if put:
            self._call("tag_resource", path, action="tag", SecretId=path, Tags=tag_list(put))
        if drop:
            self._call("untag_resource", path, action="untag", SecretId=path,
                       TagKeys=sorted(set(drop)))
        if (meta is not None and meta.description is not None
                and meta.description != (st.raw.get("Description") or "")):
            self._call("update_secret", path, action="update the description of",
                       SecretId=path, Description=meta.description)

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Schedules deletion after the recovery window; restore() undoes it."""
        self._check_name(path)
        st = self._state(path)
        if st.deleted:
            raise not_found(path)
        meta = self._meta(st)
        # Secrets Manager's DeletedDate is not the same on every implementation (moto
        # reports the end of the window): keysafe keeps its own stamp.
        self._call("tag_resource", path, action="delete", SecretId=path,
                   Tags=tag_list({_DELETED: ctx.now.astimezone(UTC).isoformat()}))
        try:
            self._call("delete_secret", path, action="delete", SecretId=path,
                       RecoveryWindowInDays=self.recovery_window_days,
                       expect=frozenset({"InvalidRequestException"}))
        except Refused:  # deleted by someone else meanwhile
            raise not_found(path) from None
        return meta._replace(deleted_at=ctx.now)

    # -- capabilities ---------------------------------------------------------------------
    def restore(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        self._check_name(path)
        st = self._state(path)
        if not st.deleted:
            return self._meta(st)
        self._call("restore_secret", path, action="restore", SecretId=path)
        if _DELETED in st.tags:
            self._call("untag_resource", path, action="untag", SecretId=path,
                       TagKeys=[_DELETED])
        return self._meta(st)._replace(deleted_at=None)

    def purge(self, path: str, *, ctx: WriteContext) -> None:
        self._check_name(path)
        self._state(path)  # NotFound if absent
        try:
            self._call("delete_secret", path, action="purge", SecretId=path,
                       ForceDeleteWithoutRecovery=True,
                       expect=frozenset({"InvalidRequestException"}))
        except Refused:
            # Some implementations refuse to force-delete a secret already scheduled
            # for deletion: restore it, then delete it at once.
            self._call("restore_secret", path, action="purge", SecretId=path)
            self._call("delete_secret", path, action="purge", SecretId=path,
                       ForceDeleteWithoutRecovery=True)

    def deleted_before(self, cutoff: datetime) -> builtins.list[str]:
        """Secrets keysafe soft-deleted before ``cutoff`` (found by keysafe's deletion
        tag, so secrets deleted by other tools are left to Secrets Manager)."""
        entries = _aws.paginate(
            lambda **kw: self._call("list_secrets", "", action="list", **kw),
            "SecretList", "NextToken", "NextToken", IncludePlannedDeletion=True,
            MaxResults=100, Filters=[{"Key": "tag-key", "Values": [_DELETED]}])
        out = []
        for e in entries:
            st = _State.of(e)
            if st.deleted:
                when = self._deleted_at(st)
                if when is not None and when < cutoff:
                    out.append(st.name)
        return sorted(out)

    def update_metadata(self, path: str, meta: MetadataUpdate, *,
                        ctx: WriteContext) -> SecretMetadata:
        """Description, tags and keysafe's metadata, without a new version. Conflict
        for a secret scheduled for deletion: Secrets Manager changes nothing on one."""
        self._check_name(path)
        self._check_meta(meta)
        st = self._state(path)
        if st.deleted:
            raise Conflict(f"{path} is scheduled for deletion, and {STORE} does not change "
                           "such a secret; restore it first", path=path,
                           current_version=st.current)
        self._write_meta(st, meta, {_UPDATED: stamp(ctx.now, ctx.actor)}, [])
        return self._meta(self._state(path))

    # -- helpers --------------------------------------------------------------------------
    def _check_name(self, path: str) -> None:
        if not path or len(path) > MAX_NAME:
            raise _aws.invalid_name(STORE, path, f"1 to {MAX_NAME} characters")
        if not _NAME.fullmatch(path):
            raise _aws.invalid_name(STORE, path,
                                    "only letters, digits and / _ + = . @ - are allowed")

    @staticmethod
    def _check_meta(meta: MetadataUpdate | None) -> None:
        if meta is None:
            return
        check_user_tags(meta.tags, STORE)
        if meta.description is not None and len(meta.description) > MAX_DESCRIPTION:
            raise InvalidValue(f"{STORE} takes descriptions of up to {MAX_DESCRIPTION} "
                               "characters")

    def _state(self, path: str) -> _State:
        return _State.of(self._call("describe_secret", path, action="describe",
                                    SecretId=path))

    def _state_or_none(self, path: str) -> _State | None:
        try:
            return _State.of(self._call("describe_secret", path, action="describe",
                                        SecretId=path,
                                        expect=frozenset({"ResourceNotFoundException"})))
        except Refused:
            return None

    @staticmethod
    def _text(r: dict[str, Any], path: str) -> str:
        value = r.get("SecretString")
        if not isinstance(value, str):
            raise Unsupported(f"{path} holds a binary secret (SecretBinary); keysafe reads "
                              "SecretString values only", path=path)
        return value

    @staticmethod
    def _created(st: _State) -> tuple[datetime, str | None]:
        try:
            when, _, by = _aws.parse_stamp(st.tags.get(_CREATED))
            return when, by
        except ValueError:
            return _aws.aws_time(st.raw.get("CreatedDate")) or datetime.now(UTC), None

    @staticmethod
    def _version_stamp(st: _State, vid: str) -> tuple[datetime | None, str | None]:
        try:
            when, _, by = _aws.parse_stamp(st.tags.get(_VERSION + vid))
            return when, by
        except ValueError:
            return None, None

    @staticmethod
    def _deleted_at(st: _State) -> datetime | None:
        if not st.deleted:
            return None
        try:
            mine = _aws.parse_time(st.tags.get(_DELETED))
        except ValueError:
            mine = None
        return mine or _aws.aws_time(st.raw.get("DeletedDate"))

    def _meta(self, st: _State) -> SecretMetadata:
        created_at, created_by = self._created(st)
        if st.foreign_current:
            updated_at: datetime = (_aws.aws_time(st.raw.get("LastChangedDate"))
                                    or created_at)
            updated_by = None
        else:
            stamps = []
            if st.current_vid is not None:
                when, by = self._version_stamp(st, st.current_vid)
                if when is not None:
                    stamps.append((when, by))
            try:
                when, _, by = _aws.parse_stamp(st.tags.get(_UPDATED))
                stamps.append((when, by))
            except ValueError:
                pass  # never updated apart from a write (or a hand-written tag)
            updated_at, updated_by = max(stamps, key=lambda s: s[0]) if stamps else (
                _aws.aws_time(st.raw.get("LastChangedDate")) or created_at, None)
        return SecretMetadata(
            path=st.name, current_version=st.current, created_at=created_at,
            updated_at=updated_at, created_by=created_by, updated_by=updated_by,
            description=st.raw.get("Description") or None,
            deleted_at=self._deleted_at(st),
            versions=len(st.numbers),
            **_aws.meta_fields(st.tags))
