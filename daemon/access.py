"""Who may drive a loopback server of ours: the rules the control channel and the viewer share.

A request goes ahead only when (1) its Host header names this very port on 127.0.0.1 or
localhost, which defeats DNS rebinding (a web page whose name was re-pointed at
127.0.0.1 still sends its own name); (2) its Origin header is absent or one the server
allows (browsers send Origin on every cross-site request and on same-site writes, so
another web page cannot drive it); and (3) it presents a secret as
`Authorization: Bearer <secret>`.

Never as a cookie: a browser sends 127.0.0.1's cookies to every port of it, so to any
other local user's server a link leads to. (The viewer's pages keep their token in
storage that browsers keep apart by port; see `viewer.sessions`.)

It lives in the daemon, below the viewer and the service, so both can use it.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from typing import Any


def loopback_hosts(port: int) -> tuple[str, ...]:
    """The Host headers a client of `127.0.0.1:port` may send."""
    return (f"127.0.0.1:{port}", f"localhost:{port}")


def loopback_origins(port: int) -> tuple[str, ...]:
    """The Origins of a page this server itself served (for servers that serve pages)."""
    return tuple(f"http://{host}" for host in loopback_hosts(port))


def bearer(headers: Any) -> str:
    """The secret a request carries as `Authorization: Bearer <secret>`, else ''."""
    given = headers.get("Authorization") or ""
    return given.removeprefix("Bearer ") if given.startswith("Bearer ") else ""


def same_secret(given: str, secret: str) -> bool:
    """`given == secret`, in time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               secret.encode("utf-8", "surrogatepass"))


def foreign(headers: Any, port: int, origins: Collection[str] = ()) -> tuple[int, str] | None:
    """Why a request is not from a client of this very server (HTTP status, reason): a web
    page of another origin, or a Host naming anything else; None when it is."""
    origin = headers.get("Origin")
    if origin is not None and origin not in origins:
        return 403, "requests from web pages are refused"
    if headers.get("Host") not in loopback_hosts(port):
        return 403, "wrong Host header"
    return None


def refusal(headers: Any, port: int, secret: str,
            origins: Collection[str] = ()) -> tuple[int, str] | None:
    """Why a request must be refused (HTTP status, reason), or None when it may go ahead."""
    refused = foreign(headers, port, origins)
    if refused is None and not same_secret(bearer(headers), secret):
        return 401, "missing or wrong secret"
    return refused
