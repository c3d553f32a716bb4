"""Who may drive a loopback server of ours: the rules the control channel and the viewer share.

A request goes ahead only when (1) its Host header names this very port on 127.0.0.1 or
localhost, which defeats DNS rebinding (a web page whose name was re-pointed at
127.0.0.1 still sends its own name); (2) its Origin header is absent or one the server
allows (browsers send Origin on every cross-site request and on same-site writes, so
another web page cannot drive it); and (3) it presents this run's secret, as
`Authorization: Bearer <secret>` or, for a browser page, a cookie set when the page was
opened with the secret in its address.

It lives in the daemon, below the viewer and the service, so both can use it.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from http.cookies import CookieError, SimpleCookie
from typing import Any


def loopback_hosts(port: int) -> tuple[str, ...]:
    """The Host headers a client of `127.0.0.1:port` may send."""
    return (f"127.0.0.1:{port}", f"localhost:{port}")


def loopback_origins(port: int) -> tuple[str, ...]:
    """The Origins of a page this server itself served (for servers that serve pages)."""
    return tuple(f"http://{host}" for host in loopback_hosts(port))


def presented_secret(headers: Any, cookie: str | None = None) -> str:
    """The secret a request carries: its Bearer token, else the named cookie, else ''."""
    given = headers.get("Authorization") or ""
    if given.startswith("Bearer "):
        return given.removeprefix("Bearer ")
    if cookie is not None and headers.get("Cookie"):
        jar = SimpleCookie()
        try:
            jar.load(headers.get("Cookie"))
        except CookieError:
            return ""
        morsel = jar.get(cookie)
        return morsel.value if morsel is not None else ""
    return ""


def refusal(headers: Any, port: int, secret: str, origins: Collection[str] = (),
            cookie: str | None = None) -> tuple[int, str] | None:
    """Why a request must be refused (HTTP status, reason), or None when it may go ahead."""
    origin = headers.get("Origin")
    if origin is not None and origin not in origins:
        return 403, "requests from web pages are refused"
    if headers.get("Host") not in loopback_hosts(port):
        return 403, "wrong Host header"
    if not hmac.compare_digest(presented_secret(headers, cookie).encode(), secret.encode()):
        return 401, "missing or wrong secret"
    return None
