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
    from keysafe.integrations.django.mixins import KeysafeSecretsMixin
    from keysafe.models import SecretMetadata

__all__ = ["SecretsForm"]

#: The suffix of a secret's "Remove" box.
REMOVE = "__remove"


class SecretsForm(forms.Form):  # type: ignore[misc]  # Django ships no type hints
    """Blind-write fields for ``owner``'s secrets (``names``, by default the row's
    ``keysafe_secrets``)."""

    def __init__(self, data: Any = None, files: Any = None, *, owner: KeysafeSecretsMixin,
                 names: Sequence[str] | None = None, **kw: Any) -> None:
        super().__init__(data, files, **kw)
        self.owner = owner
        self.names = tuple(names if names is not None else owner.keysafe_secrets)
        if not self.names:
            raise ConfigError(f"SecretsForm for {type(owner).__name__} has no secrets: "
                              "pass names=... or set keysafe_secrets on the model")
        if len(set(self.names)) != len(self.names) or any(n.endswith(REMOVE)
                                                          for n in self.names):
            raise ConfigError(f"SecretsForm names must be distinct and not end in {REMOVE}: "
                              f"{', '.join(self.names)}")
        catalog = owner.keysafe_manager().catalog
        self.status: dict[str, SecretMetadata | None] = owner.secret_status(self.names)
        for name in self.names:
            entry = catalog.get(name)
            meta = self.status[name]
            label = entry.display_name if entry else name
            attrs = {"autocomplete": "new-password"}
            if meta is None and entry is not None and entry.placeholder:
                attrs["placeholder"] = entry.placeholder
            self.fields[name] = forms.CharField(
                label=label, required=False, strip=False, help_text=_shown(meta),
                widget=forms.PasswordInput(render_value=False, attrs=attrs))
            if meta is not None:
                self.fields[name + REMOVE] = forms.BooleanField(required=False,
                                                                label=f"Remove {label}")

    @hidden
    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean()
        org, domain = self.owner.keysafe_scope()
        mgr = self.owner.keysafe_manager()
        for name in self.names:
            value = data.get(name)
            if not value:
                continue
            if data.get(name + REMOVE):
                self.add_error(name, "give a new value or remove it, not both")
                continue
            if not value.strip():
                self.add_error(name, "the value is only spaces")
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
        if not self.is_valid():
            raise ValueError("SecretsForm.save() needs a valid form (is_valid() is False)")
        changes: list[dict[str, Any]] = []
        for name in self.names:
            value = self.cleaned_data.get(name)
            if value:
                info = self.owner.set_secret(name, value)
                changes.append({"name": name, "action": "written", "version": info.version})
            elif self.cleaned_data.get(name + REMOVE) and self.owner.delete_secret(name):
                changes.append({"name": name, "action": "removed", "version": None})
        return changes


def _shown(meta: SecretMetadata | None) -> str:
    if meta is None:
        return "Not set."
    return (f"Set: version {meta.current_version}, changed "
            f"{meta.updated_at:%Y-%m-%d %H:%M} UTC. Leave empty to keep it.")
