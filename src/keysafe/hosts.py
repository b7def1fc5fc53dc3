"""Which network ends a credential may cross to: one rule for the clients, the KMS, the
key checks and the manifests keysafe renders."""

from __future__ import annotations

import os

#: Set to 1 where the network itself is encrypted (a service mesh with mTLS): plain http
#: to another machine is then accepted.
ALLOW_HTTP_ENV = "KEYSAFE_ALLOW_HTTP"


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): no network in between."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_allowed() -> bool:
    """Whether KEYSAFE_ALLOW_HTTP says plain http to another machine is acceptable."""
    return os.environ.get(ALLOW_HTTP_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cleartext_to_another_machine(scheme: str, host: str | None) -> bool:
    """Whether a URL's ``scheme`` and ``host`` send a credential in the clear to another
    machine: not https, not loopback, and KEYSAFE_ALLOW_HTTP not set. The one rule of
    the clients, the KMS and the trusts' key fetches."""
    return (scheme != "https" and not is_loopback_host(host or "")
            and not plain_http_allowed())


def shown_url(url: str) -> str:
    """``url`` as messages and reprs show it: without user info, query or fragment, which
    are not needed to say where and may hold a credential, however it is (mis)spelt.
    Everything up to the last ``@`` after the scheme goes, before any parsing: a
    password holding ``/``, ``?`` or ``#`` would otherwise end the host part early and
    be shown (an ``@`` later in a path costs the host's name, never a secret)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest = rest.rpartition("@")[2].split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return f"{scheme}://{rest}" if sep else rest
