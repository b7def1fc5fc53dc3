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

from keysafe.backends._sdk import require_sdk
from keysafe.errors import ConfigError, RotationError
from keysafe.rotation.rotators import RotationContext, check_known, options_context

_FIELDS = ("access_key_id", "secret_access_key")


def parse_key(value: str | None, what: str) -> dict[str, Any]:
    """The stored key pair (RotationError naming what is wrong, never the value)."""
    if value is None:
        raise RotationError(f"{what} has no current key pair to rotate")
    try:
        d = json.loads(value)
    except ValueError:
        raise RotationError(f"{what} does not hold JSON credentials "
                            '({"access_key_id", "secret_access_key"})') from None
    if not isinstance(d, dict) or not all(isinstance(d.get(f), str) and d[f] for f in _FIELDS):
        raise RotationError(f"{what} needs access_key_id and secret_access_key")
    return d


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
        raw = ctx.options.get("wait", "30")
        try:
            wait = float(raw)
        except ValueError:
            raise ConfigError(f"rotator.wait for {ctx.name} must be seconds, not {raw!r}"
                              ) from None
        if not 0 <= wait <= 600:
            raise ConfigError(f"rotator.wait for {ctx.name} must be 0 to 600 seconds")
        return wait

    def _client(self, service: str, ctx: RotationContext, key: Mapping[str, Any]) -> Any:
        boto3 = require_sdk("boto3", "aws")
        session = boto3.session.Session(
            aws_access_key_id=key["access_key_id"],
            aws_secret_access_key=key["secret_access_key"],
            region_name=ctx.options.get("region") or key.get("region") or "us-east-1")
        return session.client(service)

    def _manager_key(self, ctx: RotationContext) -> dict[str, Any]:
        """The key pair that manages the user's keys: the admin secret's, else the
        user's own current one."""
        admin = ctx.options.get("admin_secret")
        if admin:
            return parse_key(ctx.read(admin), f"rotator.admin_secret {admin!r}")
        return parse_key(ctx.current, ctx.name)

    def _user(self, ctx: RotationContext, key: Mapping[str, Any]) -> str:
        user = ctx.options.get("user")
        if user:
            return user
        try:
            arn = str(self._client("sts", ctx, key).get_caller_identity()["Arn"])
        except Exception as exc:
            raise _translate(exc, "say whose key this is", ctx.name) from None
        if ":user/" not in arn:
            raise RotationError(f"the key of {ctx.name} does not belong to an IAM user; "
                                "set rotator.user")
        return arn.rsplit("/", 1)[1]

    def generate(self, ctx: RotationContext) -> str:
        current = parse_key(ctx.current, ctx.name)
        iam = self._client("iam", ctx, self._manager_key(ctx))
        user = self._user(ctx, current)
        try:
            keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
            for k in keys:
                if k["AccessKeyId"] == current["access_key_id"]:
                    continue
                if k["Status"] != "Inactive":
                    raise RotationError(
                        f"IAM user {user} has another active access key "
                        f"({k['AccessKeyId']}) besides the one in {ctx.name}: AWS allows "
                        "two, so delete or deactivate the one nothing uses")
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
        if want and not arn.endswith(f":user/{want}"):
            raise RotationError(f"the new key of {ctx.name} belongs to another identity")

    def _delete(self, ctx: RotationContext, key: Mapping[str, Any], action: str) -> None:
        """Delete ``key`` of the user that owns the current key (gone already: fine)."""
        user = self._user(ctx, parse_key(ctx.current, ctx.name))
        iam = self._client("iam", ctx, self._manager_key(ctx))
        try:
            iam.delete_access_key(UserName=user, AccessKeyId=key["access_key_id"])
        except Exception as exc:
            if _code(exc) == "NoSuchEntity":
                return  # a resumed step: deleted before the crash
            raise _translate(exc, action, ctx.name) from None

    def rollback(self, ctx: RotationContext, new: str) -> None:
        """Delete the key this rotation made; the current one was never touched."""
        self._delete(ctx, parse_key(new, ctx.name), "delete the new access key")

    def retire(self, ctx: RotationContext, old: str) -> None:
        """Delete the replaced key, with the admin key or the user's current one."""
        od = parse_key(old, ctx.name)
        if ctx.current is not None and parse_key(ctx.current, ctx.name)[
                "access_key_id"] == od["access_key_id"]:
            return  # rolled back to that key since: it is the live one
        self._delete(ctx, od, "delete the old access key")
