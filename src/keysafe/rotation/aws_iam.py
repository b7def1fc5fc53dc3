"""AWS IAM access keys (spec 003: the AWS keys a migration moves, then "rotate all
secrets after migration").

The secret holds the key pair as JSON, ``{"access_key_id", "secret_access_key"}`` (other
fields, a region say, are kept). A rotation creates a second access key for the IAM
user, proves it with STS ``GetCallerIdentity`` (AWS takes a few seconds to accept a new
key everywhere: retried for up to ``rotator.wait`` seconds, default 30), and switches the
secret to it; the old key keeps working through the grace period, after which ``retire``
deletes it. AWS allows two access keys per user: an *inactive* second key found at the
start is deleted first, an *active* one stops the rotation (something else uses it).

Options (tags ``rotator.<option>``): ``user`` (the IAM user; default: the one the
current key belongs to), ``admin_secret`` (a secret in the same scope holding the key
pair of an identity allowed ``iam:CreateAccessKey``, ``iam:ListAccessKeys`` and
``iam:DeleteAccessKey`` on the user; default: the user's own current key, which a
policy on ``arn:aws:iam::*:user/${aws:username}`` allows), ``region``, ``wait``.
Endpoints come from the standard AWS environment (``AWS_ENDPOINT_URL_IAM``,
``AWS_ENDPOINT_URL_STS``, ``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from keysafe.errors import RotationError
from keysafe.rotation.rotators import (
    RotationContext,
    check_known,
    options_context,
    stored_json,
    wait_option,
)

_FIELDS = ("access_key_id", "secret_access_key")


def parse_key(value: str | None, what: str) -> dict[str, Any]:
    """The stored key pair (RotationError naming what is wrong, never the value)."""
    d = stored_json(value, what, kind="key pair",
                    shape='JSON credentials ({"access_key_id", "secret_access_key"})')
    if not isinstance(d, dict) or not all(isinstance(d.get(f), str) and d[f] for f in _FIELDS):
        raise RotationError(f"{what} needs access_key_id and secret_access_key")
    return d


def _short(key: Mapping[str, Any]) -> str:
    """An access key id as messages show it: its last four characters."""
    return f"...{str(key['access_key_id'])[-4:]}"


def _id_of(value: str) -> str | None:
    try:
        d = json.loads(value)
    except ValueError:
        return None
    return d.get("access_key_id") if isinstance(d, dict) else None


def _code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError, else the exception's type."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def _translate(exc: Exception, action: str, name: str) -> RotationError:
    # The code only: an SDK message may quote request parameters.
    return RotationError(f"AWS refused to {action} for {name} ({_code(exc)})")


class AwsIamAccessKeyRotator:
    name = "aws-iam"
    OPTIONS = ("user", "admin_secret", "region", "wait")

    def check_options(self, name: str, options: Mapping[str, str]) -> None:
        check_known(name, self.name, options, self.OPTIONS)
        self._wait(options_context(name, options))

    def _wait(self, ctx: RotationContext) -> float:
        return wait_option(ctx, 30)

    def _client(self, service: str, ctx: RotationContext, key: Mapping[str, Any]) -> Any:
        from keysafe.backends._aws import client_for_pair

        return client_for_pair(service, key,
                               region=ctx.options.get("region") or key.get("region"))

    def _manager_key(self, ctx: RotationContext, fallback: str | None = None
                     ) -> dict[str, Any]:
        """The key pair that manages the user's keys: the admin secret's, else the
        user's own current one (else ``fallback``: a retire after the secret's delete
        uses the key being retired, which still works)."""
        admin = ctx.options.get("admin_secret")
        if admin:
            return parse_key(ctx.read(admin), f"rotator.admin_secret {admin!r}")
        return parse_key(ctx.current if ctx.current is not None else fallback, ctx.name)

    def _owner(self, ctx: RotationContext, iam: Any, key_id: str) -> str | None:
        """The IAM user a key belongs to (``rotator.user`` if set), asked of IAM with
        the managing key, so a deactivated current key does not stop it; None when IAM
        knows no such key (deleted already)."""
        user = ctx.options.get("user")
        if user:
            return user
        try:
            found = iam.get_access_key_last_used(AccessKeyId=key_id)
        except Exception as exc:
            if _code(exc) in ("NoSuchEntity", "NoSuchEntityException"):
                return None
            raise _translate(exc, "say whose access key this is", ctx.name) from None
        name = found.get("UserName")
        if not name:
            raise RotationError(f"the key of {ctx.name} does not belong to an IAM user; "
                                "set rotator.user")
        return str(name)

    def generate(self, ctx: RotationContext) -> str:
        current = parse_key(ctx.current, ctx.name)
        iam = self._client("iam", ctx, self._manager_key(ctx))
        user = self._owner(ctx, iam, current["access_key_id"])
        if user is None:
            raise RotationError(f"IAM knows no access key {_short(current)} of {ctx.name}")
        try:
            keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
            for k in keys:
                if k["AccessKeyId"] == current["access_key_id"]:
                    continue
                if k["Status"] != "Inactive":
                    raise RotationError(
                        f"IAM user {user} has another active access key "
                        f"(...{k['AccessKeyId'][-4:]}) besides the one in {ctx.name}: AWS "
                        "allows two, so delete or deactivate the one nothing uses (within "
                        "a rotation's grace period that is the previous key: `keysafe "
                        "rotate retire` deletes it once the grace period ends)")
                iam.delete_access_key(UserName=user, AccessKeyId=k["AccessKeyId"])
            made = iam.create_access_key(UserName=user)["AccessKey"]
        except RotationError:
            raise
        except Exception as exc:
            raise _translate(exc, "create an access key", ctx.name) from None
        new = dict(current, access_key_id=made["AccessKeyId"],
                   secret_access_key=made["SecretAccessKey"])
        return json.dumps(new, sort_keys=True)

    def apply(self, ctx: RotationContext, new: str) -> None:
        return None  # a new access key is active when it is made

    def test(self, ctx: RotationContext, new: str) -> None:
        key = parse_key(new, ctx.name)
        deadline = time.monotonic() + self._wait(ctx)
        while True:
            try:
                arn = str(self._client("sts", ctx, key).get_caller_identity()["Arn"])
                break
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise _translate(exc, "accept the new access key", ctx.name) from None
                time.sleep(1.0)  # AWS is eventually consistent for new keys
        want = ctx.options.get("user")
        if want and (":user/" not in arn or arn.rsplit("/", 1)[1] != want):
            # (an IAM path may sit between "user/" and the name)
            raise RotationError(f"the new key of {ctx.name} belongs to another identity")

    def _delete(self, ctx: RotationContext, key: Mapping[str, Any], action: str) -> None:
        """Delete ``key`` from the user IAM says owns it (already gone: fine)."""
        iam = self._client("iam", ctx, self._manager_key(ctx, json.dumps(dict(key))))
        user = self._owner(ctx, iam, key["access_key_id"])
        if user is None:
            return  # a resumed step: deleted before the crash
        try:
            iam.delete_access_key(UserName=user, AccessKeyId=key["access_key_id"])
        except Exception as exc:
            raise _translate(exc, action, ctx.name) from None

    def rollback(self, ctx: RotationContext, new: str) -> None:
        """Delete the key this rotation made; the current one was never touched."""
        self._delete(ctx, parse_key(new, ctx.name), "delete the new access key")

    def retire(self, ctx: RotationContext, old: str) -> None:
        """Delete the replaced key, with the admin key or the user's current one."""
        od = parse_key(old, ctx.name)
        if ctx.current is not None and _id_of(ctx.current) == od["access_key_id"]:
            return  # rolled back to that key since: it is the live one
        self._delete(ctx, od, "delete the old access key")
