"""The Django app: system checks, the KEYSAFE setting's reload in tests, and the
clean-up of secrets that belong to a deleted row."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class KeysafeConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "keysafe.integrations.django"
    label = "keysafe"
    verbose_name = "keysafe"

    def ready(self) -> None:
        from django.apps import apps
        from django.core import checks
        from django.core.signals import setting_changed
        from django.db.models.signals import class_prepared

        from keysafe.integrations.django.checks import check_settings

        checks.register(check_settings, "keysafe")
        setting_changed.connect(_setting_changed, dispatch_uid="keysafe-settings")
        # Only the models whose rows own secrets: a post_delete receiver turns Django's
        # fast (bulk) delete off for its sender, so every other model keeps it.
        for model in apps.get_models():
            _watch(model)
        class_prepared.connect(_prepared, dispatch_uid="keysafe-class-prepared")


def _watch(model: type) -> None:
    from django.db.models.signals import post_delete

    from keysafe.integrations.django.mixins import KeysafeSecretsMixin, delete_with_row

    if issubclass(model, KeysafeSecretsMixin) and model.keysafe_delete_with_row:
        post_delete.connect(delete_with_row, sender=model, weak=False,
                            dispatch_uid=f"keysafe-delete-{model.__module__}.{model.__qualname__}")


def _prepared(*, sender: type, **_: Any) -> None:
    """A model defined after the app registry was ready."""
    from django.apps import apps

    if apps.ready:
        _watch(sender)


def _setting_changed(*, setting: str, **_: Any) -> None:
    if setting == "KEYSAFE":
        from keysafe.integrations.django import reset_manager

        reset_manager()
