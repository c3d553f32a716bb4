"""How the owner's browser gets into the viewer, and no other local user's program does.

Nothing secret goes on a command line (any local user can read every process's) or into a
cookie (a browser sends 127.0.0.1's cookies to every port of it, so to any other local
user's server that a link leads to). Instead:

1. The viewer writes a launch page into the owner-only state folder (0600 in a 0700
   folder; on Windows the per-user AppData, which only the user, SYSTEM and
   administrators can read). Its script sends the browser on to
   `http://127.0.0.1:<port>/open#key=<one-time key>&next=<page>`. The browser is opened on
   that file, so its command line holds only the file's path.
2. `/open` (a page with nothing of the user's in it) takes the key from the address's
   fragment, which a browser never sends to a server, removes it from the address and the
   history, and trades it for a session token (`POST /api/session`). A key is spent on
   first use and expires `KEY_SECONDS` after it was made; its launch page is deleted then.
3. The page keeps the token in `sessionStorage`, which browsers keep apart by origin
   (scheme, host and port) and by tab, and sends it as `Authorization: Bearer` with every
   request; pictures and the splat are fetched so and shown from blob URLs.

A token unused for `SESSION_IDLE_SECONDS` lapses, and at most `MAX_SESSIONS` live at once
(the least recently used goes first). Keys and tokens are kept only as SHA-256 digests and
die with the viewer's process.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from pipeline.atomic import atomic_write, private_folder

KEY_SECONDS = 60.0
"""A one-time key's life: long enough for a cold browser start on a slow PC."""
SESSION_IDLE_SECONDS = 15 * 60.0
MAX_SESSIONS = 16
LAUNCH_PREFIX = "viewer-open-"
LAUNCH_SUFFIX = ".html"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def safe_page(page: str) -> bool:
    """Whether `page` is a path on this server (`/view?ply=...`), not another site."""
    return page.startswith("/") and not page.startswith(("//", "/\\")) and page.isprintable()


def launch_html(target: str) -> str:
    """A page that sends the browser to `target` at once (with a link, should script be off)."""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"referrer\" content=\"no-referrer\"><title>sharp-watch</title>\n"
            f"<script>location.replace({json.dumps(target)});</script></head>\n"
            f"<body><p>Opening sharp-watch... If nothing happens, "
            f"<a href=\"{html.escape(target)}\">continue</a> (this page works once, within "
            f"{KEY_SECONDS:.0f} seconds of being made).</p></body></html>\n")


class Sessions:
    """The one-time keys handed out in launch pages, and the session tokens they buy."""

    def __init__(self, folder: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = folder
        """Where launch pages are written: owner-only (`private_folder`)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[bytes, tuple[float, Path]] = {}
        """Key digest -> (expiry, its launch page)."""
        self._tokens: dict[bytes, float] = {}
        """Token digest -> last use; least recently used first."""

    def launch(self, port: int, page: str) -> Path:
        """Write a launch page for `page` on `127.0.0.1:port`, with a new one-time key."""
        if not safe_page(page):
            raise ValueError(f"not a page of the viewer: {page!r}")
        key = secrets.token_urlsafe(32)
        target = f"http://127.0.0.1:{port}/open#" + urlencode({"key": key, "next": page})
        path = private_folder(self.folder) / f"{LAUNCH_PREFIX}{secrets.token_hex(8)}{LAUNCH_SUFFIX}"
        atomic_write(path, launch_html(target).encode("utf-8"), mode=0o600)
        with self._lock:
            self._keys[_digest(key)] = (self._clock() + KEY_SECONDS, path)
        return path

    def spend(self, key: str) -> str | None:
        """A new session token for `key`, which is spent; None for a key that is unknown,
        already spent or expired."""
        now = self._clock()
        with self._lock:
            found = self._keys.pop(_digest(key), None)
            if found is None or found[0] < now:
                token = None
            else:
                token = secrets.token_urlsafe(32)
                while len(self._tokens) >= MAX_SESSIONS:
                    del self._tokens[next(iter(self._tokens))]
                self._tokens[_digest(token)] = now
        if found is not None:
            _remove(found[1])
        return token

    def valid(self, token: str) -> bool:
        """Whether `token` is a live session (its use counts: it lapses only unused)."""
        if not token:
            return False
        now, digest = self._clock(), _digest(token)
        with self._lock:
            last = self._tokens.pop(digest, None)
            if last is None or now - last > SESSION_IDLE_SECONDS:
                return False
            self._tokens[digest] = now  # to the end: most recently used
            return True

    def sweep(self) -> None:
        """Forget expired keys and delete their launch pages."""
        now = self._clock()
        with self._lock:
            gone = [d for d, (expiry, _) in self._keys.items() if expiry < now]
            pages = [self._keys.pop(d)[1] for d in gone]
        for page in pages:
            _remove(page)

    def close(self) -> None:
        """Forget every key and token; delete the launch pages not used yet."""
        with self._lock:
            pages = [page for _, page in self._keys.values()]
            self._keys.clear()
            self._tokens.clear()
        for page in pages:
            _remove(page)


def remove_stale_launch_pages(folder: Path, now: float | None = None) -> None:
    """Delete launch pages older than a key's life (left by a viewer that crashed)."""
    now = time.time() if now is None else now
    for page in folder.glob(f"{LAUNCH_PREFIX}*{LAUNCH_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - page.stat().st_mtime > KEY_SECONDS:
                page.unlink()


def _remove(page: Path) -> None:
    with contextlib.suppress(OSError):
        page.unlink()
