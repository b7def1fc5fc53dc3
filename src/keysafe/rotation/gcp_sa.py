"""GCP service account keys (spec 003's ``GCP_SERVICE_ACCOUNT``, the catalog's
``gcp_service_account``: the JSON key file of a service account).

A rotation asks IAM for a new key of the same service account
(``projects.serviceAccounts.keys.create``), proves it by exchanging a JWT signed with it
for an access token at Google's token endpoint (a new key can take a minute to be
accepted everywhere: retried for up to ``rotator.wait`` seconds, default 60), and
switches the secret to the new key file. The old key keeps working through the grace
period, after which ``retire`` deletes it. IAM allows ten user-managed keys per service
account; at the limit the rotation stops and says so.

Options (tags ``rotator.<option>``): ``admin_secret`` (a secret in the same scope holding
the key file of a service account with ``iam.serviceAccountKeys.create``, ``list`` and
``delete`` on this one, as ``roles/iam.serviceAccountKeyAdmin`` grants; default: the
account's own current key, which then needs that role on itself), ``wait``.

Requests go to IAM's REST API (``https://iam.googleapis.com``, or
``KEYSAFE_GCP_IAM_ENDPOINT``) and tokens are asked of ``https://oauth2.googleapis.com/token``
(or ``KEYSAFE_GCP_TOKEN_URI``): never of the ``token_uri`` a stored key file names, so a
key file cannot send a signed assertion elsewhere. google-auth (the ``gcp`` extra) signs
and authorises them. Errors name IAM's status and the key by the last four characters of
its id; a private key never reaches a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from keysafe.errors import ConfigError, RotationError
from keysafe.rotation.rotators import (
    RotationContext,
    check_known,
    options_context,
    stored_json,
    wait_option,
)

log = logging.getLogger("keysafe.rotation")

IAM_ENDPOINT = "https://iam.googleapis.com"
TOKEN_URI = "https://oauth2.googleapis.com/token"
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_FIELDS = ("client_email", "private_key_id", "private_key")
#: IAM's limit of user-managed keys per service account.
MAX_KEYS = 10


def parse_key_file(value: str | None, what: str) -> dict[str, Any]:
    """The stored key file (RotationError naming what is wrong, never the value)."""
    d = stored_json(value, what, kind="key file",
                    shape="a service account key file (JSON)")
    if not isinstance(d, dict) or d.get("type", "service_account") != "service_account" \
            or not all(isinstance(d.get(f), str) and d[f] for f in _FIELDS):
        raise RotationError(f"{what} needs a service account key file with client_email, "
                            "private_key_id and private_key")
    return d


def _short(key_id: str) -> str:
    return f"...{key_id[-4:]}"


def _endpoint(variable: str, default: str) -> str:
    from urllib.parse import urlsplit

    from keysafe.hosts import cleartext_to_another_machine

    url = (os.environ.get(variable) or default).rstrip("/")
    u = urlsplit(url)
    if u.scheme not in ("https", "http") or not u.hostname:
        raise ConfigError(f"{variable} must be an http(s) URL")
    if cleartext_to_another_machine(u.scheme, u.hostname):
        raise ConfigError(f"{variable}: {u.scheme}://{u.hostname} is not https; a token "
                          "or a key would cross the network in the clear")
    return url


class GcpServiceAccountKeyRotator:
    name = "gcp-sa"
    OPTIONS = ("admin_secret", "wait")

    def check_options(self, name: str, options: Mapping[str, str]) -> None:
        check_known(name, self.name, options, self.OPTIONS)
        self._wait(options_context(name, options))

    def _wait(self, ctx: RotationContext) -> float:
        return wait_option(ctx, 60)

    # -- Google -------------------------------------------------------------------------
    @staticmethod
    def _credentials(key: Mapping[str, Any]) -> Any:
        from keysafe.backends._sdk import require_sdk

        sa = require_sdk("google.oauth2.service_account", "gcp")
        try:
            creds = sa.Credentials.from_service_account_info(dict(key), scopes=_SCOPES)
        except (ValueError, KeyError, TypeError):
            raise RotationError("the key file's private key cannot be loaded") from None
        return creds.with_token_uri(_endpoint("KEYSAFE_GCP_TOKEN_URI", TOKEN_URI))

    def _session(self, ctx: RotationContext, fallback: str | None = None) -> Any:
        """An authorised session as the identity that manages the account's keys: the
        admin secret's, else the account's own current key (else ``fallback``: a retire
        after the secret's delete uses the key being retired)."""
        from keysafe.backends._sdk import require_sdk

        requests = require_sdk("google.auth.transport.requests", "gcp")
        admin = ctx.options.get("admin_secret")
        if admin:
            key = parse_key_file(ctx.read(admin), f"rotator.admin_secret {admin!r}")
        else:
            key = parse_key_file(ctx.current if ctx.current is not None else fallback,
                                 ctx.name)
        return requests.AuthorizedSession(self._credentials(key))

    def _call(self, ctx: RotationContext, session: Any, method: str, url: str,
              action: str, **kw: Any) -> Any:
        """IAM's JSON answer; RotationError naming the HTTP status and IAM's status
        code only (an answer to create carries the private key)."""
        try:
            resp = session.request(method, url, timeout=30, **kw)
        except RotationError:
            raise
        except Exception as exc:  # refused credentials, the network
            raise RotationError(f"GCP IAM could not {action} for {ctx.name} "
                                f"({type(exc).__name__})") from None
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            try:
                status = resp.json().get("error", {}).get("status") or ""
            except ValueError:
                status = ""
            hint = (": the managing identity needs roles/iam.serviceAccountKeyAdmin on "
                    "the service account" if resp.status_code in (401, 403) else "")
            raise RotationError(f"GCP IAM refused to {action} for {ctx.name} "
                                f"(HTTP {resp.status_code}{' ' + status if status else ''})"
                                f"{hint}")
        try:
            return resp.json() if resp.content else {}
        except ValueError:
            raise RotationError(f"GCP IAM answered {action} for {ctx.name} with a body "
                                "that is not JSON") from None

    @staticmethod
    def _keys_url(email: str) -> str:
        iam = _endpoint("KEYSAFE_GCP_IAM_ENDPOINT", IAM_ENDPOINT)
        return f"{iam}/v1/projects/-/serviceAccounts/{quote(email, safe='@')}/keys"

    # -- the four steps -------------------------------------------------------------------
    def generate(self, ctx: RotationContext) -> str:
        current = parse_key_file(ctx.current, ctx.name)
        email = current["client_email"]
        session = self._session(ctx)
        url = self._keys_url(email)
        listed = self._call(ctx, session, "GET", url, "list the service account's keys",
                            params={"keyTypes": "USER_MANAGED"})
        if listed is None:
            raise RotationError(f"GCP IAM knows no service account {email} (the account "
                                f"of {ctx.name})")
        keys = listed.get("keys") or []
        if len(keys) >= MAX_KEYS:
            raise RotationError(f"service account {email} has {len(keys)} user-managed "
                                f"keys, IAM's limit: delete the ones nothing uses (`keysafe "
                                "rotate retire` deletes previous keys whose grace period "
                                "has ended)")
        made = self._call(ctx, session, "POST", url, "create a key",
                          json={"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
                                "keyAlgorithm": "KEY_ALG_RSA_2048"})
        try:
            try:
                data = json.loads(base64.b64decode(made["privateKeyData"], validate=True))
            except (TypeError, KeyError, ValueError, binascii.Error):
                raise RotationError(f"GCP IAM answered create for {ctx.name} without a "
                                    "key file") from None
            new = parse_key_file(json.dumps(data), f"the new key of {ctx.name}")
            if new["client_email"] != email:
                raise RotationError(f"GCP IAM made a key of another account for "
                                    f"{ctx.name}")
        except RotationError:
            # No pending version holds this key yet, so the engine has nothing to roll
            # back: the key IAM made (named in its answer) is deleted here.
            self._discard(ctx, session, made, url)
            raise
        # Fields of the stored file IAM's does not have (a team's own) are kept.
        return json.dumps({**current, **new}, sort_keys=True)

    def _discard(self, ctx: RotationContext, session: Any, made: Any, url: str) -> None:
        """Delete the key IAM's create answer names (``name``: .../keys/KEY_ID), if it
        names one; a failure to is logged by its kind, never raised over the cause."""
        name = made.get("name") if isinstance(made, dict) else None
        key_id = name.rsplit("/", 1)[-1] if isinstance(name, str) and "/keys/" in name else ""
        if not key_id:
            return
        try:
            self._call(ctx, session, "DELETE", f"{url}/{quote(key_id, safe='')}",
                       "delete the key it could not use")
        except Exception as exc:  # the original failure is the one to report
            log.warning("gcp-sa: the unusable new key %s of %s was not deleted (%s); "
                        "delete it by hand", _short(key_id), ctx.name, type(exc).__name__)

    def apply(self, ctx: RotationContext, new: str) -> None:
        return None  # a new key is enabled when it is made

    def test(self, ctx: RotationContext, new: str) -> None:
        from keysafe.backends._sdk import require_sdk

        requests = require_sdk("google.auth.transport.requests", "gcp")
        key = parse_key_file(new, ctx.name)
        deadline = time.monotonic() + self._wait(ctx)
        while True:
            try:
                creds = self._credentials(key)
                creds.refresh(requests.Request())
                if creds.token:
                    return
            except RotationError:
                raise
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise RotationError(
                        f"the new key of {ctx.name} ({_short(key['private_key_id'])}) was "
                        f"not accepted for a token ({type(exc).__name__})") from None
            time.sleep(2.0)  # IAM is eventually consistent for new keys

    def _delete(self, ctx: RotationContext, key: Mapping[str, Any], action: str) -> None:
        """Delete ``key`` (already gone: fine)."""
        session = self._session(ctx, json.dumps(dict(key)))
        url = f"{self._keys_url(key['client_email'])}/{quote(key['private_key_id'], safe='')}"
        self._call(ctx, session, "DELETE", url, action)

    def rollback(self, ctx: RotationContext, new: str) -> None:
        """Delete the key this rotation made; the current one was never touched."""
        self._delete(ctx, parse_key_file(new, ctx.name), "delete the new key")

    def retire(self, ctx: RotationContext, old: str) -> None:
        """Delete the replaced key, unless a rollback made it the live one again."""
        od = parse_key_file(old, ctx.name)
        if ctx.current is not None:
            try:
                live = json.loads(ctx.current).get("private_key_id")
            except (ValueError, AttributeError):
                live = None
            if live == od["private_key_id"]:
                return
        self._delete(ctx, od, "delete the old key")
