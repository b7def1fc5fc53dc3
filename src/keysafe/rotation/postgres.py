"""PostgreSQL role passwords.

The secret holds the credential as JSON (``{"username", "password", "host", "port",
"dbname"}``) or as a ``postgresql://`` URL; the rotated value keeps its shape. The new
password goes to the server as a SCRAM verifier computed client-side by libpq
(``PQencryptPasswordConn``), so it never appears in a statement or a server log.

Schemes (tag ``rotator.scheme``):

- ``single`` (default): the role changes its own password; ``test`` logs in with the new
  one. Old sessions stay connected, new logins need the new password at once.
- ``alternating``: two roles (``rotator.users=app_a,app_b``) take turns. A rotation sets a
  new password on the role *not* in use (with the admin credential named by
  ``rotator.admin_secret``) and switches the secret to it; the old role keeps working
  for the grace period, then ``retire`` gives it a random password. There is never a
  moment without a valid credential.

Linked secrets (``rotator.linked=database_url``, spec 004's ``database-url`` beside
``database-password``): other secrets of the same scope that hold the same credential in
another shape (a URL, JSON, or the bare password). The engine writes them with the new
password (and role) when it promotes the rotated one, in the same store transaction where
the store has them. A rotated secret that holds the bare password takes the role, host,
port and database from its first linked URL or JSON secret.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from keysafe.backends._sdk import require_sdk
from keysafe.errors import ConfigError, RotationError
from keysafe.rotation.rotators import RotationContext, check_known, options_context

#: postgresql://, postgres:// and SQLAlchemy's scheme+driver form (postgresql+psycopg://).
_URL = re.compile(r"postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)


def is_bare(value: str) -> bool:
    """A value that is neither JSON nor a PostgreSQL URL (a bare password, or a shape
    keysafe cannot rewrite: a JDBC URL, a key=value DSN)."""
    v = value.strip()
    return not (v.startswith("{") or _URL.match(v))


def parse_credential(value: str) -> tuple[dict[str, Any], str]:
    """(fields, shape) of a stored credential: shape is "json" or "url"."""
    v = value.strip()
    if v.startswith("{"):
        try:
            d = json.loads(v)
        except ValueError:
            raise RotationError("the stored database credential is not valid JSON") from None
        if not isinstance(d, dict) or not d.get("username") or "password" not in d:
            raise RotationError("the stored database credential needs username and password")
        return d, "json"
    if _URL.match(v):
        u = urlsplit(v)
        if u.netloc.count("@") > 1:
            raise RotationError("the stored database URL has an '@' in its user info that "
                                "is not percent-encoded (write it as %40)")
        if not u.username:
            raise RotationError("the stored database URL has no user name")
        try:
            port = u.port
        except ValueError:
            raise RotationError("the stored database URL's host and port cannot be read "
                                "(several hosts are not supported)") from None
        return {"username": unquote(u.username), "password": unquote(u.password or ""),
                "host": u.hostname or "localhost", "port": port or 5432,
                "dbname": unquote(u.path.lstrip("/")) or "postgres", "_query": u.query,
                "_url": v}, "url"
    raise RotationError("the stored database credential is neither JSON nor a postgresql:// URL")


def format_credential(d: dict[str, Any], shape: str) -> str:
    """``d`` in ``shape``: JSON, or the stored URL with only its user info changed
    (scheme, host, port, database and parameters as they were)."""
    if shape == "json":
        return json.dumps({k: v for k, v in d.items() if not k.startswith("_")},
                          sort_keys=True)
    userinfo = f"{quote(d['username'], safe='')}:{quote(d['password'], safe='')}"
    if d.get("_url"):
        u = urlsplit(str(d["_url"]))
        return urlunsplit(u._replace(netloc=f"{userinfo}@{u.netloc.rpartition('@')[2]}"))
    q = f"?{d['_query']}" if d.get("_query") else ""
    db = quote(str(d["dbname"]), safe="")
    return f"postgresql://{userinfo}@{d['host']}:{d['port']}/{db}{q}"


def _connect(d: dict[str, Any], timeout: int = 10) -> Any:
    psycopg = require_sdk("psycopg", "postgres")
    try:
        return psycopg.connect(host=d.get("host", "localhost"), port=int(d.get("port", 5432)),
                               dbname=d.get("dbname", "postgres"), user=d["username"],
                               password=d["password"], connect_timeout=timeout,
                               autocommit=True)
    except psycopg.Error as exc:
        from keysafe.backends.postgres import first_line

        reason = first_line(exc).replace(str(d["password"]), "***")
        raise RotationError(f"cannot log in to PostgreSQL as {d['username']}: {reason}"
                            ) from None


def _set_password(conn: Any, role: str, password: str) -> None:
    from psycopg import sql

    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        sql.Identifier(role), sql.Literal(verifier.decode())))


class PostgresPasswordRotator:
    name = "postgres"
    OPTIONS = ("scheme", "users", "admin_secret", "linked")

    def check_options(self, name: str, options: Mapping[str, str]) -> None:
        check_known(name, self.name, options, self.OPTIONS)
        ctx = options_context(name, options)
        self.linked(ctx)
        if self._scheme(ctx) == "alternating":
            self._users(ctx)
            if not options.get("admin_secret"):
                raise ConfigError(f"the alternating scheme for {name} needs "
                                  "rotator.admin_secret (a secret holding an admin credential)")

    def _scheme(self, ctx: RotationContext) -> str:
        scheme = ctx.options.get("scheme", "single")
        if scheme not in ("single", "alternating"):
            raise ConfigError(f"rotator.scheme for {ctx.name} must be single or alternating")
        return scheme

    def _users(self, ctx: RotationContext) -> list[str]:
        users = [u.strip() for u in ctx.options.get("users", "").split(",") if u.strip()]
        if len(users) != 2:
            raise ConfigError(f"rotator.users for {ctx.name} must name two roles: a,b")
        return users

    def linked(self, ctx: RotationContext) -> list[str]:
        """The secrets kept in step with this one (``rotator.linked``, comma-separated
        names in the same scope)."""
        from keysafe.naming import is_segment

        names = [n.strip() for n in ctx.options.get("linked", "").split(",") if n.strip()]
        for i, n in enumerate(names, start=1):
            if not is_segment(n):
                # Never the value: options are the operator's, not shown through the API.
                raise ConfigError(f"rotator.linked for {ctx.name}: name {i} is not a "
                                  "secret name (letters, digits, '.', '_' and '-')")
            if n == ctx.name:
                raise ConfigError(f"rotator.linked for {ctx.name} names the secret itself")
        if len(set(names)) != len(names):
            raise ConfigError(f"rotator.linked for {ctx.name} names a secret twice")
        return names

    def _credential(self, ctx: RotationContext, value: str) -> tuple[dict[str, Any], str]:
        """(fields, shape) of this secret's value; a bare password (shape "password")
        takes the role and the connection from the first linked URL or JSON secret."""
        if not is_bare(value):
            return parse_credential(value)
        for other in self.linked(ctx):
            held = ctx.read(other)
            if not is_bare(held):
                d, _ = parse_credential(held)
                return dict(d, password=value.strip()), "password"
        raise RotationError(f"{ctx.name} is neither JSON nor a postgresql:// URL; as a "
                            "bare password it needs rotator.linked naming a secret of the "
                            "same scope with the connection (database_url)")

    def follow(self, ctx: RotationContext, new: str, held: str, name: str) -> str:
        """What the linked secret ``name`` holding ``held`` becomes when this one becomes
        ``new``:
        the new password (and role), in the linked secret's own shape. Checked again
        here (the link may have changed since the rotation began)."""
        nd, _ = self._credential(ctx, new)
        old = self._credential(ctx, ctx.current)[0]["password"] if ctx.current else None
        self._check_link(ctx, name, held, nd, passwords=(old, nd["password"]))
        if is_bare(held):
            return str(nd["password"])
        d, shape = parse_credential(held)
        return format_credential(dict(d, username=nd["username"], password=nd["password"]),
                                 shape)

    def _check_linked(self, ctx: RotationContext, cur: dict[str, Any]) -> None:
        for other in self.linked(ctx):
            self._check_link(ctx, other, ctx.read(other), cur, passwords=(cur["password"],))

    def _check_link(self, ctx: RotationContext, other: str, held: str, cur: dict[str, Any],
                    *, passwords: tuple[str | None, ...]) -> None:
        """A linked secret keysafe can keep in step: the same password bare (not with
        the alternating scheme, where nothing would say which role it is), or a URL or
        JSON naming a role this rotation may hand out on the same server. Anything else
        (another role's or server's credential, a shape keysafe cannot rewrite) would be
        overwritten wrongly: RotationError, which never shows the value."""
        alternating = self._scheme(ctx) == "alternating"
        if is_bare(held):
            if alternating:
                raise RotationError(f"{other}, linked to {ctx.name}, holds a bare password, "
                                    "which cannot say which role is live under the "
                                    "alternating scheme: link a URL or JSON copy instead")
            if held.strip() not in passwords:
                raise RotationError(f"{other}, linked to {ctx.name}, is neither JSON, a "
                                    "postgresql:// URL nor the same password: keysafe "
                                    "cannot keep it in step")
            return
        d = parse_credential(held)[0]
        roles = set(self._users(ctx)) if alternating else {cur["username"]}
        if d["username"] not in roles:
            raise RotationError(f"{other}, linked to {ctx.name}, is the credential of "
                                f"role {d['username']}, not {' or '.join(sorted(roles))}")
        if (str(d["host"]), int(d["port"])) != (str(cur["host"]), int(cur["port"])):
            raise RotationError(f"{other}, linked to {ctx.name}, is for the server "
                                f"{d['host']}:{d['port']}, not {cur['host']}:{cur['port']}")

    def _admin(self, ctx: RotationContext) -> dict[str, Any]:
        name = ctx.options.get("admin_secret")
        if not name:
            raise ConfigError(f"the alternating scheme for {ctx.name} needs "
                              "rotator.admin_secret (a secret holding an admin credential)")
        return parse_credential(ctx.read(name))[0]

    def generate(self, ctx: RotationContext) -> str:
        if ctx.current is None:
            raise RotationError(f"{ctx.name} has no current credential to rotate")
        d, shape = self._credential(ctx, ctx.current)
        if shape == "password" and self._scheme(ctx) == "alternating":
            raise RotationError(f"{ctx.name} holds a bare password, which cannot say "
                                "which role is live: put the alternating rotator on the "
                                "URL or JSON secret and link the password to it")
        self._check_linked(ctx, d)
        password = secrets.token_urlsafe(32)
        if shape == "password":
            return password
        new = dict(d, password=password)
        if self._scheme(ctx) == "alternating":
            a, b = self._users(ctx)
            new["username"] = b if d["username"] == a else a
        return format_credential(new, shape)

    def apply(self, ctx: RotationContext, new: str) -> None:
        assert ctx.current is not None
        nd, _ = self._credential(ctx, new)
        if self._scheme(ctx) == "alternating":
            with _connect(self._admin(ctx)) as conn:
                _set_password(conn, nd["username"], nd["password"])
            return
        cur, _ = self._credential(ctx, ctx.current)
        try:
            conn = _connect(cur)
        except RotationError:
            # Resuming after a crash inside apply: the new password may already be set.
            conn = _connect(nd)
        with conn:
            _set_password(conn, nd["username"], nd["password"])

    def test(self, ctx: RotationContext, new: str) -> None:
        nd, _ = self._credential(ctx, new)
        with _connect(nd) as conn:
            row = conn.execute("SELECT current_user").fetchone()
        if row is None or row[0] != nd["username"]:
            raise RotationError(f"logged in with the new credential for {ctx.name} but as "
                                "the wrong role")

    def rollback(self, ctx: RotationContext, new: str) -> None:
        """Put the current password back (single), or scramble the unused role's new
        password (alternating; the current role was never touched)."""
        nd, _ = self._credential(ctx, new)
        if self._scheme(ctx) == "alternating":
            with _connect(self._admin(ctx)) as conn:
                _set_password(conn, nd["username"], secrets.token_urlsafe(32))
            return
        if ctx.current is None:
            return
        cur, _ = self._credential(ctx, ctx.current)
        try:
            conn = _connect(nd)
        except RotationError:
            return  # the new password never took: the current one still works
        with conn:
            _set_password(conn, cur["username"], cur["password"])

    def retire(self, ctx: RotationContext, old: str) -> None:
        if self._scheme(ctx) != "alternating":
            return  # the role's password changed at apply; nothing else to revoke
        od, _ = parse_credential(old)
        if ctx.current is not None and parse_credential(ctx.current)[0]["username"] == \
                od["username"]:
            return  # rotated back to that role since: it is the live one again
        with _connect(self._admin(ctx)) as conn:
            _set_password(conn, od["username"], secrets.token_urlsafe(32))
