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
    are not needed to say where and may hold a credential, however it is (mis)spelt."""
    from urllib.parse import urlsplit, urlunsplit

    rough = url.split("?", 1)[0].split("#", 1)[0]
    try:
        parts = urlsplit(rough)
    except ValueError:  # an unclosed [IPv6 address: what follows the user info
        return rough.rpartition("@")[2]
    if not parts.scheme or not parts.netloc:
        return rough.rpartition("@")[2]
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2],
                       parts.path.rstrip("/"), "", ""))
