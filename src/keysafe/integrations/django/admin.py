"""The Django admin: a "Secrets" page for each row of a model with keysafe's mixins
(spec 000's "re-configure integrations through the UI"), blind-write.

```python
from django.contrib import admin
from keysafe.integrations.django.admin import KeysafeSecretsAdminMixin

@admin.register(OrganisationSettings)
class OrganisationSettingsAdmin(KeysafeSecretsAdminMixin, admin.ModelAdmin):
    pass
```

The row's change page gets a "Secrets" button. The page shows whether each secret in
``keysafe_secrets`` is set (version, when it changed) and, for
``KeysafeCredentialsMixin`` rows with ``keysafe_credential_fields``, one field per
credential field; it never shows or renders a value. Staff with the model's change
permission may set and remove; with view permission only, they see the status. Every
write is audited as ``django:user:<username>`` (the request's user, with the actor
middleware). The POST is marked sensitive: Django's error reports leave it out.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.debug import sensitive_post_parameters

from keysafe.errors import KeysafeError
from keysafe.integrations.django.forms import REMOVE, CredentialsForm, SecretsForm
from keysafe.integrations.django.mixins import KeysafeCredentialsMixin, KeysafeSecretsMixin

__all__ = ["KeysafeSecretsAdminMixin"]


class KeysafeSecretsAdminMixin:
    """For a ``ModelAdmin`` of a model with ``KeysafeSecretsMixin`` (or
    ``KeysafeCredentialsMixin``): a blind-write Secrets page per row."""

    change_form_template = "keysafe/admin/change_form.html"

    def get_urls(self) -> list[Any]:
        opts = self.model._meta  # type: ignore[attr-defined]
        # The POST holds values: Django's error reports leave it out.
        view = self.admin_site.admin_view(  # type: ignore[attr-defined]
            sensitive_post_parameters()(self.keysafe_secrets_view))
        mine = [path("<path:object_id>/secrets/", view,
                     name=f"{opts.app_label}_{opts.model_name}_keysafe_secrets")]
        return mine + super().get_urls()  # type: ignore[misc,no-any-return]

    def change_view(self, request: Any, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> Any:
        opts = self.model._meta  # type: ignore[attr-defined]
        url = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}"  # type: ignore[attr-defined]
                      "_keysafe_secrets", args=[quote(object_id)])
        return super().change_view(  # type: ignore[misc]
            request, object_id, form_url, {**(extra_context or {}), "keysafe_secrets_url": url})

    def keysafe_forms(self, request: Any, obj: KeysafeSecretsMixin) -> list[Any]:
        """The page's forms: the named secrets (``keysafe_secrets``) and the credential
        fields (``keysafe_credential_fields``), each with its own prefix."""
        data = request.POST if request.method == "POST" else None
        forms: list[Any] = []
        if isinstance(obj, KeysafeCredentialsMixin) and obj.keysafe_credential_fields:
            forms.append(CredentialsForm(data, owner=obj, prefix="credentials"))
        if obj.keysafe_secrets:
            forms.append(SecretsForm(data, owner=obj, prefix="secrets"))
        return forms

    def keysafe_secrets_view(self, request: Any, object_id: str) -> Any:
        model_admin: Any = self
        obj = model_admin.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"no {model_admin.model._meta.verbose_name} with that id")
        if not isinstance(obj, KeysafeSecretsMixin):
            raise Http404("this model keeps no secrets in keysafe")
        if not model_admin.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        row: Any = obj  # a model instance, as Django sees it
        can_change = model_admin.has_change_permission(request, obj)
        if request.method == "POST" and not can_change:
            raise PermissionDenied
        try:
            forms = self.keysafe_forms(request, obj)
            org, domain = obj.keysafe_scope()
        except KeysafeError as exc:
            messages.error(request, f"keysafe: {exc.message}")
            return HttpResponseRedirect(reverse(
                f"{model_admin.admin_site.name}:{row._meta.app_label}_"
                f"{row._meta.model_name}_change", args=[quote(row.pk)]))
        if not can_change:
            for form in forms:
                for name in [n for n in form.fields if n.endswith(REMOVE)]:
                    del form.fields[name]
        if request.method == "POST" and all(f.is_valid() for f in forms):
            try:
                changes = [c for f in forms for c in f.save()]
            except KeysafeError as exc:  # the store, not the input: nothing is repeated
                messages.error(request, f"keysafe: {exc.message}")
            else:
                said = ", ".join(f"{c['name']} {c['action']}" for c in changes)
                messages.success(request, f"Saved: {said}." if said else "Nothing changed.")
                return HttpResponseRedirect(request.path)
        mgr = obj.keysafe_manager()
        context = {
            **model_admin.admin_site.each_context(request),
            "opts": row._meta, "original": obj, "forms": forms, "can_change": can_change,
            "title": f"Secrets of {obj}",
            "keysafe_scope": mgr.prefix(org, domain if domain is not None
                                        else mgr.default_domain),
        }
        return TemplateResponse(request, "keysafe/admin/secrets.html", context)


# What a project registers when it needs nothing more than the page.
class KeysafeSecretsAdmin(KeysafeSecretsAdminMixin, admin.ModelAdmin):  # type: ignore[misc]
    pass
