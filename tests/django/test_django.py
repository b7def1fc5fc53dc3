"""keysafe.integrations.django on a real Django (5.x) project with a file database and
keysafe's embedded store: spec 000's OrganisationSettings and OrganisationIntegration,
the blind-write form, the request's user in the audit log, system checks, clean-up of
a deleted row's secrets and ``manage.py test_secrets``."""

from __future__ import annotations

import itertools
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client, override_settings
from ksapp.models import Organisation, OrganisationIntegration, OrganisationSettings, Team

from keysafe.errors import ConfigError, InvalidName
from keysafe.integrations.django import acting_as, base_manager, reset_manager, secret_manager
from keysafe.integrations.django.forms import SecretsForm

OPENAI = "sk-" + "Q7" * 20
CANARY = "canary-django-\u00e9-7f3a91c"

pytestmark = pytest.mark.usefixtures("keysafe_django")


def org_settings() -> OrganisationSettings:
    org = Organisation.objects.create(slug="acme")
    return OrganisationSettings.objects.create(organisation=org)


def integration(key: str = "slack") -> OrganisationIntegration:
    org = Organisation.objects.create(slug="acme")
    return OrganisationIntegration.objects.create(organisation=org, integration_key=key)


def actors(action: str) -> list[str]:
    from keysafe.manager.audit import AuditFilter

    return [e.actor for e in base_manager().audit_query(AuditFilter(action=action))]


def key_reads() -> list[Any]:
    """The successful reads of the OpenAI key, oldest first."""
    return [e for e in base_manager().audit_query()
            if e.action == "read" and e.outcome == "ok" and e.path.endswith("openai-api-key")]


# -- spec 000's models ---------------------------------------------------------------
def test_llm_keys_live_in_keysafe_at_spec_000s_paths() -> None:
    row = org_settings()
    info = row.set_llm_api_key("openai", OPENAI)
    assert info.version == 1
    assert row.secret_path("openai-api-key") == (
        f"/ragstar/local/org-{row.organisation_id}/llm/openai-api-key")
    assert row.get_llm_api_key("openai") == OPENAI
    assert row.get_llm_api_key("anthropic") is None
    assert row.has_secret("openai-api-key")
    fresh = OrganisationSettings.objects.get(pk=row.pk)   # nothing was kept on the row
    assert fresh.get_llm_api_key("openai") == OPENAI


def test_llm_key_falls_back_to_the_orgs_shared_key() -> None:
    row = org_settings()
    base_manager().put("openai_api_key", OPENAI, str(row.organisation_id))
    assert row.get_llm_api_key("openai") == OPENAI


def test_a_key_in_the_wrong_format_is_refused_and_nothing_is_written() -> None:
    from keysafe.errors import InvalidValue

    row = org_settings()
    with pytest.raises(InvalidValue, match="OpenAI") as err:
        row.set_llm_api_key("openai", "not-a-key-" + CANARY)
    assert CANARY not in str(err.value)
    assert not row.has_secret("openai-api-key")


def test_integration_credentials_are_one_json_object() -> None:
    row = integration()
    assert row.credentials == {}
    assert not row.has_credentials()
    row.set_credentials({"bot_token": "xoxb-1", "signing_secret": CANARY, "app_token": "x"})
    assert row.secret_path("credentials") == (
        f"/ragstar/local/org-{row.organisation_id}/slack/credentials")
    assert row.get_credential("bot_token") == "xoxb-1"
    assert row.get_credential("missing", "dflt") == "dflt"
    row.update_credentials({"bot_token": "xoxb-2", "app_token": None})
    assert row.credentials == {"bot_token": "xoxb-2", "signing_secret": CANARY}
    assert row.describe_secret("credentials").current_version == 2
    assert row.delete_credentials()
    assert not row.delete_credentials()
    assert row.credentials == {}


def test_values_never_reach_the_database_logs_reprs_or_audit(
        db_file: Path, tmp_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    row = integration()
    row.set_credentials({"signing_secret": CANARY})
    row.update_credentials({"bot_token": CANARY + "-2"})
    assert row.get_credential("signing_secret") == CANARY
    settings_row = org_settings()
    settings_row.set_secret("webhook-token", CANARY + "-3")
    row.save()
    settings_row.save()
    reset_manager()   # closed: every write is in the files
    needle = CANARY.encode()
    for f in [db_file, *tmp_home.rglob("*")]:
        if f.is_file():
            assert needle not in f.read_bytes(), f
    assert CANARY not in caplog.text
    assert CANARY not in repr(row) + repr(settings_row)
    records = [e.to_dict() for e in secret_manager().audit_query()]
    assert records
    assert CANARY not in json.dumps(records, default=str)


def test_row_attributes_cannot_move_a_secret_out_of_its_org() -> None:
    for slug in ("a/b", "..", "", "x" * 300):
        team = Team.objects.create(slug=slug)
        with pytest.raises(InvalidName):
            team.set_secret("webhook_secret", CANARY)
    with pytest.raises(ConfigError, match="not set yet"):
        Team(slug=None).set_secret("webhook_secret", CANARY)
    assert base_manager().list() == []


def test_an_unsaved_row_has_no_org() -> None:
    unsaved = OrganisationSettings(organisation_id=None)
    with pytest.raises(ConfigError, match="organisation_id is not set yet"):
        unsaved.set_llm_api_key("openai", OPENAI)


_proxies = itertools.count(1)


def named_by(base: type, org_template: str) -> Any:
    """A proxy of ``base`` whose rows name their org by ``org_template``."""
    meta = type("Meta", (), {"app_label": "ksapp", "proxy": True})
    return type(f"NamedBy{next(_proxies)}", (base,),
                {"keysafe_org": org_template, "Meta": meta, "__module__": __name__})


def test_a_naming_attribute_the_model_lacks_is_named() -> None:
    with pytest.raises(ConfigError, match="no attribute 'tenant_id'"):
        named_by(Team, "{tenant_id}")(slug="x").get_secret("webhook_secret")


# -- deleting a row ------------------------------------------------------------------
def test_deleting_the_row_soft_deletes_its_secrets_after_commit() -> None:
    row = integration()
    row.set_credentials({"bot_token": "xoxb-1"})
    org = str(row.organisation_id)
    mgr = base_manager()
    row.delete()
    assert not mgr.has("credentials", org, domain="slack")
    mgr.restore("credentials", org, domain="slack")   # within the recovery window
    assert mgr.get_json("credentials", org, domain="slack") == {"bot_token": "xoxb-1"}


def test_a_rolled_back_delete_keeps_the_secrets() -> None:
    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)

    class Undo(Exception):
        pass

    pk = row.pk
    def delete_then_fail() -> None:
        with transaction.atomic():
            row.delete()
            raise Undo

    with pytest.raises(Undo):
        delete_then_fail()
    assert OrganisationSettings.objects.filter(pk=pk).exists()
    assert row.get_llm_api_key("openai") == OPENAI


# -- the blind-write form ------------------------------------------------------------
def test_form_shows_status_never_values() -> None:
    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    form = SecretsForm(owner=row)
    html = form.as_p()
    assert OPENAI not in html
    assert "Set: version 1" in html
    assert "Not set." in html
    assert 'type="password"' in html
    assert "openai-api-key__remove" in html
    assert "anthropic-api-key__remove" not in html


def test_form_refuses_a_bad_value_and_never_echoes_it() -> None:
    row = org_settings()
    form = SecretsForm({"openai-api-key": "sk-" + CANARY}, owner=row)
    assert not form.is_valid()
    assert "OpenAI" in str(form.errors["openai-api-key"])
    assert CANARY not in form.as_p() + str(form.errors.as_json())
    with pytest.raises(ValueError, match="valid form"):
        form.save()
    assert not row.has_secret("openai-api-key")


def test_form_writes_keeps_and_removes() -> None:
    row = org_settings()
    row.set_secret("webhook-token", "old-" + CANARY)
    row.set_llm_api_key("openai", OPENAI)
    form = SecretsForm({"anthropic-api-key": "sk-ant-" + "b" * 40,
                        "openai-api-key": "", "webhook-token__remove": "on"}, owner=row)
    assert form.is_valid(), form.errors
    changes = form.save()
    assert changes == [{"name": "anthropic-api-key", "action": "written", "version": 1},
                       {"name": "webhook-token", "action": "removed", "version": None}]
    assert row.get_llm_api_key("openai") == OPENAI          # empty: kept
    assert row.get_secret("webhook-token") is None
    assert CANARY not in json.dumps(changes)


def test_form_refuses_a_value_and_a_removal_together() -> None:
    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    form = SecretsForm({"openai-api-key": OPENAI, "openai-api-key__remove": "on"}, owner=row)
    assert not form.is_valid()
    assert "not both" in str(form.errors["openai-api-key"])


def test_form_needs_names() -> None:
    with pytest.raises(ConfigError, match="keysafe_secrets"):
        SecretsForm(owner=integration())
    form = SecretsForm(owner=integration(), names=["credentials"])
    assert list(form.fields) == ["credentials"]


# -- who the audit log names ---------------------------------------------------------
def test_requests_are_audited_as_their_user() -> None:
    from django.contrib.auth.models import User

    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    client = Client()
    assert client.get(f"/keys/{row.pk}").json() == {"set": True}
    User.objects.create_user("alice", password="pw-alice-1")
    client.login(username="alice", password="pw-alice-1")
    assert client.get(f"/keys/{row.pk}", HTTP_X_REQUEST_ID="req-42").json() == {"set": True}
    assert client.get(f"/async-keys/{row.pk}").json() == {"set": True}
    events = key_reads()
    assert [e.actor for e in events] == [
        "django:anonymous", "django:user:alice", "django:user:alice"]
    assert events[-2].request_id == "req-42"
    assert events[-1].client == "django"


def test_actor_function_and_acting_as() -> None:
    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    with override_settings(KEYSAFE_ACTOR_FUNCTION="ksapp.views.actor_of"):
        Client().get(f"/keys/{row.pk}", HTTP_X_CALLER="billing")
    with acting_as("celery:nightly"):
        row.get_llm_api_key("openai")
    row.get_llm_api_key("openai")
    assert [e.actor for e in key_reads()] == ["custom:billing", "celery:nightly", "ragstar-web"]


# -- settings, checks and the management command -------------------------------------
def test_settings_keysafe_configures_the_manager(keysafe_conf: dict[str, Any]) -> None:
    with override_settings(KEYSAFE={**keysafe_conf, "default_domain": "general",
                                    "max_value_bytes": "128"}):
        mgr = base_manager()
        assert mgr.default_domain == "general"
        assert mgr.max_value_bytes == 128


@pytest.mark.parametrize(("conf", "named"), [
    ({"no_such_setting": 1}, "no_such_setting"),
    ({"max_value_bytes": "lots"}, "max_value_bytes"),
    ({"backend_options": "region=eu"}, "backend_options"),
    ("backend=sqlite", "must be a dict"),
])
def test_check_names_an_unusable_setting(conf: Any, named: str) -> None:
    from django.core.checks import run_checks

    with override_settings(KEYSAFE=conf):
        errors = [e for e in run_checks() if e.id == "keysafe.E001"]
        assert len(errors) == 1
        assert named in errors[0].msg
        with pytest.raises(CommandError, match=named) as err:
            call_command("test_secrets", stdout=StringIO())
        assert err.value.returncode == 8     # keysafe test-secrets' configuration error


def test_check_names_an_actor_function_that_does_not_import() -> None:
    from django.core.checks import run_checks

    assert not [e for e in run_checks() if e.id.startswith("keysafe.")]
    with override_settings(KEYSAFE_ACTOR_FUNCTION="ksapp.views.nope"):
        assert [e.id for e in run_checks() if e.id.startswith("keysafe.")] == ["keysafe.E002"]


def test_manage_py_test_secrets() -> None:
    out = StringIO()
    call_command("test_secrets", stdout=out)
    assert "self-test passed" in out.getvalue()
    assert "put" in out.getvalue()
    out = StringIO()
    call_command("test_secrets", "--cleanup", "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert result["ok"]
    assert result["backend"] == "sqlite"
    assert not base_manager().list(result["org"])
    assert set(actors("write")) == {"django:manage.py test_secrets"}


# -- what a review found ---------------------------------------------------------------
def test_a_model_must_name_its_org() -> None:
    from ksapp.models import Unnamed

    row = Unnamed.objects.create()
    with pytest.raises(ConfigError, match="keysafe_org is not set"):
        row.set_secret("webhook_secret", CANARY)
    row.delete()   # its clean-up finds no org, and the delete still happens
    assert not Unnamed.objects.filter(pk=row.pk).exists()


def test_default_credentials_name_keeps_models_and_rows_apart() -> None:
    from ksapp.models import Webhook

    org = Organisation.objects.create(slug="acme")
    first, second = (Webhook.objects.create(organisation=org) for _ in range(2))
    first.set_credentials({"url": "https://a"})
    assert first.secret_path(first.credentials_name()) == (
        f"/ragstar/local/org-{org.pk}/integrations/webhook-{first.pk}")
    assert second.credentials == {}


def test_a_nested_naming_attribute_that_is_none_is_refused() -> None:
    org = Organisation.objects.create(slug="acme")
    org.slug = None
    with pytest.raises(ConfigError, match=r"organisation\.slug is not set yet"):
        named_by(OrganisationSettings, "{organisation.slug}")(organisation=org).get_secret("x")
    with pytest.raises(ConfigError, match="names an attribute the row lacks"):
        named_by(OrganisationSettings, "{organisation.tenant}")(
            organisation=org).get_secret("x")


def test_a_row_with_unusable_naming_is_still_deleted(caplog: pytest.LogCaptureFixture) -> None:
    row = integration("google drive")          # a space: not a domain segment
    org = row.organisation
    org.delete()                                # cascades to the row
    assert not OrganisationIntegration.objects.filter(pk=row.pk).exists()
    assert "owns no secrets" in caplog.text


def test_a_store_failure_after_the_commit_is_logged_not_raised(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from keysafe.errors import BackendUnavailable
    from keysafe.manager.manager import SecretManager

    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    row.set_secret("webhook-token", CANARY)

    def down(*a: Any, **kw: Any) -> None:
        raise BackendUnavailable("the store is down")

    monkeypatch.setattr(SecretManager, "delete", down)
    ran = []
    with transaction.atomic():
        row.delete()
        transaction.on_commit(lambda: ran.append("later"))
    assert ran == ["later"]                     # other callbacks still run
    assert caplog.text.count("could not delete") == 2
    assert CANARY not in caplog.text


def test_settings_none_is_not_given_and_bytes_are_refused(
        keysafe_conf: dict[str, Any]) -> None:
    from django.core.checks import run_checks

    with override_settings(KEYSAFE={**keysafe_conf, "default_org": None, "actor": None}):
        mgr = base_manager()
        assert mgr.default_org is None
        assert mgr.actor != "None"
    with override_settings(KEYSAFE={**keysafe_conf, "master_key": b"k" * 32}):
        errors = [e.msg for e in run_checks() if e.id == "keysafe.E001"]
        assert errors == ["setting master_key from settings.KEYSAFE['master_key'] must be "
                          "text, a number or a path, not bytes"]


def test_streamed_responses_and_async_views_read_as_the_user() -> None:
    from django.contrib.auth.models import User
    from django.test import AsyncClient

    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    User.objects.create_user("bob", password="pw-bob-1")
    client = Client()
    client.login(username="bob", password="pw-bob-1")
    response = client.get(f"/stream/{row.pk}")
    assert b"".join(response.streaming_content) == b"start set"
    assert client.get(f"/direct-async/{row.pk}").json() == {"actor": "django:user:bob"}
    assert [e.actor for e in key_reads()] == ["django:user:bob"]

    bob = User.objects.get(username="bob")

    async def under_asgi() -> Any:
        aclient = AsyncClient()
        await aclient.aforce_login(bob)
        return await aclient.get(f"/direct-async/{row.pk}")

    from asgiref.sync import async_to_sync

    assert async_to_sync(under_asgi)().json() == {"actor": "django:user:bob"}


def test_only_a_well_formed_request_id_is_recorded() -> None:
    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    Client().get(f"/keys/{row.pk}", HTTP_X_REQUEST_ID="bad id\nwith spaces" + "x" * 100)
    Client().get(f"/keys/{row.pk}", HTTP_X_REQUEST_ID="req.7-ok")
    assert [e.request_id for e in key_reads()] == [None, "req.7-ok"]


def test_error_reports_show_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 500 mail (DEBUG off) for a failed save holds neither the POST value nor any
    frame's copy of it."""
    import sys

    from django.test import RequestFactory
    from django.views.debug import ExceptionReporter
    from django.views.decorators.debug import sensitive_post_parameters

    from keysafe.errors import BackendUnavailable
    from keysafe.manager.manager import SecretManager

    row = org_settings()

    def down(self: Any, name: str, value: str, *a: Any, **kw: Any) -> None:
        raise BackendUnavailable("the store is down")

    monkeypatch.setattr(SecretManager, "put", down)

    @sensitive_post_parameters()
    def view(request: Any) -> None:
        form = SecretsForm(request.POST, owner=row)
        assert form.is_valid()
        form.save()

    request = RequestFactory().post("/settings", {"webhook-token": CANARY})
    with pytest.raises(BackendUnavailable):
        view(request)
    report = ExceptionReporter(request, *sys.exc_info())
    assert CANARY not in report.get_traceback_text()
    assert CANARY not in report.get_traceback_html()
    try:
        row.set_secret("webhook-token", CANARY)
    except BackendUnavailable:
        report = ExceptionReporter(None, *sys.exc_info())
    assert CANARY not in report.get_traceback_text()


def test_form_keeps_spaces_and_refuses_a_value_of_only_spaces() -> None:
    row = org_settings()
    form = SecretsForm({"webhook-token": "   "}, owner=row)
    assert not form.is_valid()
    assert "only spaces" in str(form.errors["webhook-token"])
    form = SecretsForm({"webhook-token": " tok en "}, owner=row)
    assert form.is_valid()
    form.save()
    assert row.get_secret("webhook-token") == " tok en "
    with pytest.raises(ConfigError, match="distinct"):
        SecretsForm(owner=row, names=["a", "a"])


def test_secret_status_lists_the_rows_own_domain(keysafe_conf: dict[str, Any]) -> None:
    team = Team.objects.create(slug="blue")
    mgr = base_manager()
    mgr.put("api_token", "t-shared", "blue")
    mgr.put("api_token", "t-billing", "blue", domain="billing")
    mgr.put("other", "o", "blue", domain="billing")
    assert list(team.secret_status()) == ["api_token"]
    assert team.secret_status()["api_token"].path.endswith("/shared/api_token")


def test_middleware_before_authentication_is_flagged() -> None:
    from django.conf import settings
    from django.core.checks import run_checks

    reordered = list(reversed(settings.MIDDLEWARE))
    with override_settings(MIDDLEWARE=reordered):
        assert "keysafe.W001" in [e.id for e in run_checks()]


# -- what a second review found -----------------------------------------------------------
def test_other_models_keep_django_fast_delete() -> None:
    from django.contrib.sessions.models import Session
    from django.db.models.signals import post_delete

    assert not post_delete.has_listeners(Session)
    assert post_delete.has_listeners(OrganisationSettings)
    assert not post_delete.has_listeners(Team)            # keysafe_delete_with_row off
    assert post_delete.has_listeners(named_by(OrganisationSettings, "{organisation_id}"))


def test_a_secret_written_after_the_delete_is_kept() -> None:
    old = integration()
    old.set_credentials({"bot_token": "xoxb-old"})
    with transaction.atomic():
        org = old.organisation
        old.delete()
        new = OrganisationIntegration.objects.create(organisation=org, integration_key="slack")
        new.set_credentials({"bot_token": "xoxb-new"})
    assert new.credentials == {"bot_token": "xoxb-new"}


def test_the_user_is_looked_up_only_when_a_secret_is_touched() -> None:
    from django.contrib.auth.models import User

    User.objects.create_user("carol", password="pw-carol-1")
    client = Client()
    client.login(username="carol", password="pw-carol-1")
    assert "Cookie" not in client.get("/plain").get("Vary", "")
    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    User.objects.create_user("dave", password="pw-dave-1")
    assert Client().get(f"/signs-in/{row.pk}", HTTP_X_USER="dave").json() == {"set": True}
    assert [e.actor for e in key_reads()] == ["django:user:dave"]


def test_a_failing_actor_function_does_not_take_requests_down(
        caplog: pytest.LogCaptureFixture) -> None:
    row = org_settings()
    row.set_llm_api_key("openai", OPENAI)
    with override_settings(KEYSAFE_ACTOR_FUNCTION="ksapp.views.broken_actor"):
        assert Client().get("/plain").status_code == 200
        assert Client().get(f"/keys/{row.pk}").json() == {"set": True}
    assert [e.actor for e in key_reads()] == ["django:unknown"]
    assert "KEYSAFE_ACTOR_FUNCTION ksapp.views.broken_actor failed" in caplog.text


def test_no_authentication_middleware_is_flagged() -> None:
    from django.conf import settings
    from django.core.checks import run_checks

    without = [m for m in settings.MIDDLEWARE if not m.endswith("AuthenticationMiddleware")]
    with override_settings(MIDDLEWARE=without):
        assert "keysafe.W001" in [e.id for e in run_checks()]
        with override_settings(KEYSAFE_ACTOR_FUNCTION="ksapp.views.actor_of"):
            assert "keysafe.W001" not in [e.id for e in run_checks()]


def test_a_credentials_rows_status_is_its_own_credentials() -> None:
    first = integration()
    first.set_credentials({"bot_token": "xoxb-1"})
    second = OrganisationIntegration.objects.create(organisation=first.organisation,
                                                    integration_key="slack-2")
    assert list(second.secret_status()) == ["credentials"]
    assert second.secret_status()["credentials"] is None
