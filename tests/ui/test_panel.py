"""The web panel at /ui in headless Chromium against a live ``keysafe serve``."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from .conftest import CHROMIUM, JWT_SECRET, REPO, SKIP_REASON, Stack

if not os.path.exists(CHROMIUM):
    pytest.skip(SKIP_REASON, allow_module_level=True)
pytest.importorskip("playwright.sync_api",
                    reason="the web panel tests need playwright (the dev extra)")

IMAGES = REPO / "docs" / "images"
GOOD_1 = "sk-" + "Q7" * 16
GOOD_2 = "sk-" + "R8" * 16
ANTHROPIC = "sk-ant-" + "t5" * 16

# Everything in the page, shadow roots included, and every form field's current value.
DEEP_DUMP = """() => {
  const out = [document.documentElement.outerHTML];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (typeof el.value === 'string') out.push(el.value);
      if (el.shadowRoot) { out.push(el.shadowRoot.innerHTML); walk(el.shadowRoot); }
    }
  };
  walk(document);
  return out.join('\\n');
}"""
DEEP_ACTIVE = """() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  return el ? {tag: el.tagName, text: (el.textContent || '').trim(), id: el.id,
               type: el.type || ''} : null;
}"""
FORCE_PUT = """async ([token, url]) => {
  const r = await fetch(url, {method: 'PUT',
    headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
    body: JSON.stringify({secret_value: 'sk-' + 'z'.repeat(40)})});
  return {status: r.status, body: await r.text()};
}"""


def sign_in(page: Any, stack: Stack, token: str, org: str | None = None) -> None:
    page.goto(stack.url + "/ui/")
    page.get_by_label("Access token or host JWT").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who-name").wait_for()
    if org is not None:
        field = page.get_by_label("Organization", exact=True)
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(org)
        else:
            field.fill(org)
        page.get_by_role("button", name="Open", exact=True).click()
    page.get_by_role("heading", name="LLM providers").wait_for()


def card(page: Any, name: str) -> Any:
    return page.locator(f"keysafe-secret-card[secret-name={name}]")


def add_key(page: Any, name: str, label: str, value: str) -> None:
    c = card(page, name)
    c.get_by_role("button", name="Add key").click()
    c.get_by_label(f"Value for {label}").fill(value)
    c.get_by_role("button", name="Save", exact=True).click()
    c.get_by_role("button", name="Rotate key").wait_for()


def test_panel_is_served_with_a_strict_csp(stack: Stack) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/keysafe-components.js", "/ui/panel.css"):
        r = httpx.get(stack.url + path, timeout=10)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp
        assert "style-src 'self';" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert "connect-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
    html = httpx.get(stack.url + "/ui/", timeout=10).text
    assert "<script>" not in html
    assert "style=" not in html
    assert "<style" not in html
    assert not re.search(r"(src|href)=\"https?://", html)
    assert httpx.get(stack.url + "/ui/../app.py", timeout=10).status_code == 404
    assert httpx.get(stack.url + "/ui/nothing.js", timeout=10).status_code == 404


def test_admin_adds_rotates_deletes_and_restores(open_page: Any, stack: Stack) -> None:
    page, watch = open_page()
    sign_in(page, stack, stack.keysafe.token, "acme-corp")
    openai = card(page, "openai_api_key")
    # The page checks the catalog's format before sending, next to the field.
    openai.get_by_role("button", name="Add key").click()
    field = openai.get_by_label("Value for OpenAI API Key")
    assert field.input_value() == ""
    field.fill(ANTHROPIC)
    openai.get_by_role("button", name="Save", exact=True).click()
    error = openai.locator(".field-error").first
    assert "does not look like an OpenAI API Key" in error.inner_text()
    assert field.get_attribute("aria-invalid") == "true"
    field.fill("   ")
    openai.get_by_role("button", name="Save", exact=True).click()
    assert "empty" in error.inner_text()
    assert not any(r.request.method == "PUT" for r in watch.responses)
    field.fill(GOOD_1)
    openai.get_by_role("button", name="Save", exact=True).click()
    openai.get_by_text("Saved OpenAI API Key: version 1.").wait_for()
    assert openai.locator(".badge.ok").inner_text() == "Configured"
    add_key(page, "anthropic_api_key", "Anthropic API Key", ANTHROPIC)

    # Rotate: "Save & Overwrite" only once the overwrite is confirmed.
    openai.get_by_role("button", name="Rotate key").click()
    openai.get_by_label("New value for OpenAI API Key").fill(GOOD_2)
    openai.get_by_role("button", name="Save & Overwrite").click()
    assert "confirm" in openai.locator(".field-error").nth(1).inner_text()
    openai.get_by_label(re.compile("Replace version 1")).check()
    openai.get_by_role("button", name="Save & Overwrite").click()
    openai.get_by_text("Saved OpenAI API Key: version 2.").wait_for()
    status = stack.api("GET", "/api/secrets/acme-corp/openai_api_key").json()
    assert status["configured"] is True
    assert status["version"] == 2

    # History: metadata only.
    openai.get_by_role("button", name="History").click()
    rows = openai.locator("tbody tr")
    rows.nth(1).wait_for()
    assert rows.count() == 2
    assert "current" in rows.first.inner_text()

    # Delete (confirmed), then restore within the recovery window.
    openai.get_by_role("button", name="Delete").click()
    openai.get_by_role("button", name="Yes, delete").click()
    openai.get_by_role("button", name="Restore").wait_for()
    assert openai.locator(".badge.warn").inner_text() == "Deleted"
    assert stack.api("GET", "/api/secrets/acme-corp/openai_api_key").json()["deleted"] is True
    openai.get_by_role("button", name="Restore").click()
    openai.get_by_role("button", name="Rotate key").wait_for()
    assert stack.api("GET", "/api/secrets/acme-corp/openai_api_key").json()["configured"] is True

    # A custom secret appears in its own section.
    page.get_by_label("Name", exact=True).fill("partner_api_key")
    page.get_by_label("Value", exact=True).fill("custom-" + "v" * 20)
    page.get_by_label("Description (optional)").fill("Partner sandbox")
    page.locator("#custom-save").click()
    card(page, "partner_api_key").get_by_text("Partner sandbox").wait_for()

    # The org's audit log with a filter.
    page.get_by_role("button", name="Audit log").click()
    page.get_by_label("Action").select_option("write")
    page.get_by_role("button", name="Apply filters").click()
    page.locator("#audit-table tbody tr").first.wait_for()
    actions = page.locator("#audit-table tbody tr td:nth-child(3)").all_inner_texts()
    assert actions
    assert set(actions) == {"write"}
    assert "token:bootstrap-admin" in page.locator("#audit-table").inner_text()


def test_admin_reads_the_access_report(open_page: Any, stack: Stack) -> None:
    """The "Access report" tab: keysafe audit report for the org, findings first."""
    org = "report-corp"
    stack.api("PUT", f"/api/secrets/{org}/openai_api_key", json={"secret_value": GOOD_1})
    stack.api("PUT", f"/api/secrets/{org}/anthropic_api_key", json={"secret_value": ANTHROPIC})
    viewer = stack.token("report-viewer", "viewer", [org])
    for _ in range(5):
        r = stack.api("PUT", f"/api/secrets/{org}/openai_api_key", token=viewer,
                      json={"secret_value": GOOD_2})
        assert r.status_code == 403
    page, watch = open_page()
    sign_in(page, stack, stack.keysafe.token, org)
    page.get_by_role("button", name="Access report").click()
    findings = page.locator("#report-findings")
    findings.wait_for()
    text = findings.inner_text()
    assert "token:report-viewer was denied 5 time(s)" in text
    assert "2 of 2 secret(s) were not read in this window" in text
    rows = page.locator("#report-table tbody tr")
    rows.first.wait_for()
    table = page.locator("#report-table").inner_text()
    assert "token:report-viewer" in table
    assert "token:bootstrap-admin" in table
    page.get_by_label("Window", exact=True).select_option("1")
    page.get_by_role("button", name="Show report").click()
    page.locator("#report-table").wait_for()
    assert GOOD_1 not in page.content()
    assert not watch.outside
    assert not watch.page_errors
    assert not watch.csp_violations()


def test_a_card_shows_when_the_secret_expires(open_page: Any, stack: Stack) -> None:
    from datetime import UTC, datetime, timedelta

    org = "expiry-co"
    soon = datetime.now(UTC) + timedelta(days=3)
    r = stack.api("PUT", f"/api/secrets/{org}/partner_api_key",
                  json={"secret_value": "partner-" + "e" * 24, "expires_at": soon.isoformat()})
    assert r.status_code in (200, 201), r.text
    page, _ = open_page()
    sign_in(page, stack, stack.keysafe.token, org)
    partner = card(page, "partner_api_key")
    partner.locator(".badge.warn", has_text="Expires soon").wait_for()
    assert "expires " in partner.locator(".meta").first.inner_text()


def test_admin_edits_description_and_tags_without_a_new_version(
        open_page: Any, stack: Stack) -> None:
    """The card's "Details": description and tags through PATCH, the value untouched."""
    org = "details-co"
    url = f"/api/secrets/{org}/partner_api_key"
    r = stack.api("PUT", url, json={"secret_value": "partner-" + "d" * 24,
                                    "description": "Partner sandbox",
                                    "tags": {"team": "payments", "tier": "gold"}})
    assert r.status_code in (200, 201), r.text
    page, watch = open_page()
    sign_in(page, stack, stack.keysafe.token, org)
    partner = card(page, "partner_api_key")
    partner.get_by_text("team: payments").wait_for()
    partner.get_by_role("button", name="Details").click()
    desc = partner.get_by_label("Description", exact=True)
    assert desc.input_value() == "Partner sandbox"
    assert desc.evaluate("e => e === e.getRootNode().activeElement")

    # Nothing changed: said next to the form, nothing sent.
    partner.get_by_role("button", name="Save details").click()
    error = partner.locator(".field-error[role=alert]")
    assert error.inner_text() == "Nothing changed"
    # A rotation setting is refused before anything is sent.
    partner.get_by_role("button", name="Add tag").click()
    partner.get_by_label("Tag name").last.fill("rotator")
    partner.get_by_label("Tag name").last.press("Tab")
    page.keyboard.type("webhook")
    partner.get_by_role("button", name="Save details").click()
    assert "rotation setting" in error.inner_text()
    assert not [x for x in watch.responses if x.request.method == "PATCH"]

    # Change the description, rename the new row's tag, drop one tag, change another.
    desc.fill("Partner production key")
    partner.get_by_label("Tag name").last.fill("owner")
    partner.get_by_role("button", name="Remove tag team").click()
    partner.get_by_label("Value of tag tier").fill("platinum")
    partner.get_by_role("button", name="Save details").click()
    partner.get_by_text("Saved the details of partner_api_key.").wait_for()
    partner.get_by_text("owner: webhook").wait_for()
    partner.get_by_text("Partner production key").wait_for()
    status = stack.api("GET", url).json()
    assert status["description"] == "Partner production key"
    assert status["tags"] == {"owner": "webhook", "tier": "platinum"}
    assert status["version"] == 1  # metadata only: no new version
    patches = [x for x in watch.responses if x.request.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].request.post_data_json == {
        "description": "Partner production key",
        "tags": {"owner": "webhook", "team": None, "tier": "platinum"}}
    assert not watch.page_errors
    assert not watch.csp_violations()


def test_a_json_credential_field_by_field(open_page: Any, stack: Stack) -> None:
    """Slack's JSON credentials: one password field per field to add it; a rotation
    changes only the fields filled in (PATCH .../fields), the others are kept unseen."""
    org = "fields-co"
    bot, signing, app = "xoxb-1-2-" + "k" * 24, "9" * 32, "xapp-1-A1-2-" + "m" * 24
    new_bot = "xoxb-7-8-" + "n" * 24
    page, watch = open_page()
    sign_in(page, stack, stack.keysafe.token, org)
    slack = card(page, "slack")
    slack.get_by_role("button", name="Add key").click()
    slack.get_by_label("bot_token for Slack").fill(bot)
    slack.get_by_label("signing_secret for Slack").fill(signing)
    slack.get_by_role("button", name="Save", exact=True).click()
    assert "Enter app_token" in slack.locator(".field-error").first.inner_text()
    slack.get_by_label("app_token for Slack").fill(app)
    slack.get_by_role("button", name="Save", exact=True).click()
    slack.get_by_role("button", name="Rotate key").wait_for()

    slack.get_by_role("button", name="Rotate key").click()
    slack.get_by_label(re.compile("Replace version 1")).check()
    slack.get_by_role("button", name="Save & Overwrite").click()
    assert "at least one field" in slack.locator(".field-error").first.inner_text()
    slack.get_by_label("New bot_token for Slack").fill(new_bot)
    slack.get_by_role("button", name="Save & Overwrite").click()
    slack.get_by_text("version 2").first.wait_for()

    service = stack.token("fields-reader", "service", ["*"])
    got = stack.api("GET", f"/api/secrets/{org}/slack/value", service).json()["value"]
    assert json.loads(got) == {"bot_token": new_bot, "signing_secret": signing, "app_token": app}
    patches = [r for r in watch.responses if r.request.method == "PATCH"]
    assert [r.request.post_data_json["fields"] for r in patches] == [{"bot_token": new_bot}]
    dump = page.evaluate(DEEP_DUMP)
    for value in (bot, signing, app, new_bot):
        assert value not in dump
        for r in watch.responses:
            if r.status not in (204, 304) and r.request.method != "OPTIONS":
                assert value.encode() not in r.body(), r.url
    assert not watch.page_errors


def test_rotate_now_roll_back_and_destroy(open_page: Any, stack: Stack) -> None:
    """A secret keysafe can rotate itself gets "Rotate now" (a value nobody sees); the
    history rolls back to a kept version and destroys one after a second press."""
    org = "rotate-co"
    key = "e" * 48
    page, watch = open_page()
    sign_in(page, stack, stack.keysafe.token, org)
    assert card(page, "openai_api_key").get_by_role("button", name="Rotate now").count() == 0
    add_key(page, "jwt_secret", "JWT Secret", key)
    enc = card(page, "jwt_secret")
    enc.get_by_role("button", name="Rotate now").click()
    enc.get_by_role("button", name="Yes, rotate now").click()
    enc.get_by_text("Rotated JWT Secret: version 2.").wait_for()
    service = stack.token("rotate-reader", "service", ["*"])
    url = f"/api/secrets/{org}/jwt_secret"
    rotated = stack.api("GET", url + "/value", service).json()["value"]
    assert rotated != key

    enc.get_by_role("button", name="History").click()
    enc.get_by_role("button", name="Roll back to version 1").click()
    enc.get_by_text("Rolled JWT Secret back to version 1: now version 3.").wait_for()
    assert stack.api("GET", url + "/value", service).json()["value"] == key
    destroy = enc.get_by_role("button", name="Destroy version 2")
    destroy.click()
    enc.get_by_role("button", name="Confirm: destroy version 2 for good").click()
    enc.get_by_text("Destroyed version 2 of JWT Secret.").wait_for()
    hist = {h["version"]: h["destroyed"]
            for h in stack.api("GET", url + "/versions").json()["versions"]}
    assert hist == {1: False, 2: True, 3: False}
    rows = enc.locator("tbody tr")
    assert "destroyed" in rows.nth(1).inner_text()
    for value in (key, rotated):
        assert value not in page.evaluate(DEEP_DUMP)
        for r in watch.responses:
            if r.status not in (204, 304) and r.request.method != "OPTIONS":
                assert value.encode() not in r.body(), r.url
    assert not watch.page_errors


def test_a_value_typed_into_the_form_is_kept_nowhere(open_page: Any, stack: Stack) -> None:
    canary = "sk-CANARY" + "9f3KqZ" * 5
    page, watch = open_page()
    sign_in(page, stack, stack.keysafe.token, "canary-org")
    openai = card(page, "openai_api_key")
    openai.get_by_role("button", name="Add key").click()
    openai.get_by_label("Value for OpenAI API Key").fill(canary)
    openai.get_by_role("button", name="Save", exact=True).click()
    openai.get_by_text("Saved OpenAI API Key").wait_for()
    openai.get_by_role("button", name="Rotate key").click()  # the form again: never pre-filled
    assert openai.get_by_label("New value for OpenAI API Key").input_value() == ""
    # A second value through the custom-secret form, then a full reload of the statuses.
    page.get_by_label("Name", exact=True).fill("canary_custom")
    page.get_by_label("Value", exact=True).fill(canary + "-custom")
    page.locator("#custom-save").click()
    card(page, "canary_custom").wait_for()
    page.get_by_role("button", name="History").first.click()

    assert canary not in page.content()
    assert canary not in page.evaluate(DEEP_DUMP)
    storage = page.evaluate("() => JSON.stringify([Object.entries(localStorage), "
                            "Object.entries(sessionStorage), document.cookie])")
    assert canary not in storage
    assert stack.keysafe.token not in storage
    puts = [r for r in watch.responses if r.request.method == "PUT"]
    assert len(puts) == 2
    assert all(canary in (r.request.post_data or "") for r in puts)  # it was sent...
    for r in watch.responses:  # ...and no response carries it
        with_body = r.status not in (204, 304) and r.request.method != "OPTIONS"
        body = r.body() if with_body else b""
        assert canary.encode() not in body, r.url
        assert canary not in r.url
    # The value reached the store intact: only a service identity can read it.
    service = stack.token("canary-reader", "service", ["*"])
    got = stack.api("GET", "/api/secrets/canary-org/openai_api_key/value", service)
    assert got.json()["value"] == canary


def test_a_viewer_sees_status_and_cannot_write(open_page: Any, stack: Stack) -> None:
    stack.api("PUT", "/api/secrets/view-org/openai_api_key", json={"secret_value": GOOD_1})
    viewer = stack.token("panel-viewer", "viewer", ["view-org"])
    page, _ = open_page()
    sign_in(page, stack, viewer, "view-org")
    page.get_by_text("You can see status only").wait_for()
    # The environment the page writes to stays in sight.
    cat = stack.api("GET", "/api/catalog").json()
    env = page.locator("#who-env")
    env.wait_for()
    assert env.inner_text() == f"{cat['app']} · {cat['environment']}"
    openai = card(page, "openai_api_key")
    assert openai.locator(".badge.ok").inner_text() == "Configured"
    for name in ("Add key", "Rotate key", "Rotate now", "Details", "Delete", "Restore",
                 "Save", "Roll back", "Destroy"):
        assert page.get_by_role("button", name=name, exact=True).count() == 0, name
    assert page.locator("input[type=password]").count() == 0
    assert page.get_by_role("button", name="Audit log").count() == 0
    openai.get_by_role("button", name="History").click()
    openai.locator("tbody tr").first.wait_for()
    # The server refuses a write forced from the page, and nothing changes.
    forced = page.evaluate(FORCE_PUT, [viewer, stack.url + "/api/secrets/view-org/openai_api_key"])
    assert forced["status"] == 403
    assert "may not write" in forced["body"]
    assert stack.api("GET", "/api/secrets/view-org/openai_api_key").json()["version"] == 1


def test_a_token_for_every_org_is_offered_the_orgs(open_page: Any, stack: Stack) -> None:
    """The organization field of a token for every org suggests the orgs that hold
    secrets (GET /api/orgs), with their counts; typing another still works."""
    stack.api("PUT", "/api/secrets/offered-org/openai_api_key", json={"secret_value": GOOD_1})
    page, _ = open_page()
    page.goto(stack.url + "/ui/")
    page.get_by_label("Access token or host JWT").fill(stack.keysafe.token)
    page.get_by_role("button", name="Sign in").click()
    field = page.get_by_label("Organization", exact=True)
    assert field.get_attribute("list") == "org-list"
    option = page.locator("#org-list option[value=offered-org]")
    option.wait_for(state="attached")
    assert option.get_attribute("label") == "1 secret"
    field.fill("offered-org")
    page.get_by_role("button", name="Open", exact=True).click()
    page.get_by_role("heading", name="LLM providers").wait_for()
    assert card(page, "openai_api_key").locator(".badge.ok").inner_text() == "Configured"


def test_a_domain_token_opens_its_domain(open_page: Any, stack: Stack) -> None:
    """A token scoped to one domain of an org (``org/domain``) opens that domain at once,
    with the domain fixed, and no org-wide audit tabs even for an admin."""
    org = "scoped-co"
    stack.api("PUT", f"/api/secrets/{org}/openai_api_key",
              json={"secret_value": GOOD_1, "domain_id": "cards"})
    for value in (GOOD_1, GOOD_2):  # version 2 in the shared domain
        stack.api("PUT", f"/api/secrets/{org}/openai_api_key", json={"secret_value": value})
    admin = stack.token("cards-admin", "admin", [f"{org}/cards"])
    page, watch = open_page()
    page.goto(stack.url + "/ui/")
    page.get_by_label("Access token or host JWT").fill(admin)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name=f"Secrets of {org} / cards").wait_for()
    domain = page.get_by_label("Domain", exact=True)
    assert domain.input_value() == "cards"
    assert domain.evaluate("e => e.readOnly")
    assert page.get_by_role("button", name="Audit log").count() == 0
    assert page.get_by_role("button", name="Access report").count() == 0
    openai = card(page, "openai_api_key")
    assert openai.locator(".badge.ok").inner_text() == "Configured"
    assert openai.locator(".meta").first.inner_text().startswith("Version 1 ")
    assert not [r for r in watch.responses if r.status == 403]
    assert not watch.page_errors


def test_a_secret_scoped_token_sees_its_secrets_only(open_page: Any, stack: Stack) -> None:
    """A token scoped to some secrets (``org/domain/name``) shows their cards only: the
    other catalog entries would read as "not set" and refuse a save."""
    org = "named-co"
    stack.api("PUT", f"/api/secrets/{org}/openai_api_key", json={"secret_value": GOOD_1})
    writer = stack.token("openai-writer", "writer", [f"{org}/shared/openai_*"])
    page, watch = open_page()
    page.goto(stack.url + "/ui/")
    page.get_by_label("Access token or host JWT").fill(writer)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name=f"Secrets of {org} / shared").wait_for()
    openai = card(page, "openai_api_key")
    assert openai.locator(".badge.ok").inner_text() == "Configured"
    assert page.locator("keysafe-secret-card[secret-name='anthropic_api_key']").count() == 0
    assert not [r for r in watch.responses if r.status == 403]
    assert not watch.page_errors


def test_the_server_checks_input_again(stack: Stack) -> None:
    url = "/api/secrets/check-org/openai_api_key"
    bad = stack.api("PUT", url, json={"secret_value": ANTHROPIC})
    assert bad.status_code == 422
    assert "does not look like an OpenAI API Key" in bad.json()["detail"]
    assert ANTHROPIC not in bad.text
    assert stack.api("PUT", url, json={"secret_value": ""}).status_code == 422
    big = stack.api("PUT", "/api/secrets/check-org/big_custom", json={"secret_value": "x" * 70_000})
    assert big.status_code == 413
    assert stack.api("GET", url).json()["configured"] is False
    cat = stack.api("GET", "/api/catalog").json()
    entry = next(e for e in cat["categories"]["llm"] if e["secret_name"] == "openai_api_key")
    assert entry["pattern"]
    assert entry["format_hint"]
    assert cat["max_value_bytes"] == 65536


def test_keyboard_only_reaches_save(open_page: Any, stack: Stack) -> None:
    page, _ = open_page()
    page.goto(stack.url + "/ui/")
    page.locator("#token").wait_for()
    assert page.evaluate(DEEP_ACTIVE)["id"] == "token"  # focus starts in the field
    page.keyboard.type(stack.keysafe.token)
    page.keyboard.press("Enter")
    page.locator("#org").wait_for()
    assert page.evaluate(DEEP_ACTIVE)["id"] == "org"
    page.keyboard.type("keys-org")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="LLM providers").wait_for()
    for _ in range(40):  # bounded: the first card's button is a few stops away
        page.keyboard.press("Tab")
        if page.evaluate(DEEP_ACTIVE)["text"] == "Add key":
            break
    else:
        pytest.fail("Tab never reached an Add key button")
    page.keyboard.press("Enter")
    active = page.evaluate(DEEP_ACTIVE)
    assert active["tag"] == "INPUT"
    assert active["type"] == "password"
    page.keyboard.type(GOOD_1)
    page.keyboard.press("Tab")  # the "check the key" box, ticked
    active = page.evaluate(DEEP_ACTIVE)
    assert (active["type"], active["id"].endswith("-check")) == ("checkbox", True)
    page.keyboard.press("Tab")
    assert page.evaluate(DEEP_ACTIVE)["text"] == "Save"
    page.keyboard.press("Enter")
    card(page, "openai_api_key").get_by_text("Saved OpenAI API Key: version 1.").wait_for()
    assert page.evaluate(DEEP_ACTIVE)["text"] == "Rotate key"  # focus lands somewhere useful


def test_the_provider_is_asked_before_a_key_is_saved(open_page: Any, stack: Stack) -> None:
    """Spec 001: validate API keys before saving. The box is ticked by default; a key
    the provider refuses is not saved, and the refusal shows next to the field."""
    page, watch = open_page()
    sign_in(page, stack, stack.keysafe.token, "check-org")
    c = card(page, "openai_api_key")
    c.get_by_role("button", name="Add key").click()
    box = c.get_by_label("Check the key with 127.0.0.1 before saving")
    assert box.is_checked()
    c.get_by_label("Value for OpenAI API Key").fill("sk-REJECTED" + "r" * 24)
    c.get_by_role("button", name="Save", exact=True).click()
    c.get_by_text("refused this key (HTTP 401); nothing was saved").wait_for()
    assert stack.api("GET", "/api/secrets/check-org/openai_api_key").json()["configured"] \
        is False
    c.get_by_label("Value for OpenAI API Key").fill(GOOD_2)
    c.get_by_role("button", name="Save", exact=True).click()
    c.get_by_text("Saved OpenAI API Key: version 1. Checked: 127.0.0.1 accepted this key."
                  ).wait_for()
    # Spec 004: verify a stored key still works. A key the provider stopped accepting
    # (written without a check) is reported; the key never reaches the page.
    c.get_by_role("button", name="Check key").click()
    c.get_by_text("Checked: 127.0.0.1 accepted this key.").wait_for()
    stale = "sk-REJECTED" + "s" * 24
    assert stack.api("PUT", "/api/secrets/check-org/openai_api_key",
                     json={"secret_value": stale}).status_code == 200
    c.get_by_role("button", name="Check key").click()
    c.get_by_text("The stored key no longer works: 127.0.0.1 refused this key (HTTP 401). "
                  "Rotate it.").wait_for()
    assert "REJECTED" not in page.evaluate(DEEP_DUMP)
    assert "REJECTED" not in stack.keysafe.output()  # the server's own log lines
    assert not watch.outside


def test_sign_in_with_a_host_jwt(open_page: Any, stack: Stack) -> None:
    token = jwt.encode({"sub": "dana@acme", "org": "jwt-org", "role": "writer",
                        "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    page, _ = open_page()
    sign_in(page, stack, token, "jwt-org")
    assert page.locator("#who-name").inner_text() == "jwt:dana@acme"
    add_key(page, "openai_api_key", "OpenAI API Key", GOOD_1)
    assert page.get_by_role("button", name="Audit log").count() == 0  # writers do not audit
    status = stack.api("GET", "/api/secrets/jwt-org/openai_api_key").json()
    assert status["updated_by"] == "jwt:dana@acme"


def test_a_revoked_token_ends_the_session(open_page: Any, stack: Stack) -> None:
    r = stack.api("POST", "/api/tokens", json={"name": "short", "roles": ["admin"],
                                               "orgs": ["rev-org"]})
    token, token_id = r.json()["token"], r.json()["id"]
    page, _ = open_page()
    sign_in(page, stack, token, "rev-org")
    assert stack.api("DELETE", f"/api/tokens/{token_id}").status_code == 200
    page.get_by_role("button", name="Open", exact=True).click()
    page.get_by_text("Your session has expired").wait_for()
    assert page.locator("#token").input_value() == ""
    assert page.locator("#who").is_hidden()


def test_an_org_admin_makes_and_revokes_tokens(open_page: Any, stack: Stack) -> None:
    """The "Tokens" tab: `keysafe token create | list | revoke` for the open org. The new
    token is shown once and gone from the page after "Done"; a viewer has no tab."""
    org = "tok-corp"
    admin = stack.token("tok-admin", "admin", [org])
    page, watch = open_page()
    sign_in(page, stack, admin, org)
    page.get_by_role("button", name="Tokens").click()
    page.locator("#token-table").wait_for()
    assert "this session" in page.locator("#token-table").inner_text()
    # Bad input is refused in the page, before anything is sent.
    page.get_by_role("button", name=f"Create token for {org}").click()
    page.get_by_text("Give the token a name").wait_for()
    page.get_by_label("Name", exact=True).fill("ci-deploy")
    page.get_by_label("Expires in (days)").fill("0")
    page.get_by_role("button", name=f"Create token for {org}").click()
    page.get_by_text("Expiry must be a whole number").wait_for()
    assert page.get_by_label("Expires in (days)").get_attribute("aria-invalid") == "true"
    page.get_by_label("Expires in (days)").fill("1e")      # not a number: refused, not dropped
    page.get_by_role("button", name=f"Create token for {org}").click()
    page.get_by_text("Expiry must be a whole number").wait_for()
    # An org admin is not offered service tokens (the server would refuse them).
    roles = page.get_by_label("Role").locator("option").all_inner_texts()
    assert not [r for r in roles if r.startswith("service")]
    # The server's refusals are shown as they are, at the field they concern.
    page.get_by_label("Expires in (days)").fill("30")
    page.get_by_label("Networks").fill("10.0.0.0/33")
    page.get_by_role("button", name=f"Create token for {org}").click()
    page.locator("#t-error").wait_for()
    assert page.get_by_label("Networks").get_attribute("aria-invalid") == "true"
    page.get_by_label("Networks").fill("127.0.0.1/32")
    page.get_by_role("button", name=f"Create token for {org}").click()
    shown = page.get_by_label("Token ci-deploy")
    shown.wait_for()
    token = shown.input_value()
    assert token.startswith("ks_")
    markup = page.evaluate("() => document.documentElement.outerHTML")
    assert token not in markup                # a property of the field, not in the markup
    once = page.locator("#token-once").inner_text()
    assert "from 127.0.0.1/32 only" in once
    assert "until" in once
    # It works, with the role and network asked for.
    r = stack.api("PUT", f"/api/secrets/{org}/openai_api_key", token=token,
                  json={"secret_value": GOOD_1})
    assert r.status_code == 200, r.text
    table = page.locator("#token-table")
    page.get_by_role("cell", name="ci-deploy", exact=True).wait_for()
    assert "127.0.0.1/32" in table.inner_text()
    page.get_by_role("button", name="Done").click()
    assert page.locator("#token-value").count() == 0
    assert token not in page.evaluate(DEEP_DUMP)
    # Revoke: a second press, then it stops working at once.
    page.get_by_role("button", name="Revoke ci-deploy").click()
    page.get_by_role("button", name="Cancel").click()
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == (
        "Revoke ci-deploy")
    page.get_by_role("button", name="Revoke ci-deploy").click()
    page.get_by_role("button", name=f"Yes, revoke ci-deploy, which covers {org}").click()
    page.get_by_text("Revoked ci-deploy").wait_for(state="attached")
    assert "revoked" in page.get_by_role("row").filter(has_text="ci-deploy").inner_text()
    r = stack.api("GET", f"/api/secrets/{org}/openai_api_key", token=token)
    assert r.status_code == 401
    audit = stack.api("GET", "/api/audit", params={"org_id": org, "action": "token_revoke"})
    assert [x["actor"] for x in audit.json()["records"]] == ["token:tok-admin"]
    assert not watch.outside
    assert not watch.page_errors
    assert not watch.csp_violations()
    # Tokens of other orgs are not listed under this one.
    stack.token("other-org-token", "viewer", ["elsewhere"])
    page.get_by_role("button", name="Secrets", exact=True).click()
    page.get_by_role("button", name="Tokens").click()
    page.get_by_role("cell", name="ci-deploy", exact=True).wait_for()
    assert "other-org-token" not in page.locator("#token-table").inner_text()
    # A token shown and then left (another tab) is gone from the page.
    page.get_by_label("Name", exact=True).fill("left-behind")
    page.get_by_role("button", name=f"Create token for {org}").click()
    left = page.get_by_label("Token left-behind").input_value()
    page.get_by_role("button", name="Secrets", exact=True).click()
    page.get_by_role("button", name="Tokens").click()
    page.locator("#token-table").wait_for()
    assert left not in page.evaluate(DEEP_DUMP)
    # A viewer sees no Tokens tab.
    viewer = stack.token("tok-viewer", "viewer", [org])
    page2, _ = open_page()
    sign_in(page2, stack, viewer, org)
    assert page2.get_by_role("button", name="Tokens").count() == 0


def host_page(page: Any, stack: Stack, host: str, token: str, org: str) -> None:
    page.goto(f"{host}/host.html?api={stack.url}")
    page.get_by_label("Organization").fill(org)
    page.get_by_label("Token (the host's credential)").fill(token)
    page.get_by_role("button", name="Connect").click()


def test_embedded_in_a_host_page_on_an_allowed_origin(open_page: Any, stack: Stack) -> None:
    page, _ = open_page(extra_origins=(stack.allowed_host,))
    host_page(page, stack, stack.allowed_host, stack.keysafe.token, "host-org")
    panel = page.locator("#panel")
    panel.get_by_role("heading", name="LLM providers").wait_for()
    add_key(panel, "anthropic_api_key", "Anthropic API Key", ANTHROPIC)
    # The standalone card (spec 001's SecretConfigCard) with the host's attributes.
    single = page.locator("#card")
    single.get_by_role("heading", name="OpenAI API Key").wait_for()
    single.get_by_text("API key for GPT models").wait_for()
    single.get_by_role("button", name="Add key").click()
    assert single.get_by_label("Value for OpenAI API Key").get_attribute("placeholder") == "sk-..."
    single.get_by_label("Value for OpenAI API Key").fill(GOOD_2)
    single.get_by_role("button", name="Save", exact=True).click()
    single.get_by_text("Saved OpenAI API Key: version 1.").wait_for()
    for name in ("anthropic_api_key", "openai_api_key"):
        assert stack.api("GET", f"/api/secrets/host-org/{name}").json()["configured"] is True
    assert stack.keysafe.token not in page.evaluate(DEEP_DUMP)  # the credential is no attribute


def test_embedded_on_an_origin_cors_does_not_allow_fails_cleanly(
        open_page: Any, stack: Stack) -> None:
    page, watch = open_page(extra_origins=(stack.denied_host,))
    host_page(page, stack, stack.denied_host, stack.keysafe.token, "host-org")
    alert = page.locator("#panel").get_by_role("alert")
    alert.wait_for()
    assert "Cannot reach keysafe" in alert.inner_text()
    assert "KEYSAFE_CORS_ORIGINS" in alert.inner_text()
    assert page.locator("#panel").get_by_role("button", name="Retry").is_visible()
    page.locator("#card").get_by_role("alert").wait_for()
    assert page.get_by_role("heading", name="API keys").is_visible()  # the host page lives on
    assert watch.page_errors == []
    watch.console_errors.clear()  # the browser logs the CORS refusals themselves


def _shoot(page: Any, path: Path) -> None:
    page.evaluate("() => window.scrollTo(0, 0)")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.screenshot(path=str(path))


def test_screenshots_desktop_and_narrow(open_page: Any, stack: Stack) -> None:
    org = "demo-corp"
    for name, value in (("openai_api_key", GOOD_1), ("anthropic_api_key", ANTHROPIC)):
        stack.api("PUT", f"/api/secrets/{org}/{name}", json={"secret_value": value})
    stack.api("PUT", f"/api/secrets/{org}/openai_api_key", json={"secret_value": GOOD_2})
    IMAGES.mkdir(parents=True, exist_ok=True)
    for viewport, file in (({"width": 1280, "height": 800}, "panel-desktop.png"),
                           ({"width": 390, "height": 844}, "panel-narrow.png")):
        page, _ = open_page(viewport=viewport)
        sign_in(page, stack, stack.keysafe.token, org)
        card(page, "anthropic_api_key").locator(".badge.ok").wait_for()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= viewport["width"], "the page scrolls sideways"
        _shoot(page, IMAGES / file)
        assert (IMAGES / file).stat().st_size > 10_000
