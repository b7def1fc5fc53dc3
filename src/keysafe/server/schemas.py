"""Request and response bodies (pydantic): the API contract shown at /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keysafe.durations import future_expiry
from keysafe.errors import InvalidValue
from keysafe.manager.access import ActorActivity, Finding
from keysafe.rotation.configure import OPTION_NAME
from keysafe.tags import MAX_TAG_KEY as MAX_TAG_KEY
from keysafe.tags import MAX_TAG_VALUE as MAX_TAG_VALUE
from keysafe.tags import MAX_TAGS as MAX_TAGS
from keysafe.tags import check_user_tags


class _Write(BaseModel):
    """What every write of a value may also set: where, its metadata and check-and-set."""

    model_config = ConfigDict(extra="forbid")
    domain_id: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=1000)
    expected_version: int | None = Field(default=None, ge=0,
                                         description="check-and-set: 0 = must not exist")
    secret_type: str | None = Field(default=None, max_length=64)
    tags: dict[str, str] | None = None
    rotation_days: int | None = Field(default=None, ge=0, le=3650)
    expires_at: datetime | None = Field(default=None, description=(
        "when the secret expires (ISO 8601, UTC if no offset; in the future): "
        "`secret.expiring` events and the status's `expires_at`"))

    @field_validator("tags")
    @classmethod
    def _no_rotation_tags(cls, tags: dict[str, str] | None) -> dict[str, str] | None:
        return _check_tags(tags)

    @field_validator("expires_at")
    @classmethod
    def _future(cls, when: datetime | None) -> datetime | None:
        return _check_expiry(when)


class SecretWrite(_Write):
    """Blind write (spec 001): the value goes in and never comes back."""

    secret_value: str = Field(min_length=1, max_length=1_048_576)
    check_key: bool = Field(default=False, description=(
        "ask the provider whether the key works before saving it (spec 001); a key it "
        "refuses is not saved (422 key_rejected); no verdict (unreachable) saves it and "
        "says so in key_check"))
    check_format: bool = Field(default=True, description=(
        "check a well-known secret's format (the catalog's pattern) before saving it"))


class SecretGenerate(_Write):
    """A random value made by the server and stored: nobody sees it, the caller
    included (read it as a service identity, as any other)."""

    length: int | None = Field(default=None, ge=32, le=4096, description=(
        "characters (default: the secret's rotator.length option, else 64)"))
    alphabet: str | None = Field(default=None, max_length=32, description=(
        "urlsafe, alnum, hex or printable (default: the secret's rotator.alphabet "
        "option, else urlsafe)"))
    check_format: bool = Field(default=True, description=(
        "check the generated value against a well-known secret's format (the catalog's "
        "pattern) before saving it"))


_Tags = TypeVar("_Tags", dict[str, str] | None, dict[str, str | None] | None)


def _check_expiry(when: datetime | None) -> datetime | None:
    """An expiry a client sets: in the future (keysafe.durations.future_expiry), UTC."""
    if when is None:
        return None
    try:
        return future_expiry(when)
    except InvalidValue as exc:
        raise ValueError(exc.message) from None


def _check_tags(tags: _Tags) -> _Tags:
    """Tags a client may set (keysafe.tags.check_user_tags, the CLI's rule too): at most
    MAX_TAGS per request, names of 1 to MAX_TAG_KEY printable characters, values up to
    MAX_TAG_VALUE, no rotation settings, and ``env_var`` a variable name. ValueError, as
    a pydantic validator must raise, so the API answers 422 naming the bad tag."""
    try:
        check_user_tags(tags)
    except InvalidValue as exc:
        raise ValueError(exc.message) from None
    return tags


class MetadataPatch(BaseModel):
    """Metadata without a new version (``keysafe tag``): the tags named are set, a tag
    given as null is removed, the others stay."""

    model_config = ConfigDict(extra="forbid")
    domain_id: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=1000)
    tags: dict[str, str | None] | None = None
    expires_at: datetime | None = Field(default=None, description=(
        "a new expiry (in the future; an expiry cannot be removed, only moved)"))

    @field_validator("tags")
    @classmethod
    def _no_rotation_tags(cls, tags: dict[str, str | None] | None
                          ) -> dict[str, str | None] | None:
        return _check_tags(tags)

    @field_validator("expires_at")
    @classmethod
    def _future(cls, when: datetime | None) -> datetime | None:
        return _check_expiry(when)

    @model_validator(mode="after")
    def _something(self) -> MetadataPatch:
        if self.description is None and not self.tags and self.expires_at is None:
            raise ValueError("nothing to change: give a description, tags or expires_at")
        return self


class ExposedMark(BaseModel):
    """Where the current value was found in the open (a file and line, a commit, a
    ticket): it is due for rotation at once, until a new value is written."""

    model_config = ConfigDict(extra="forbid")
    where: str = Field(min_length=1, max_length=MAX_TAG_VALUE)
    domain_id: str | None = Field(default=None, max_length=128)

    @field_validator("where")
    @classmethod
    def _printable(cls, where: str) -> str:
        if not where.strip() or not where.isprintable():
            raise ValueError("say where the value was exposed (printable text)")
        return where


class FieldsWrite(BaseModel):
    """Some fields of a JSON credential (spec 000's ``update_credentials``): the fields
    named are set, a field given as null is removed, the others are kept. Blind: no
    field's value comes back, and the merged object passes the catalog's checks."""

    model_config = ConfigDict(extra="forbid")
    fields: dict[str, str | None] = Field(min_length=1, max_length=100)
    domain_id: str | None = Field(default=None, max_length=128)
    expected_version: int | None = Field(default=None, ge=0, description=(
        "check-and-set: merge into this version only (409 otherwise); 0 = must not exist"))

    @field_validator("fields")
    @classmethod
    def _field_names(cls, fields: dict[str, str | None]) -> dict[str, str | None]:
        for key in fields:
            if not key or len(key) > MAX_TAG_KEY or not key.isprintable():
                raise ValueError(f"field name {key[:40]!r}: 1 to {MAX_TAG_KEY} printable "
                                 "characters")
        return fields


class KeyCheckOut(BaseModel):
    """A live key check's verdict (docs/key-checks.md); never the key."""

    outcome: str = Field(description="valid, rejected, unknown, unsupported or off")
    detail: str
    provider: str | None = None
    status: int | None = Field(default=None, description="the provider's HTTP status")


class KeyCheckRequest(BaseModel):
    """A key to check without saving it; none: check the stored value."""

    model_config = ConfigDict(extra="forbid")
    secret_value: str | None = Field(default=None, min_length=1, max_length=1_048_576)
    domain_id: str | None = Field(default=None, max_length=128)


class WriteResult(BaseModel):
    status: str = "success"
    configured: bool = True
    message: str
    secret_name: str
    organization_id: str
    domain_id: str
    version: int
    created_at: datetime | None = None
    created_by: str | None = None
    key_check: KeyCheckOut | None = None


class SecretStatus(BaseModel):
    """Status only (spec 001): whether it is configured, never the value."""

    configured: bool
    secret_name: str
    organization_id: str
    domain_id: str
    version: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    description: str | None = None
    secret_type: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    rotation_days: int | None = None
    last_rotated: datetime | None = None
    rotation_due: datetime | None = None
    rotation_overdue: bool = False
    exposed: bool = Field(default=False, description=(
        "the current value was found in the open (tag `exposed` says where): rotate it"))
    deleted: bool = False
    recoverable_until: datetime | None = None
    display_name: str | None = None
    category: str | None = None
    rotator: str | None = Field(default=None, description=(
        "what `rotate` would use: random (keysafe makes the value), manual (a person "
        "pastes one), or a configured rotator"))
    created_by: str | None = None
    expires_at: datetime | None = None
    deleted_at: datetime | None = None
    versions_kept: int | None = Field(default=None, description=(
        "how many versions the store keeps (destroyed ones included)"))


class SecretList(BaseModel):
    organization_id: str
    domain_id: str | None
    secrets: list[SecretStatus]


class SecretValue(BaseModel):
    """The one authorised read path (service identities only)."""

    secret_name: str
    organization_id: str
    domain_id: str
    value: str
    version: int | None = Field(default=None, description=(
        "the version read: given when the request asked for one with `version` (0: the "
        "current one)"))
    field: str | None = Field(default=None, description=(
        "the field of JSON credentials read, when the request named one with `field`: "
        "`value` is then that field alone"))
    field_json: bool | None = Field(default=None, description=(
        "with `field`: true when the field is not a string (a number, boolean, null, "
        "object or list) and `value` is its JSON text"))


class LlmKey(BaseModel):
    organization_id: str
    provider: str
    domain_id: str | None
    value: str


class Done(BaseModel):
    status: str = "success"
    message: str


class RotationOut(BaseModel):
    """What a rotation did (docs/rotation.md); never a value."""

    secret_name: str
    organization_id: str
    domain_id: str
    outcome: str = Field(description="rotated, waiting (a grace period), resumed, ...")
    version: int | None = None
    step: str | None = None
    detail: str = ""


class Destroy(BaseModel):
    """Crypto-shred chosen versions: their values can never be read again."""

    model_config = ConfigDict(extra="forbid")
    versions: list[int] = Field(min_length=1, max_length=1000)
    domain_id: str | None = Field(default=None, max_length=128)

    @field_validator("versions")
    @classmethod
    def _positive(cls, versions: list[int]) -> list[int]:
        if any(v < 1 for v in versions):
            raise ValueError("versions start at 1")
        return versions


class DestroyOut(BaseModel):
    secret_name: str
    organization_id: str
    domain_id: str
    destroyed: list[int]


class OrgRemoved(BaseModel):
    """An org's offboarding: each secret's outcome and the tokens revoked; no value."""

    organization_id: str
    purged: bool
    dry_run: bool = False
    secrets: list[dict[str, str]]
    tokens_revoked: list[str] = Field(description="ids of the tokens that covered only "
                                                  "this org (with dry_run: would be)")
    tokens: list[dict[str, str | None]] = Field(
        default=[], description="those tokens' id, name and environment")
    summary: dict[str, int]
    recovery_window_days: int = 0


class RotationConfig(BaseModel):
    """How a secret rotates (``keysafe rotate configure``): the rotator, its options,
    the period. Admins of every org only: a rotator's options point the server at a
    URL or a database."""

    model_config = ConfigDict(extra="forbid")
    domain_id: str | None = Field(default=None, max_length=128)
    rotator: str | None = Field(default=None, min_length=1, max_length=64,
                                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    options: dict[str, str] | None = Field(default=None, max_length=20, description=(
        "rotator options (`length`, `alphabet`, `url`, `scheme`, ...), added to those "
        "set before"))
    unset_options: list[str] | None = Field(default=None, max_length=20, description=(
        "rotator options to remove (those an earlier rotator took)"))
    period_days: int | None = Field(default=None, ge=0, le=3650, description=(
        "days between scheduled rotations; 0: never scheduled"))
    dry_run: bool = False

    @field_validator("unset_options")
    @classmethod
    def _unset_names(cls, names: list[str] | None) -> list[str] | None:
        for key in names or ():
            if not OPTION_NAME.fullmatch(key):
                raise ValueError(f"option name {key[:40]!r}: letters, digits, '_', '.' "
                                 "and '-', up to 64")
        return names

    @field_validator("options")
    @classmethod
    def _option_names(cls, options: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (options or {}).items():
            if not OPTION_NAME.fullmatch(key):
                raise ValueError(f"option name {key[:40]!r}: letters, digits, '_', '.' "
                                 "and '-', up to 64")
            if len(value) > MAX_TAG_VALUE or not value.isprintable():
                raise ValueError(f"option {key!r}: the value must be at most "
                                 f"{MAX_TAG_VALUE} printable characters")
        return options

    @model_validator(mode="after")
    def _something(self) -> RotationConfig:
        if (self.rotator is None and not self.options and not self.unset_options
                and self.period_days is None):
            raise ValueError("nothing to set: give a rotator, options, unset_options or "
                             "period_days")
        return self


class RotationRun(BaseModel):
    """A selection rotated now (``keysafe rotate due|all|symmetric|api-keys|database``),
    or planned (``dry_run``); ``read_by`` keeps only the secrets that identity read or
    wrote since ``since`` (offboarding)."""

    model_config = ConfigDict(extra="forbid")
    selection: Literal["due", "all", "symmetric", "api-keys", "database"]
    org_id: str | None = Field(default=None, max_length=128)
    domain_id: str | None = Field(default=None, max_length=128)
    dry_run: bool = False
    read_by: str | None = Field(default=None, min_length=1, max_length=256, description=(
        "an actor as the audit log names it: token:NAME, jwt:SUB, a CLI user"))
    since: datetime | None = Field(default=None, description=(
        "with read_by: reads from this time (default 90 days ago)"))

    @field_validator("read_by")
    @classmethod
    def _actor(cls, actor: str | None) -> str | None:
        if actor is not None and (not actor.strip() or not actor.isprintable()):
            raise ValueError("give an actor, e.g. token:alice")
        return actor

    @model_validator(mode="after")
    def _since_needs_read_by(self) -> RotationRun:
        if self.since is not None and self.read_by is None:
            raise ValueError("since goes with read_by")
        return self


class RotationRunOut(BaseModel):
    """Each secret's outcome (never a value) and the counts; ``records_by``: how many
    audit records ``read_by`` has in the window (0: a misspelt identity?)."""

    selection: str
    organization_id: str | None = None
    dry_run: bool = False
    results: list[dict[str, Any]]
    summary: dict[str, int]
    records_by: int | None = None


class RetiredOut(BaseModel):
    """The secrets whose previous values were retired (``dry_run``: would be)."""

    dry_run: bool = False
    retired: list[str] = Field(description="the secrets' paths")


class RotationStatusList(BaseModel):
    """Each covered secret's rotation state (``keysafe rotate status``); no value and
    no rotator option."""

    secrets: list[dict[str, Any]] = Field(description=(
        "each ``{path, name, org, domain, secret_type, period_days, period_source, "
        "last_rotated, next_due, status, rotator, version, needs_window, exposed}``, "
        "overdue first"))


class OrgList(BaseModel):
    """The orgs the caller covers, with what each holds (never a value)."""

    orgs: list[dict[str, Any]] = Field(description="each ``{org, secrets, deleted, "
                                                   "domains}``: live and soft-deleted "
                                                   "counts, and the domains")


class OrgRestored(BaseModel):
    """An offboarding undone: each secret's outcome; no value."""

    organization_id: str
    dry_run: bool = False
    secrets: list[dict[str, str]]
    summary: dict[str, int]


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    domain_id: str | None = Field(default=None, max_length=128)


class VersionOut(BaseModel):
    version: int
    created_at: datetime
    created_by: str | None
    destroyed: bool


class VersionList(BaseModel):
    secret_name: str
    organization_id: str
    domain_id: str
    current_version: int
    versions: list[VersionOut]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    roles: list[str] = Field(min_length=1, max_length=4)
    orgs: list[str] = Field(min_length=1, max_length=1000,
                            description="org ids ('acme': every domain of it), "
                            "domains of one ('acme/card-services'), secrets of a domain "
                            "('acme/shared/openai_api_key', 'acme/shared/db_*'), or ['*'] "
                            "for all orgs")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    cidrs: list[str] | None = Field(default=None, max_length=50, description=(
        "networks the token works from (CIDR blocks or addresses, as Vault's "
        "token_bound_cidrs); a request from elsewhere is refused as a wrong token is. "
        "Default: any address, or the creating token's own networks when it has some"))


class TokenOut(BaseModel):
    id: str
    name: str
    roles: list[str]
    orgs: list[str] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    env: str | None = Field(default=None, description=(
        "the environment the token works in (null: made before tokens were bound to one)"))
    cidrs: list[str] | None = Field(default=None, description=(
        "the networks it works from (null: any address)"))


class TokenCreated(TokenOut):
    token: str = Field(description="shown once; store it now")


class TokenRevoked(TokenOut):
    already_revoked: bool = Field(description="it had been revoked before this request "
                                              "(which then changed nothing)")


class AuditRecord(BaseModel):
    seq: int
    ts: datetime
    actor: str
    action: str
    path: str | None
    version: int | None
    outcome: str
    org: str | None
    client: str | None
    request_id: str | None
    detail: dict[str, Any]


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchors: list[dict[str, Any]] = Field(
        default=[], max_length=10_000,
        description="anchors taken earlier (``keysafe audit anchor``), each as its "
                    "JSON line: every anchored record must still be there, unchanged")


class VerifyOut(BaseModel):
    """The audit chain, checked by the server (``keysafe audit verify``)."""

    ok: bool
    checked: int
    problems: list[dict[str, Any]] = Field(description="each ``{seq, problem}``")
    notes: list[str] = []


class AnchorOut(BaseModel):
    """An audit anchor (keysafe.manager.anchors): keep it where the store's
    administrators cannot write."""

    kind: str
    seq: int
    hash: str
    taken_at: str
    env: str


class AuditPage(BaseModel):
    records: list[AuditRecord]


class AccessReportOut(BaseModel):
    """``keysafe audit report`` (docs/cli.md): access patterns over a window."""

    since: datetime
    until: datetime
    org: str | None
    totals: dict[str, int]
    actors: list[ActorActivity]
    findings: list[Finding] = Field(description=(
        "kind: integrity, denials, not_found, breadth, new_actor or unread"))
    secrets: int | None = Field(description="live secrets in scope (with the unread check)")
    unread: list[str] | None = Field(description="their paths no record shows read")


class WellKnown(BaseModel):
    categories: dict[str, list[dict[str, Any]]]


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
