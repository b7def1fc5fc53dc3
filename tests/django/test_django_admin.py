"""The Django admin's Secrets page (keysafe.integrations.django.admin) on a real admin
site: blind write for staff with the change permission, status only with the view
permission, nothing for others; values never in a response."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from ksapp.models import Organisation, OrganisationIntegration, OrganisationSettings, Team

from keysafe.integrations.django import base_manager

OPENAI = "sk-" + "Q7" * 20
CANARY = "canary-admin-\u00e9-40d2b"

pytestmark = pytest.mark.usefixtures("keysafe_django")


def staff(name: str, *perms: str) -> Client:
    user = User.objects.create_user(name, password=f"pw-{name}-1", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.login(username=name, password=f"pw-{name}-1")
    return client


def superuser() -> Client:
    User.objects.create_superuser("root", password="pw-root-1")
    client = Client()
    client.login(username="root", password="pw-root-1")
    return client


def settings_row() -> OrganisationSettings:
    return OrganisationSettings.objects.create(
        organisation=Organisation.objects.create(slug="acme"))


def page(row: Any) -> str:
    return f"/admin/ksapp/{type(row)._meta.model_name}/{row.pk}/secrets/"


def test_admin_sets_and_removes_secrets_blind() -> None:
    row = settings_row()
    admin = superuser()
    change = admin.get(f"/admin/ksapp/organisationsettings/{row.pk}/change/")
    assert change.status_code == 200
    assert page(row).encode() in change.content
    answer = admin.get(page(row))
    assert answer.status_code == 200
    text = answer.content.decode()
    assert f"/ragstar/local/org-{row.organisation_id}/llm/" in text
    assert text.count("Not set.") == 3
    posted = admin.post(page(row), {"secrets-openai-api-key": OPENAI,
                                    "secrets-webhook-token": CANARY})
    assert posted.status_code == 302
    assert row.get_llm_api_key("openai") == OPENAI
    assert row.get_secret("webhook-token") == CANARY
    after = admin.get(page(row))
    text = after.content.decode()
    assert "Saved: openai-api-key written, webhook-token written." in text
    assert "Set: version 1" in text
    assert CANARY not in text
    assert OPENAI not in text
    admin.post(page(row), {"secrets-webhook-token__remove": "on"})
    assert row.get_secret("webhook-token") is None
    assert row.get_llm_api_key("openai") == OPENAI        # an empty field keeps it
    writes = [e for e in base_manager().audit_query() if e.action in ("write", "delete")]
    assert {e.actor for e in writes} == {"django:user:root"}


def test_a_bad_value_is_named_and_never_shown_back() -> None:
    row = settings_row()
    answer = superuser().post(page(row), {"secrets-openai-api-key": "sk-" + CANARY})
    assert answer.status_code == 200
    text = answer.content.decode()
    assert "OpenAI" in text
    assert CANARY not in text
    assert not row.has_secret("openai-api-key")


def test_credentials_field_by_field() -> None:
    org = Organisation.objects.create(slug="acme")
    row = OrganisationIntegration.objects.create(organisation=org, integration_key="slack")
    admin = superuser()
    first = admin.post(page(row), {"credentials-bot_token": "xoxb-1"})
    assert first.status_code == 200
    assert "every field is needed the first time" in first.content.decode()
    assert not row.has_credentials()
    answer = admin.post(page(row), {"credentials-bot_token": "xoxb-1",
                                    "credentials-signing_secret": CANARY,
                                    "credentials-app_token": "xapp-1"})
    assert answer.status_code == 302
    admin.post(page(row), {"credentials-bot_token": "xoxb-2",
                           "credentials-app_token__remove": "on"})
    assert row.credentials == {"bot_token": "xoxb-2", "signing_secret": CANARY}
    assert CANARY not in admin.get(page(row)).content.decode()


def test_view_permission_sees_status_only_and_others_nothing() -> None:
    row = settings_row()
    row.set_llm_api_key("openai", OPENAI)
    viewer = staff("vera", "view_organisationsettings")
    answer = viewer.get(page(row))
    assert answer.status_code == 200
    text = answer.content.decode()
    assert "Set: version 1" in text
    assert 'type="password"' not in text
    assert "__remove" not in text
    assert viewer.post(page(row), {"secrets-openai-api-key": "sk-" + "Z9" * 20}
                       ).status_code == 403
    assert row.get_llm_api_key("openai") == OPENAI
    assert staff("nora").get(page(row)).status_code == 403
    assert superuser().get("/admin/ksapp/organisationsettings/999/secrets/").status_code == 404


def test_a_row_whose_naming_is_unusable_is_sent_back_with_the_reason() -> None:
    team = Team.objects.create(slug="a/b")
    answer = superuser().get(page(team), follow=True)
    assert answer.redirect_chain[-1][0].endswith(f"/admin/ksapp/team/{team.pk}/change/")
    assert "keysafe: org &#x27;a/b&#x27; contains &#x27;/&#x27;" in answer.content.decode().lower()
