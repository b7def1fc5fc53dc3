"""AWS Systems Manager Parameter Store: SecureString parameters at keysafe's path.

How keysafe's model maps onto Parameter Store's (docs/backends/aws.md has the whole
story):

- Names. The path is the parameter name; Parameter Store wants hierarchical names to
  begin with "/", so ``a/b`` and ``/a/b`` both name the parameter ``/a/b`` (``list``
  answers in the form its prefix was given in). Names are checked against Parameter
  Store's rules (characters, 15 levels, 1011 characters with the ARN) before calling.
- Versions are Parameter Store's own integers: a parameter keysafe creates starts at 1
  and every write adds one. Parameter Store keeps the last 100 and cannot drop one, so
  ``max_versions`` does not apply, and there is no ``destroy`` (not Versioned).
- Check-and-set: expected version 0 is an atomic create (``Overwrite=False``). Other
  expected versions are compared, then written: Parameter Store has no conditional
  write, so a writer that slips in between the two calls is not detected before the
  write. The version returned is the store's, so a caller can see that it is not
  ``expected + 1``.
- A write is sent without botocore's blind retries: after a failure whose outcome is
  unknown (a timeout, a dropped connection, a server error), keysafe reads the
  parameter back and counts the write as done if its value is there, so a retry does
  not add a duplicate version. Throttled or unsent requests are simply sent again.
- Parameter Store has no soft delete: ``delete`` is permanent, and this backend has no
  restore or purge (not Recoverable). Nor can it change a description without writing
  a new version, so it has no ``update_metadata`` (not MetadataWritable): metadata
  changes come with a write.
- Metadata: the description is the parameter's Description; created/updated stamps,
  the secret type, rotation days, expiry and last rotation are tags under
  ``keysafe:``; user tags are plain tags.
"""

from __future__ import annotations

import builtins
import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import asdict
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
)
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

if TYPE_CHECKING:
    from keysafe.config import Settings

STORE = "AWS SSM Parameter Store"
#: Value size per tier, in bytes.
TIER_LIMITS = {"Standard": 4096, "Advanced": 8192, "Intelligent-Tiering": 8192}
MAX_DEPTH = 15
#: A name, together with the ARN in front of it, is at most this long.
MAX_NAME_WITH_ARN = 1011
MAX_DESCRIPTION = 1024
#: Parameter Store keeps this many versions of a parameter.
HISTORY = 100

_LEVEL = re.compile(r"[A-Za-z0-9_.-]+")
_PREFIX = re.compile(r"[A-Za-z0-9_./-]*")
_CREATED = _aws.TAG_PREFIX + "created"
_UPDATED = _aws.TAG_PREFIX + "updated"
_ROUNDS = 25
_UNKNOWN = "the write's outcome is unknown; read the secret before writing it again"


def _partition(region: str) -> str:
    for prefix, partition in (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"),
                              ("us-isob-", "aws-iso-b"), ("us-iso-", "aws-iso")):
        if region.startswith(prefix):
            return partition
    return "aws"


def _canonical(name: str) -> str:
    return "/" + name.lstrip("/")


class AwsParameterStoreBackend(NamesArePaths):
    """keysafe's protocol over SSM Parameter Store (SecureString parameters). Delete is
    permanent; no restore, purge, destroy or metadata-only update.

    Raises NotFound, Conflict, InvalidName (characters, depth, length), ValueTooLarge
    (4 KiB standard tier, 8 KiB advanced), PermissionDenied, BackendUnavailable
    (retryable: throttling, timeouts, an unreachable endpoint) and ConfigError.
    """

    name = "aws-ssm"
    remote = True  # calls cross a network: servers run them off the event loop
    store = STORE

    def __init__(self, *, region: str | None = None, endpoint_url: str | None = None,
                 profile_name: str | None = None, kms_key_id: str | None = None,
                 tier: str = "Standard", max_attempts: int = 3,
                 connect_timeout: float = 3.0, read_timeout: float = 10.0) -> None:
        tiers = {t.lower(): t for t in TIER_LIMITS}
        if tier.lower() not in tiers:
            raise ConfigError(f"{STORE} tier must be one of {', '.join(TIER_LIMITS)}, "
                              f"not {tier!r}")
        self.tier = tiers[tier.lower()]
        self.max_value_bytes = TIER_LIMITS[self.tier]
        self.kms_key_id = kms_key_id
        self._opts = _aws.ClientOptions(region, endpoint_url, profile_name, max_attempts,
                                        connect_timeout, read_timeout)
        self._sdk = _aws.load_sdk()
        self._client = _aws.make_client("ssm", self._opts, store=STORE)
        # Writes go out once per call: keysafe retries them itself, checking first
        # whether an earlier attempt landed (see _send).
        self._writer = _aws.make_client("ssm", self._opts, store=STORE, max_attempts=1)
        self._call = _aws.Caller(self._client, self._sdk, STORE)
        region_name = str(self._client.meta.region_name or "")
        # arn:aws:ssm:REGION:123456789012:parameter + the name (which brings its "/").
        self._arn_len = len(f"arn:{_partition(region_name)}:ssm:{region_name}:"
                            "123456789012:parameter")

    @classmethod
    def from_settings(cls, settings: Settings) -> AwsParameterStoreBackend:
        """Options from the profile's table in keysafe.toml (region, endpoint_url,
        profile_name, kms_key_id, tier, max_attempts, connect_timeout, read_timeout);
        the rest from the standard AWS sources."""
        opts, extra = _aws.split_options(settings.backend_options,
                                         frozenset({"kms_key_id", "tier"}), STORE)
        kms = extra.get("kms_key_id")
        return cls(**asdict(opts), kms_key_id=str(kms) if kms else None,
                   tier=str(extra.get("tier", "Standard")))

    def __repr__(self) -> str:
        return (f"AwsParameterStoreBackend(region={self._client.meta.region_name!r}, "
                f"tier={self.tier!r})")

    # -- the External Secrets Operator reading this store (keysafe.kube) -----------------
    def eso_provider(self) -> dict[str, Any]:
        return {"aws": {"service": "ParameterStore",
                        "region": self._client.meta.region_name}}

    def eso_remote_ref(self, path: str) -> dict[str, Any]:
        """The parameter's name (a leading ``/`` added); the operator decrypts it."""
        return {"key": self._name(path)}

    # -- names ----------------------------------------------------------------------------
    def _name(self, path: str) -> str:
        """The parameter name for ``path``; InvalidName naming the rule it breaks."""
        name = path if path.startswith("/") else "/" + path
        levels = name[1:].split("/")
        if not path or any(not level for level in levels):
            raise _aws.invalid_name(STORE, path, "a level is empty ('//' or a trailing '/')")
        if not all(_LEVEL.fullmatch(level) for level in levels):
            raise _aws.invalid_name(STORE, path, "levels may hold only letters, digits "
                                    "and _ . -")
        if len(levels) > MAX_DEPTH:
            raise _aws.invalid_name(STORE, path, f"the hierarchy depth limit is {MAX_DEPTH} "
                                    f"levels, and this name has {len(levels)}")
        if levels[0].lower().startswith(("aws", "ssm")):
            raise _aws.invalid_name(STORE, path, "names may not begin with 'aws' or 'ssm'")
        if self._arn_len + len(name) > MAX_NAME_WITH_ARN:
            raise _aws.invalid_name(
                STORE, path, f"the name length limit is {MAX_NAME_WITH_ARN} characters "
                f"including the parameter's ARN, so at most "
                f"{MAX_NAME_WITH_ARN - self._arn_len} here; this name has {len(name)}")
        return name

    # -- reading ------------------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        name = self._name(path)
        if version is not None and version < 1:
            raise not_found(path, version)
        selector = name if version is None else f"{name}:{version}"
        r = self._call("get_parameter", path, action="read", version=version,
                       Name=selector, WithDecryption=True)
        p = r["Parameter"]
        return str(p["Value"]), int(p["Version"])

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        """Metadata; NotFound if absent (Parameter Store keeps nothing once deleted)."""
        name = self._name(path)
        found = self._find(name, path)
        if found is None:
            raise not_found(path)
        return self._meta(path, found, self._tags(found["Name"], path))

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """Parameters whose name starts with ``prefix``; a tag lookup per parameter."""
        out = [self._meta(path, p, self._tags(str(p["Name"]), path))
               for path, p in self._described(prefix)]
        return sorted(out, key=lambda m: m.path)

    def foreign_names(self, prefix: str) -> builtins.list[str]:
        """Parameter names starting with ``prefix``: DescribeParameters alone (no tag
        lookups), so a read-only policy for another team's parameters suffices."""
        return sorted(path for path, _ in self._described(prefix))

    def _described(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(path, DescribeParameters entry) of each parameter starting with ``prefix``;
        paths carry a leading '/' when the prefix does (or is empty)."""
        if not _PREFIX.fullmatch(prefix):
            return  # no parameter name can start with it
        want = _canonical(prefix)
        kwargs: dict[str, Any] = {"MaxResults": 50}
        if prefix.strip("/"):
            kwargs["ParameterFilters"] = [{"Key": "Name", "Option": "BeginsWith",
                                           "Values": [want]}]
        found = _aws.paginate(lambda **kw: self._call("describe_parameters", prefix,
                                                      action="list", **kw),
                              "Parameters", "NextToken", "NextToken", **kwargs)
        slashed = prefix.startswith("/") or not prefix
        for p in found:
            canonical = _canonical(str(p["Name"]))
            if canonical.startswith(want):
                yield (canonical if slashed else canonical[1:]), p

    def versions(self, path: str) -> builtins.list[VersionInfo]:
        """The versions Parameter Store keeps (the last 100), oldest first. Who wrote a
        version is Parameter Store's LastModifiedUser (an IAM identity), except for the
        versions keysafe's own stamps describe."""
        name = self._name(path)
        history = _aws.paginate(
            lambda **kw: self._call("get_parameter_history", path,
                                    action="list versions of", **kw),
            "Parameters", "NextToken", "NextToken", Name=name, WithDecryption=False,
            MaxResults=50)
        tags = self._tags(name, path) if history else {}
        stamps: dict[int, tuple[datetime, str | None]] = {}
        for key in (_CREATED, _UPDATED):
            try:
                when, extra, by = _aws.parse_stamp(tags.get(key), 1)
                stamps[int(extra[0])] = (when, by)
            except (ValueError, IndexError):
                continue
        out = []
        for h in history:
            v = int(h["Version"])
            if v in stamps:
                out.append(VersionInfo(v, *stamps[v]))
            else:
                when = _aws.aws_time(h.get("LastModifiedDate")) or datetime.now(UTC)
                out.append(VersionInfo(v, when, self._user(h)))
        return sorted(out, key=lambda i: i.version)

    def ping(self) -> None:
        self._call("describe_parameters", "", action="reach", MaxResults=1)

    def close(self) -> None:
        for client in (self._client, self._writer):
            close = getattr(client, "close", None)
            if close is not None:
                close()

    # -- writing ------------------------------------------------------------------------
    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        name = self._name(path)
        check_size(value, self.max_value_bytes, STORE, path,
                   f" in the {self.tier} tier (8192 in the Advanced tier; set the "
                   "profile's tier option)" if self.tier == "Standard" else
                   f" in the {self.tier} tier")
        if meta is not None:
            check_user_tags(meta.tags, STORE)
            if meta.description is not None and len(meta.description) > MAX_DESCRIPTION:
                raise InvalidValue(f"{STORE} takes descriptions of up to {MAX_DESCRIPTION} "
                                   "characters")
        for _ in range(_ROUNDS):
            found = self._find(name, path)
            current = int(found["Version"]) if found else 0
            check_cas(path, expected_version, current)
            if found is None:
                tags, _ = _aws.meta_tag_changes(meta, {})
                tags[_CREATED] = stamp(ctx.now, ctx.actor, "1")
                tags[_UPDATED] = stamp(ctx.now, ctx.actor, "1")
                kwargs = self._put_args(name, value, meta, None)
                kwargs.update(Overwrite=False, Tags=tag_list(tags))
                try:
                    version = self._send(path, kwargs, before=0)
                except Refused:
                    continue  # created by someone else since we looked: CAS sees it
                return VersionInfo(version, ctx.now, ctx.actor)
            kwargs = self._put_args(name, value, meta, found)
            kwargs["Overwrite"] = True
            version = self._send(path, kwargs, before=current)
            try:
                self._retag(found["Name"], path, meta, stamp(ctx.now, ctx.actor, str(version)))
            except KeysafeError as exc:
                # The value is in: a failure now must not read as a failed write (a
                # retry would add a duplicate version).
                raise KeysafeError(f"{path}: the value was written as version {version}, "
                                   f"but updating its tags failed ({exc.code})",
                                   path=path) from exc
            return VersionInfo(version, ctx.now, ctx.actor)
        raise Conflict(f"{path} kept changing while writing; nothing was written", path=path)

    def _retag(self, name: str, path: str, meta: MetadataUpdate | None,
               updated: str) -> None:
        tags = self._tags(name, path) if meta is not None and meta.tags is not None else {}
        put, drop = _aws.meta_tag_changes(meta, tags)
        put[_UPDATED] = updated
        self._call("add_tags_to_resource", path, action="tag", ResourceType="Parameter",
                   ResourceId=name, Tags=tag_list(put))
        if drop:
            self._call("remove_tags_from_resource", path, action="untag",
                       ResourceType="Parameter", ResourceId=name, TagKeys=drop)

    def _put_args(self, name: str, value: str, meta: MetadataUpdate | None,
                  found: dict[str, Any] | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Name": name, "Value": value, "Type": "SecureString"}
        description = meta.description if meta is not None else None
        if description is None and found is not None:
            description = found.get("Description")  # kept, whatever PutParameter's default
        if description:
            kwargs["Description"] = description
        if self.kms_key_id:
            kwargs["KeyId"] = self.kms_key_id
        # A new parameter takes the configured tier; an existing one is only ever moved
        # up (Parameter Store cannot move an advanced parameter back to standard).
        if found is None or self.tier != "Standard":
            kwargs["Tier"] = self.tier
        return kwargs

    def _send(self, path: str, kwargs: dict[str, Any], *, before: int) -> int:
        """PutParameter, retried without duplicates: returns the new version. Raises
        Refused("ParameterAlreadyExists") when a create finds the name taken."""
        sdk = self._sdk
        unknown = False
        mapped: KeysafeError | None = None
        attempts = self._opts.max_attempts
        for attempt in range(attempts):
            try:
                r = self._writer.put_parameter(**kwargs)
                return int(r["Version"])
            except Exception as exc:
                code = _aws.error_code(sdk, exc)
                if code == "ParameterAlreadyExists":
                    landed = self._landed(path, kwargs, before) if unknown else None
                    if landed is not None:
                        return landed
                    raise Refused(code, exc) from None
                if _aws.is_unsent(sdk, exc):
                    time.sleep(_aws.backoff(attempt))
                    continue
                if isinstance(exc, sdk.connection_errors) or code in _aws.SERVER_FAULT:
                    unknown = True
                    landed = self._landed(path, kwargs, before)
                    if landed is not None:
                        return landed
                    time.sleep(_aws.backoff(attempt))
                    continue
                mapped = _aws.map_error(sdk, exc, store=STORE, action="write", path=path)
                if mapped is None:
                    raise
                break  # raised below, outside the handler: AWS's message may echo the value
        if mapped is not None:
            raise mapped
        if unknown:
            raise BackendUnavailable(f"{STORE} did not confirm the write to {path} after "
                                     f"{attempts} attempts; {_UNKNOWN}", path=path)
        raise BackendUnavailable(f"{STORE} is unreachable or throttling: the write to {path} "
                                 f"was not sent after {attempts} attempts (nothing was "
                                 "written); retry later", path=path)

    def _landed(self, path: str, kwargs: dict[str, Any], before: int) -> int | None:
        """The version an earlier attempt of this write created, if it did."""
        try:
            r = self._client.get_parameter(Name=kwargs["Name"], WithDecryption=True)
        except Exception as exc:
            if _aws.error_code(self._sdk, exc) == "ParameterNotFound":
                return None
            raise BackendUnavailable(f"{STORE} could not be asked whether the write to "
                                     f"{path} landed; {_UNKNOWN}", path=path) from exc
        p = r["Parameter"]
        if int(p["Version"]) > before and p["Value"] == kwargs["Value"]:
            return int(p["Version"])
        return None

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Permanent: Parameter Store has no soft delete (nothing can restore it)."""
        meta = self.describe(path)
        # Gone already (a retried call, or another deleter) is the outcome we want.
        with contextlib.suppress(Refused):
            self._call("delete_parameter", path, action="delete", Name=self._name(path),
                       expect=frozenset({"ParameterNotFound"}))
        return meta._replace(deleted_at=ctx.now)

    # -- helpers --------------------------------------------------------------------------
    def _find(self, name: str, path: str) -> dict[str, Any] | None:
        """The DescribeParameters entry for ``name``, or None. DescribeParameters may
        answer a filtered query with empty pages and a NextToken, so follow them."""
        found = _aws.paginate(
            lambda **kw: self._call("describe_parameters", path, action="describe", **kw),
            "Parameters", "NextToken", "NextToken",
            ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}])
        for p in found:
            if _canonical(str(p["Name"])) == name:
                return dict(p)
        return None

    def _tags(self, name: str, path: str) -> dict[str, str]:
        r = self._call("list_tags_for_resource", path, action="read the tags of",
                       ResourceType="Parameter", ResourceId=name)
        return _aws.tag_dict(r.get("TagList"))

    @staticmethod
    def _user(p: dict[str, Any]) -> str | None:
        user = p.get("LastModifiedUser")
        return str(user) if user and user != "N/A" else None

    def _meta(self, path: str, p: dict[str, Any], tags: dict[str, str]) -> SecretMetadata:
        version = int(p["Version"])
        modified = _aws.aws_time(p.get("LastModifiedDate")) or datetime.now(UTC)
        try:
            created_at, _, created_by = _aws.parse_stamp(tags.get(_CREATED), 1)
        except ValueError:
            # Not created by keysafe: Parameter Store records no creation time.
            created_at, created_by = modified, None
        try:
            updated_at, extra, updated_by = _aws.parse_stamp(tags.get(_UPDATED), 1)
            if extra != [str(version)]:
                raise ValueError("written since by another tool")
        except ValueError:
            updated_at, updated_by = modified, self._user(p)
        return SecretMetadata(
            path=path, current_version=version, created_at=created_at,
            updated_at=updated_at, created_by=created_by, updated_by=updated_by,
            description=p.get("Description") or None, versions=min(version, HISTORY),
            **_aws.meta_fields(tags))
