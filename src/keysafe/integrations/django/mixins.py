"""Model mixins: a row's secrets live in keysafe, addressed by the row's org; the
database keeps none of them (spec 000's OrganisationSettings and
OrganisationIntegration).

```python
class OrganisationSettings(KeysafeSecretsMixin, models.Model):
    organisation = models.OneToOneField(Organisation, on_delete=models.CASCADE)
    keysafe_org = "{organisation_id}"               # the org segment, from the row
    keysafe_domain = "llm"                          # None: the default domain
    keysafe_secrets = ("openai_api_key", "anthropic_api_key")   # forms, clean-up

class OrganisationIntegration(KeysafeCredentialsMixin, models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE)
    integration_key = models.CharField(max_length=50)     # "slack"
    keysafe_org = "{organisation_id}"
    keysafe_domain = "{integration_key}"
    keysafe_credentials_name = "credentials"

    class Meta:   # one row per org and integration: the rows' secrets are one secret
        constraints = [models.UniqueConstraint(fields=["organisation", "integration_key"],
                                               name="one_integration_per_org")]
```

``keysafe_org`` (required), ``keysafe_domain`` and ``keysafe_credentials_name`` are
format strings over the row's attributes (``{pk}``, ``{organisation_id}``). Each is
checked as a path segment, so a column holding ``/`` or ``..`` cannot move a secret out
of its org segment (InvalidName). Which org the segment names is the column's: rows
naming the same org share its secrets, so name orgs by ids, not by text a user edits.
"""

from __future__ import annotations

import builtins
import logging
import string
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from django.views.decorators.debug import sensitive_variables

from keysafe.errors import ConfigError, KeysafeError, NotFound

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata, VersionInfo

__all__ = ["KeysafeCredentialsMixin", "KeysafeSecretsMixin"]

log = logging.getLogger("keysafe.django")
F = TypeVar("F", bound=Callable[..., Any])


def hidden(fn: F) -> F:
    """Django's error reports (500 mails, and any reporter using Django's filter; with
    DEBUG off) show none of the variables of ``fn`` or of anything it calls: values pass
    through them."""
    hidden: F = sensitive_variables()(fn)
    return hidden


class _RowFormatter(string.Formatter):
    """``str.format`` over a row's attributes (``{pk}``, ``{organisation.slug}``); an
    attribute that is None (a row not saved yet) is refused, never spelt "None"."""

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        return getattr(kwargs["row"], str(key))

    def get_field(self, field_name: str, args: Sequence[Any],
                  kwargs: Mapping[str, Any]) -> Any:
        obj, first = super().get_field(field_name, args, kwargs)
        if obj is None:
            raise ConfigError(f"{type(kwargs['row']).__name__}.{field_name} is not set yet "
                              "(save the row before it holds secrets)")
        return obj, first


def _fill(row: object, setting: str, template: str | None) -> str:
    """``template`` filled from ``row`` and checked as a ``setting`` segment."""
    from keysafe.naming import validate_segment

    if template is None:
        raise ConfigError(f"{type(row).__name__}.{setting} is not set: name the org the "
                          "row's secrets belong to, e.g. keysafe_org = \"{organisation_id}\"")
    try:
        filled = _RowFormatter().vformat(template, (), {"row": row})
    except AttributeError as exc:
        raise ConfigError(f"{type(row).__name__}.{setting} {template!r} names an attribute "
                          f"the row lacks: {exc}") from None
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"{type(row).__name__}.{setting} {template!r} is not a usable "
                          f"format string: {exc}") from None
    return validate_segment(_SEGMENT[setting], filled)


_SEGMENT = {"keysafe_org": "org", "keysafe_domain": "domain",
            "keysafe_credentials_name": "name"}


class KeysafeSecretsMixin:
    """Named secrets for one row: its org's (and domain's) secrets in keysafe."""

    #: The org segment: a format string over the row's attributes (required; use ids,
    #: not names a user can edit).
    keysafe_org: ClassVar[str | None] = None
    #: The domain segment (a format string too); None: the configured default domain.
    keysafe_domain: ClassVar[str | None] = None
    #: The secrets this row owns: SecretsForm's fields, and what a deleted row's
    #: clean-up removes.
    keysafe_secrets: ClassVar[tuple[str, ...]] = ()
    #: Soft-delete the row's secrets when the row is deleted (after the transaction
    #: commits; restorable within the recovery window).
    keysafe_delete_with_row: ClassVar[bool] = False
    #: Spell the name of a key set with ``set_llm_api_key`` in kebab case
    #: (``openai-api-key``, spec 000's layout) rather than the catalog's ``openai_api_key``.
    keysafe_kebab_names: ClassVar[bool] = False

    # -- scope ---------------------------------------------------------------------
    def keysafe_manager(self) -> SecretManager:
        """The manager this row's secrets go through (override to use another)."""
        from keysafe.integrations.django import secret_manager

        return secret_manager()

    def keysafe_scope(self) -> tuple[str, str | None]:
        """(org, domain) of this row's secrets."""
        org = _fill(self, "keysafe_org", self.keysafe_org)
        domain = (None if self.keysafe_domain is None
                  else _fill(self, "keysafe_domain", self.keysafe_domain))
        return org, domain

    def keysafe_owned(self) -> tuple[str, ...]:
        """The names a deleted row's clean-up removes."""
        return self.keysafe_secrets

    def secret_path(self, name: str) -> str:
        """The full path of this row's secret ``name`` (no read)."""
        org, domain = self.keysafe_scope()
        return self.keysafe_manager().path(name, org, domain=domain)

    # -- verbs ---------------------------------------------------------------------
    @hidden
    def get_secret(self, name: str, default: str | None = None) -> str | None:
        """The secret's current value, or ``default`` when it is not set."""
        org, domain = self.keysafe_scope()
        try:
            return self.keysafe_manager().get(name, org, domain=domain)
        except NotFound:
            return default

    @hidden
    def set_secret(self, name: str, value: str, **kw: Any) -> VersionInfo:
        """Write a new version (``put``'s keywords: ``description``, ``expected_version``,
        ``check_format``, ...)."""
        org, domain = self.keysafe_scope()
        return self.keysafe_manager().put(name, value, org, domain=domain, **kw)

    def has_secret(self, name: str) -> bool:
        org, domain = self.keysafe_scope()
        return self.keysafe_manager().has(name, org, domain=domain)

    def describe_secret(self, name: str) -> SecretMetadata | None:
        """The secret's metadata (never its value), or None when it is not set."""
        org, domain = self.keysafe_scope()
        try:
            return self.keysafe_manager().describe(name, org, domain=domain)
        except NotFound:
            return None

    def delete_secret(self, name: str, *, force: bool = False) -> bool:
        """Soft-delete (``force``: purge now); False when there was nothing to delete."""
        org, domain = self.keysafe_scope()
        try:
            self.keysafe_manager().delete(name, org, domain=domain, force=force)
        except NotFound:
            return False
        return True

    def secret_status(self, names: builtins.list[str] | tuple[str, ...] | None = None
                      ) -> dict[str, SecretMetadata | None]:
        """Metadata (None: not set) of ``names``, by default the secrets the row owns
        (``keysafe_secrets``, and a credentials row's credentials), else every secret in
        the row's org and domain: a blind-write settings page's status."""
        org, domain = self.keysafe_scope()
        mgr = self.keysafe_manager()
        if names is None:
            names = self.keysafe_owned() or None
        if names is None:
            listed = mgr.list(org, domain=domain if domain is not None else mgr.default_domain)
            return {mgr.parse(m.path).name: m for m in listed}
        return {n: self.describe_secret(n) for n in names}

    # -- LLM keys (spec 000's set_llm_*_api_key / get_llm_*_api_key) -------------------
    def llm_key_name(self, provider: str) -> str:
        """The secret name ``provider``'s key is stored under."""
        entry = self.keysafe_manager().catalog.for_provider(provider)
        name = entry.name if entry else f"{provider.lower()}_api_key"
        return name.replace("_", "-") if self.keysafe_kebab_names else name

    @hidden
    def set_llm_api_key(self, provider: str, value: str, **kw: Any) -> VersionInfo:
        """Store ``provider``'s API key (checked against the provider's format)."""
        return self.set_secret(self.llm_key_name(provider), value, **kw)

    @hidden
    def get_llm_api_key(self, provider: str) -> str | None:
        """Spec 001: the domain's key for ``provider``, else the org's shared one, else
        None. Both spellings (``openai_api_key``, ``openai-api-key``) are found."""
        org, domain = self.keysafe_scope()
        return self.keysafe_manager().get_llm_api_key(org, provider, domain)


class KeysafeCredentialsMixin(KeysafeSecretsMixin):
    """One JSON object of credentials for the row (spec 000's OrganisationIntegration):
    ``credentials``, ``get_credential``, ``set_credentials``, ``update_credentials``."""

    keysafe_domain: ClassVar[str | None] = "integrations"
    #: The credentials' secret name: a format string over the row's attributes (by
    #: default the model's name and the row's pk: ``organisationintegration-7``).
    keysafe_credentials_name: ClassVar[str] = "{_meta.model_name}-{pk}"
    #: The credentials' fields, for CredentialsForm and the admin's Secrets page
    #: (``("bot_token", "signing_secret", "app_token")``).
    keysafe_credential_fields: ClassVar[tuple[str, ...]] = ()

    def credentials_name(self) -> str:
        return _fill(self, "keysafe_credentials_name", self.keysafe_credentials_name)

    def keysafe_owned(self) -> tuple[str, ...]:
        return (self.credentials_name(), *self.keysafe_secrets)

    @property
    @hidden
    def credentials(self) -> dict[str, Any]:
        """The stored credentials ({} when none are stored)."""
        org, domain = self.keysafe_scope()
        try:
            return self.keysafe_manager().get_json(self.credentials_name(), org,
                                                   domain=domain)
        except NotFound:
            return {}

    @hidden
    def get_credential(self, key: str, default: Any = None) -> Any:
        """One field of the credentials, or ``default``; the other fields are not kept."""
        org, domain = self.keysafe_scope()
        try:
            return self.keysafe_manager().get_json_field(self.credentials_name(), key,
                                                         org, domain=domain)
        except NotFound:
            return default

    @hidden
    def set_credentials(self, data: Mapping[str, Any], **kw: Any) -> VersionInfo:
        """Replace the credentials with ``data`` (a JSON object)."""
        org, domain = self.keysafe_scope()
        return self.keysafe_manager().put_json(self.credentials_name(), data, org,
                                               domain=domain, **kw)

    @hidden
    def update_credentials(self, changes: Mapping[str, Any]) -> VersionInfo:
        """Merge ``changes`` into the credentials, keeping the other fields (None
        removes a field); check-and-set, so concurrent updates lose nothing."""
        org, domain = self.keysafe_scope()
        return self.keysafe_manager().update_json(self.credentials_name(), changes, org,
                                                  domain=domain)

    def has_credentials(self) -> bool:
        return self.has_secret(self.credentials_name())

    def delete_credentials(self, *, force: bool = False) -> bool:
        return self.delete_secret(self.credentials_name(), force=force)


def delete_with_row(sender: type, instance: object, using: str, **_: Any) -> None:
    """post_delete (the models with ``keysafe_delete_with_row``): the row's secrets are
    soft-deleted once its transaction commits (never for a rolled-back delete). The
    scope is read now, while the row's fields are set, and a secret written after this
    moment (a new row taking the same name in the same transaction) is left alone.
    Nothing here can undo the row's delete: a row whose naming is unusable owns no
    secrets, and a store that fails after the commit is logged (names only)."""
    if not isinstance(instance, KeysafeSecretsMixin) or not instance.keysafe_delete_with_row:
        return
    deleted_at = datetime.now(UTC)
    try:
        org, domain = instance.keysafe_scope()
        names = instance.keysafe_owned()
        mgr = instance.keysafe_manager()
    except KeysafeError as exc:
        log.warning("keysafe: deleted %s row owns no secrets: %s", sender.__name__,
                    exc.message)
        return

    def remove() -> None:
        for name in names:
            path = mgr.path(name, org, domain=domain)
            try:
                meta = mgr.describe(name, org, domain=domain)
                if meta.updated_at > deleted_at:
                    log.info("keysafe: kept %s: written after its %s row was deleted",
                             path, sender.__name__)
                    continue
                mgr.delete(name, org, domain=domain)
            except NotFound:
                log.debug("keysafe: %s was not set (or is gone already)", path)
            except KeysafeError as exc:
                log.error("keysafe: could not delete %s after its %s row was deleted: %s",
                          path, sender.__name__, exc.message)

    from django.db import transaction

    transaction.on_commit(remove, using=using, robust=True)
