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
        from django.core import checks
        from django.core.signals import setting_changed
        from django.db.models.signals import post_delete

        from keysafe.integrations.django.checks import check_settings
        from keysafe.integrations.django.mixins import delete_with_row

        checks.register(check_settings, "keysafe")
        setting_changed.connect(_setting_changed, dispatch_uid="keysafe-settings")
        # Every model (those defined later too); the handler picks the mixin's rows.
        post_delete.connect(delete_with_row, weak=False, dispatch_uid="keysafe-delete-with-row")


def _setting_changed(*, setting: str, **_: Any) -> None:
    if setting == "KEYSAFE":
        from keysafe.integrations.django import reset_manager

        reset_manager()
