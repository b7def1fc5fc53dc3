"""``SecretsForm``: a blind-write settings form for a row's secrets (spec 001's
settings page, in Django). One password field per secret, never filled in: the page
shows whether each secret is set (its version and when it changed), an empty field
keeps the current value, and a "Remove" box deletes it. Values are checked against
the provider's format in ``is_valid()`` and written by ``save()``, as typed (not
stripped); no value is ever rendered back, not even after a failed check, nor shown in
Django's error reports (mark the view's POST as sensitive, as below).

```python
@sensitive_post_parameters()
def llm_settings(request, org_id):
    row = OrganisationSettings.objects.get(organisation_id=org_id)
    form = SecretsForm(request.POST or None, owner=row)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect(request.path)
    return render(request, "settings.html", {"form": form})
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django import forms
from keysafe.errors import ConfigError, KeysafeError
from keysafe.integrations.django.mixins import hidden

if TYPE_CHECKING:
    from keysafe.integrations.django.mixins import KeysafeCredentialsMixin, KeysafeSecretsMixin
    from keysafe.models import SecretMetadata

__all__ = ["CredentialsForm", "SecretsForm"]

#: The suffix of a secret's "Remove" box.
REMOVE = "__remove"


class _BlindForm(forms.Form):  # type: ignore[misc]  # Django ships no type hints
    """Password fields that are never filled in, each with an optional "Remove" box."""

    names: tuple[str, ...]

    def _take(self, names: Sequence[str], what: str, hint: str) -> tuple[str, ...]:
        taken = tuple(names)
        if not taken or len(set(taken)) != len(taken) or any(n.endswith(REMOVE)
                                                               for n in taken):
            raise ConfigError(f"{type(self).__name__} for {what} needs distinct names, not "
                              f"ending in {REMOVE}: {hint}")
        return taken

    def _field(self, name: str, label: str, help_text: str, *, removable: bool,
               placeholder: str = "") -> None:
        attrs = {"autocomplete": "new-password"}
        if placeholder:
            attrs["placeholder"] = placeholder
        self.fields[name] = forms.CharField(
            label=label, required=False, strip=False, help_text=help_text,
            widget=forms.PasswordInput(render_value=False, attrs=attrs))
        if removable:
            self.fields[name + REMOVE] = forms.BooleanField(required=False,
                                                            label=f"Remove {label}")

    def _given(self, data: dict[str, Any]) -> dict[str, str | None]:
        """name -> the new value, or None to remove it, for each field asked to change;
        a value with the Remove box ticked, or of only spaces, is an error instead."""
        out: dict[str, str | None] = {}
        for name in self.names:
            value, remove = data.get(name), data.get(name + REMOVE)
            if value and remove:
                self.add_error(name, "give a new value or remove it, not both")
            elif value and not value.strip():
                self.add_error(name, "the value is only spaces")
            elif value:
                out[name] = value
            elif remove:
                out[name] = None
        return out

    def _changes(self) -> dict[str, str | None]:
        if not self.is_valid():
            raise ValueError(f"{type(self).__name__}.save() needs a valid form "
                             "(is_valid() is False)")
        return self._given(dict(self.cleaned_data))


class SecretsForm(_BlindForm):
    """Blind-write fields for ``owner``'s secrets (``names``, by default the row's
    ``keysafe_secrets``)."""

    def __init__(self, data: Any = None, files: Any = None, *, owner: KeysafeSecretsMixin,
                 names: Sequence[str] | None = None, **kw: Any) -> None:
        super().__init__(data, files, **kw)
        self.owner = owner
        self.names = self._take(names if names is not None else owner.keysafe_secrets,
                                type(owner).__name__,
                                "pass names=... or set keysafe_secrets on the model")
        catalog = owner.keysafe_manager().catalog
        self.status: dict[str, SecretMetadata | None] = owner.secret_status(self.names)
        for name in self.names:
            entry = catalog.get(name)
            meta = self.status[name]
            self._field(name, entry.display_name if entry else name, _shown(meta),
                        removable=meta is not None,
                        placeholder=entry.placeholder if meta is None and entry else "")

    @hidden
    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean()
        org, domain = self.owner.keysafe_scope()
        mgr = self.owner.keysafe_manager()
        for name, value in self._given(data).items():
            if value is None:
                continue
            try:
                mgr.check_value(name, value, org, domain=domain)
            except KeysafeError as exc:  # the message never holds the value
                self.add_error(name, exc.message)
        return data

    @hidden
    def save(self) -> list[dict[str, Any]]:
        """Write the new values and remove the ticked ones; returns what changed
        (``{"name", "action": "written" | "removed", "version"}``), never a value."""
        changes: list[dict[str, Any]] = []
        for name, value in self._changes().items():
            if value is not None:
                info = self.owner.set_secret(name, value)
                changes.append({"name": name, "action": "written", "version": info.version})
            elif self.owner.delete_secret(name):
                changes.append({"name": name, "action": "removed", "version": None})
        return changes


class CredentialsForm(_BlindForm):
    """Blind-write fields for the fields of ``owner``'s JSON credentials (``fields``, by
    default the model's ``keysafe_credential_fields``): spec 000's
    ``update_credentials``. A field left empty keeps its stored value, "Remove" drops
    it, and the first save needs every field. The stored object is never read."""

    def __init__(self, data: Any = None, files: Any = None, *,
                 owner: KeysafeCredentialsMixin, fields: Sequence[str] | None = None,
                 **kw: Any) -> None:
        super().__init__(data, files, **kw)
        self.owner = owner
        self.names = self._take(fields if fields is not None else owner.keysafe_credential_fields,
                                type(owner).__name__,
                                "pass fields=... or set keysafe_credential_fields on the model")
        self.meta = owner.describe_secret(owner.credentials_name())
        for name in self.names:
            self._field(name, name, "Leave empty to keep the stored value." if self.meta
                        else "Needed: the credentials are not stored yet.",
                        removable=self.meta is not None)

    @hidden
    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean()
        given = self._given(data)
        if self.meta is None:
            for name in self.names:
                if name not in given and name not in self.errors:
                    self.add_error(name, "every field is needed the first time")
        return data

    @hidden
    def save(self) -> list[dict[str, Any]]:
        """Merge the new fields in and drop the removed ones (check-and-set); returns
        what changed (``{"name", "action": "written", "version", "fields"}``), or [] when
        nothing was asked for. Never a value."""
        changes = self._changes()
        if not changes:
            return []
        info = self.owner.update_credentials(changes)
        return [{"name": self.owner.credentials_name(), "action": "written",
                 "version": info.version, "fields": sorted(changes)}]


def _shown(meta: SecretMetadata | None) -> str:
    if meta is None:
        return "Not set."
    return (f"Set: version {meta.current_version}, changed "
            f"{meta.updated_at:%Y-%m-%d %H:%M} UTC. Leave empty to keep it.")
