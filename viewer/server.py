"""The viewer's web side: gallery and viewer pages, their JSON API, Apply, and the swap.

One HTTP server on 127.0.0.1 (OS-chosen port) serves the pages, the photos and previews
and the API, behind the daemon's front door (`daemon.loopback`: requests read by one
selector thread with deadlines and size caps, refusals answered there, a few workers for
the rest). Every request must name this port in its Host header and come from no web page
but this server's own (`daemon.access.foreign`). The pages and their scripts hold nothing
of the user's and are served to anyone who passes that; everything else needs a live
session token as `Authorization: Bearer` (how the owner's browser gets one, and why no
cookie and no command line carries it: `viewer.sessions`). The 3D view is drawn in the
page by Spark (a three.js Gaussian splat renderer, vendored in `static/vendor`), which is
handed the PLY's bytes fetched from `/files/splat` with the token. Every file is opened
with the daemon's confinement rules (`open_regular_file`): only inside its folder, never a
pipe or device.

After Apply, a watcher thread, woken by the outputs folder's change events, looks for the
photo's new result (a report with exactly the applied settings and its PLY); the page's
poll of `/api/state` is held until then (a second at most), so the page swaps it into its
scene the moment it exists, keeping its camera, and reports when it is drawn (`/api/shown`), which
gives the Apply-to-new-view time it shows; or it says why nothing happens yet (daemon
paused, busy with another photo, not running, or the photo failed).

Share and Make a clip write beside a result in the outputs folder, through the daemon's
writer (`daemon.outputs`: atomic files, listed in the result's report): `/api/share` makes
the share page from the PLY if it is not there yet, `/api/clip` saves a clip the page
encoded (the one request whose body may be large, and only with a live token), and
`/files/takeaway` hands either (or an export) to the page to download.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote, urlsplit

from loguru import logger

from daemon.access import bearer, foreign, loopback_origins, same_secret
from daemon.config import inside
from daemon.loopback import Limits, LoopbackServer, Request, error_response, response
from daemon.results import CLIP_MOVES, CLIP_SUFFIXES, takeaways
from pipeline import SUPPORTED_EXTENSIONS, DepthSettings, InputError, PipelineError
from pipeline.browser import SOFTWARE_BUDGET
from pipeline.image import open_regular_file

from . import results, tuning
from .index import ResultIndex
from .notes import daemon_note, estimate_note
from .sessions import Sessions, safe_page
from .splat import SplatError, check_splat, median_depth, thinned_ply, vertical_fov
from .thumbnails import PANEL_SIZE, SIZES, Thumbnail, ThumbnailCache

STATIC = Path(__file__).with_name("static")
PAGES = {"/": "gallery.html", "/view": "view.html", "/open": "open.html"}
HANDOFF = "/api/handoff"
"""Where another `view` process asks this one for a launch page (`viewer.run`)."""
PAGE_SIZE = 48
"""Results a gallery page asks for at once (it asks for more as the user scrolls)."""
MAX_PAGE = 100_000
MAX_FAILURES = 50
"""Error notes the gallery lists (newest first); it says how many more there are."""
THUMBNAIL_CACHE = "private, max-age=3600"
"""The browser keeps a thumbnail an hour, then asks again with its ETag (a 304)."""
MAX_BODY_BYTES = 16 * 1024
MAX_PREVIEW_BYTES = 64 * 1024 * 1024
"""A depth preview or contact sheet is a few MB; a larger file is refused unread."""
CLIP = "/api/clip"
MAX_CLIP_BYTES = 64 * 1024 * 1024
"""A clip of 8 s at 1280 x 720 is a few MB; a larger upload is refused (413) unread."""
VIDEO_MAGIC = {".mp4": (4, b"ftyp"), ".webm": (0, b"\x1a\x45\xdf\xa3")}
"""Where each clip format's signature is, and what it is (an MP4's first box, WebM's EBML
header)."""
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
"""Fixed, not `mimetypes`: on Windows that reads the registry, where `.js` is often
`text/plain`, and browsers refuse a module script of any type but JavaScript."""
COPY_CHUNK = 1 << 20
WATCH_SECONDS = 0.1
"""How often the Apply watcher looks at the outputs without a change event (listing mode)."""
STATE_WAIT_SECONDS = 1.0
"""`/api/state?wait=1` holds the answer this long at most while an Apply waits for its
result, and answers the moment the result (or its failure) is found: the page learns of it
at once instead of at its next poll, and its "waiting" note still moves every second."""
LIMITS = Limits(request_seconds=5.0, max_pending=256, max_head_bytes=16 * 1024,
                max_body_bytes=MAX_BODY_BYTES, workers=8, max_queued=64, max_kept=32,
                idle_seconds=30.0, send_seconds=30.0)
"""A browser sends its request in milliseconds and keeps at most 6 connections per tab
alive; these bound what any other local program can hold (`daemon.loopback`)."""
StatusSource = Callable[[], dict[str, Any] | None]
"""The daemon's status as a dict (`Status.as_dict()`), or None when it is not running."""
Rerun = Callable[[Path], object]
"""Ask the daemon to queue a photo now (its sidecar was just written whole)."""


@dataclass
class Pending:
    """An Apply waiting for its result."""

    photo: Path
    settings: dict[str, Any]
    applied_at: float
    applied_clock: float = field(default_factory=time.perf_counter)
    result: str | None = None
    seconds: float | None = None
    error: str | None = None
    checked: int = -1
    """The outputs index's version last looked at (nothing new to look at until it moves)."""


@dataclass(frozen=True)
class Place:
    """Where the viewer's files live (from the config) and the defaults sidecars override."""

    inputs: Path
    outputs: Path
    defaults: DepthSettings


class ViewerApp:
    """The pages, the API and the scene; `start()` returns at once, `close()` ends it all."""

    def __init__(self, place: Place, status: StatusSource,
                 open_folder: Callable[[Path], object],
                 extra: Path | None = None, rerun: Rerun | None = None,
                 launch_dir: Path | None = None) -> None:
        self.place = place
        self.status = status
        self.rerun = rerun
        self.open_folder = open_folder
        self._own_launch_dir = launch_dir is None
        self.sessions = Sessions(launch_dir or Path(tempfile.mkdtemp(prefix="sharp-watch-")))
        """Launch pages go to `launch_dir` (the owner-only state folder), else to a private
        temporary folder of this process."""
        self.handoff_secret = secrets.token_urlsafe(32)
        """Lets another `view` of this user (which reads it from `viewer.json`) ask for a
        launch page, and nothing else."""
        self.extra = extra
        """A PLY named on the command line, viewable even outside the outputs folder."""
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        """Notified when the pending Apply gets its result or failure (`state(wait)`)."""
        self.pending: Pending | None = None
        self.shown: str | None = None
        """The result a page last reported drawn, and how many of its Gaussians."""
        self.shown_count: int | None = None
        self._outputs_changed = threading.Event()
        self.index = ResultIndex(place.outputs, on_change=self._outputs_changed.set)
        self.thumbnails = ThumbnailCache()
        self._closing = threading.Event()
        self.last_request = time.monotonic()
        """When a request with a live session (or the hand-off secret) last came: only
        those keep the viewer from stopping when idle."""
        self._writing = threading.Lock()
        """One write beside a result at a time: each picks a free name and rewrites the
        report."""
        self.front = LoopbackServer("viewer", LIMITS, self._early, self._answer,
                                    security_headers(), self._body_limit)
        self.port: int = self.front.port
        self._watcher = threading.Thread(target=self._watch, name="viewer-watch", daemon=True)

    # life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.index.start()
        self.front.start()
        self._watcher.start()

    def close(self) -> None:
        self._closing.set()
        self._outputs_changed.set()
        with self._lock:
            self._settled.notify_all()
        self.front.close()
        self.sessions.close()
        self.index.close()
        if self._own_launch_dir:
            with contextlib.suppress(OSError):
                self.sessions.folder.rmdir()

    def launch(self, page: str = "/") -> Path:
        """A launch page for `page` (`viewer.sessions`): open it in the owner's browser,
        within a minute, once."""
        return self.sessions.launch(self.port, page)

    # who gets in ------------------------------------------------------------------------

    def _early(self, request: Request) -> bytes | None:
        """On the front door's own thread, before any worker is spent: refusals, the pages
        and scripts (nothing of the user's is in them), and the one-time key traded for a
        session token. What passes on carries a live token (or, for `HANDOFF` only, the
        hand-off secret and no Origin: no web page)."""
        headers = request.headers
        refused = foreign(headers, self.port, loopback_origins(self.port))
        if refused is not None:
            return error_response(*refused, security_headers())
        path = urlsplit(request.target).path
        if request.method == "GET" and path in public_answers():
            return public_answers()[path]
        if request.method == "POST" and path == "/api/session":
            return self._session(request.body)
        given = bearer(headers)
        if path == HANDOFF:
            allowed = headers.get("Origin") is None and same_secret(given, self.handoff_secret)
        else:
            allowed = self.sessions.valid(given)
        if not allowed:
            return error_response(401, "this page is not signed in to the viewer (it was "
                                       "restarted, or the page was opened on its own): open "
                                       "it again from sharp-watch", security_headers())
        self.last_request = time.monotonic()
        return None

    def _body_limit(self, method: str, target: str, headers: Message) -> int:
        """A clip's upload may be large, and only from a page with a live token; any other
        request's body stays small."""
        if (method == "POST" and urlsplit(target).path == CLIP
                and foreign(headers, self.port, loopback_origins(self.port)) is None
                and self.sessions.valid(bearer(headers))):
            return MAX_CLIP_BYTES
        return MAX_BODY_BYTES

    def _session(self, body: bytes) -> bytes:
        """`POST /api/session {"key": KEY}`: the one-time key spent for a session token."""
        try:
            key = json.loads(body).get("key")
        except (ValueError, RecursionError, AttributeError):
            key = None
        if not isinstance(key, str):
            return error_response(400, 'expected {"key": KEY}', security_headers())
        token = self.sessions.spend(key)
        if token is None:
            return error_response(401, "this link was used already or is more than a minute "
                                       "old: open the viewer again from sharp-watch",
                                  security_headers())
        self.last_request = time.monotonic()
        return response(200, json.dumps({"token": token}).encode(), "application/json",
                        security_headers())

    def _answer(self, connection: socket.socket, request: Request) -> bool:
        """A request that passed `_early`, on a worker; True keeps the connection."""
        return not _Handler(connection, request, self).close_connection

    # results ----------------------------------------------------------------------------

    def result(self, name: str | None) -> results.Result | None:
        """`name` in the outputs folder (or the command line's PLY); newest when None."""
        if not name:
            if self.extra is not None:
                return self._extra_result()
            self.index.refresh()
            newest = self.index.newest(1)
            return newest[0] if newest else None
        if self.extra is not None and name == self.extra.name:
            return self._extra_result()
        return self.index.find(name)

    def _extra_result(self) -> results.Result | None:
        assert self.extra is not None
        found = results.read_result(self.extra)
        if found is not None:
            return found
        try:
            modified = self.extra.stat().st_mtime
        except OSError:
            return None
        return results.Result(self.extra, None, modified)

    def photo_of(self, result: results.Result) -> Path:
        """The result's photo, if it is one that can be tuned: a photo the daemon watches (by
        its extension), in the inputs folder once every link and `..` is resolved (never a
        comparison of text), and a regular file there, opened with the daemon's
        confinement rules. Raises TuningError saying why not."""
        photo, inputs = result.photo, self.place.inputs
        if not photo.name or photo.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise tuning.TuningError(f"{photo} is not a photo sharp-watch reads "
                                     f"({', '.join(sorted(SUPPORTED_EXTENSIONS))})")
        if not inside(photo.parent, inputs):
            raise tuning.TuningError(f"{photo} is not in the inputs folder {inputs}; only "
                                     "photos there can be tuned")
        try:
            with open_regular_file(photo, inputs):
                pass
        except InputError as exc:
            raise tuning.TuningError(f"{photo}: {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise tuning.TuningError(f"{photo} cannot be opened "
                                     f"({getattr(exc, 'strerror', None) or exc})") from None
        return photo

    def tunable(self, result: results.Result) -> bool:
        """Whether the result's photo can be tuned (`photo_of`)."""
        try:
            self.photo_of(result)
        except tuning.TuningError:
            return False
        return True

    def detail(self, result: results.Result) -> dict[str, Any]:
        """The viewer page's side panel: the report, the tuning controls and their values."""
        out = results.summary(result)
        out["tunable"] = self.tunable(result)
        if out["tunable"]:
            out["controls"] = tuning.controls(tuning.current_settings(
                result.photo, self.place.defaults, self.place.inputs))
        out["software_budget"] = SOFTWARE_BUDGET
        out["camera"] = self.camera(result)
        return out

    def camera(self, result: results.Result) -> dict[str, Any]:
        """SHARP's source camera for the page: vertical field of view (degrees) from the
        report's focal length and image height, and the orbit centre's depth; or the
        reason the PLY cannot be shown."""
        report = result.report
        size = report.image_size if report else None
        try:
            fov = math.degrees(vertical_fov((report.focal.f_px if report else None) or 0.0,
                                            size[1] if size else 0))
        except ValueError:
            fov = None  # no report: the page keeps its default lens
        try:
            with self.open_ply(result) as f:
                depth = median_depth(check_splat(result.ply, f), f)
        except (OSError, InputError, SplatError) as exc:
            return {"fov_deg": fov, "error": str(exc)}
        return {"fov_deg": fov, "orbit_depth": depth}

    def root(self, result: results.Result) -> Path:
        """The folder a result's files are opened within: the outputs folder, or the
        command line's PLY's own folder."""
        return (self.extra.parent if self.extra is not None and result.ply == self.extra
                else self.place.outputs)

    def open_ply(self, result: results.Result) -> BinaryIO:
        """The result's PLY, opened only inside its folder (`root`)."""
        return open_regular_file(result.ply, self.root(result))

    def tuned(self, result: results.Result) -> dict[str, Any]:
        """The tunable settings this result was made with that differ from the defaults."""
        made = result.report.settings if result.report else {}
        defaults = self.place.defaults.as_dict()
        return {k: made[k] for k in tuning.TUNABLE if k in made and made[k] != defaults.get(k)}

    def gallery(self, limit: int = PAGE_SIZE, after: str | None = None,
                since: str | None = None, through: str | None = None) -> dict[str, Any]:
        """A page of results (`ResultIndex.page`), the failures and the daemon's status.
        `since`: the version the page shows; when nothing changed since, only the status
        is sent (what every poll of an open gallery gets)."""
        version = self.index.refresh()
        status = self.status()
        out: dict[str, Any] = {
            "version": version,
            "daemon": status,
            "note": daemon_note(status, None),
            "estimate": estimate_note(self.index.newest(results.RECENT), status),
        }
        if after is None and since == str(version):
            return {**out, "unchanged": True}
        page = self.index.page(limit, after, through)
        failures, failures_total = self.index.failures(MAX_FAILURES)
        return {
            **out,
            "results": [{**results.summary(r, self.index.preview(r) is not None),
                         "tuned": self.tuned(r)} for r in page.results],
            "last": page.last,
            "more": page.more,
            "failures": [f.summary() for f in failures],
            "failures_total": failures_total,
            "outputs": str(self.place.outputs),
            "inputs": str(self.place.inputs),
        }

    # the scene (drawn by the page) -------------------------------------------------------

    def drawn(self, name: str, count: int) -> None:
        """A page has drawn result `name` with `count` Gaussians: an Apply waiting for it
        has its time."""
        with self._lock:
            self.shown, self.shown_count = name, count
            pending = self.pending
            if pending is not None and pending.result == name and pending.seconds is None:
                pending.seconds = time.perf_counter() - pending.applied_clock
                logger.info(f"viewer: {name} shown {pending.seconds:.2f} s after Apply")

    def state(self, wait: float = 0.0) -> dict[str, Any]:
        """What the viewer page polls: the Apply waiting (if any), the daemon's state. With
        `wait`, held up to that many seconds while an Apply still waits for its result."""
        with self._lock:
            self._settled.wait_for(lambda: self._closing.is_set() or not self._waiting(), wait)
        status = self.status()
        with self._lock:
            pending = self.pending
            out: dict[str, Any] = {"shown": self.shown, "shown_count": self.shown_count}
            if pending is not None:
                out["pending"] = {"photo": pending.photo.name, "result": pending.result,
                                  "seconds": pending.seconds, "error": pending.error,
                                  "waited": time.perf_counter() - pending.applied_clock}
        out["daemon"] = status
        out["note"] = daemon_note(status, pending.photo if pending else None)
        return out

    # Apply ------------------------------------------------------------------------------

    def apply(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Write the sidecar of result `name`'s photo; the watcher swaps the new result in."""
        found = self.result(name)
        if found is None:
            raise tuning.TuningError(f"no result called {name!r} in {self.place.outputs}")
        photo = self.photo_of(found)
        applied = tuning.apply_tuning(photo, changes, self.place.defaults, self.place.inputs)
        answer: dict[str, Any] = {"sidecar": applied.path.name, "written": list(applied.written),
                  "settings": applied.settings.as_dict()}
        if not applied.written:  # every value is what the photo runs with: nothing to wait for
            return answer
        with self._lock:
            self.pending = Pending(photo, answer["settings"], time.time())
        logger.info(f"viewer: wrote {applied.path} "
                    f"({', '.join(f'{k}={v}' for k, v in applied.written.items())})")
        if self.rerun is not None:
            self.rerun(photo)  # else the daemon's watcher sees the sidecar a second later
        return answer

    def _waiting(self) -> bool:
        """An Apply waits for its result (call with `_lock` held)."""
        pending = self.pending
        return pending is not None and pending.result is None and pending.error is None

    def _watch(self) -> None:
        """Swap in the pending Apply's result as soon as its PLY (and report) exist: woken
        by the outputs index's change events, else every `WATCH_SECONDS`."""
        self.index.refresh()  # the first listing, while the browser starts
        while not self._closing.is_set():
            self._outputs_changed.wait(WATCH_SECONDS)
            self._outputs_changed.clear()
            with self._lock:
                pending = self.pending if self._waiting() else None
            if pending is None:
                continue
            try:
                self._check(pending)
            except Exception as exc:
                logger.opt(exception=True).warning(f"viewer: watching for a result: {exc}")

    def _check(self, pending: Pending) -> None:
        version = self.index.refresh()
        if version == pending.checked:
            return
        pending.checked = version
        found = self.index.latest_for(pending.photo, pending.settings)
        if found is not None:
            with self._lock:
                pending.result = found.name  # the page polls for it and swaps it in
                self._settled.notify_all()
            return
        failure = self.index.failure_for(pending.photo.name, pending.applied_at - 1.0)
        if failure is not None:
            with self._lock:
                pending.error = failure.text
                self._settled.notify_all()

    # share and clips --------------------------------------------------------------------

    def _in_outputs(self, name: str) -> results.Result:
        """Result `name` when it is in the outputs folder (only there does the viewer write);
        raises `WriteRefused` saying why not."""
        found = self.result(name) if name else None
        if found is None:
            raise WriteRefused(404, f"no result called {name!r} in {self.place.outputs}")
        if found.report is None or found.ply.parent.resolve() != self.place.outputs.resolve():
            raise WriteRefused(400, f"{found.ply} is not a result in the outputs folder "
                                    f"{self.place.outputs}; only those can be shared here "
                                    "(use `sharp-watch export` for another PLY)")
        return found

    def share(self, name: str) -> dict[str, Any]:
        """Result `name`'s share page: the one beside it, else made now from its PLY."""
        from daemon.outputs import OutputFolder  # imports the exporters: only when sharing

        found = self._in_outputs(name)
        with self._writing:
            page = OutputFolder(self.place.outputs).share_page(found.ply)
        return {"file": page.name, "bytes": page.stat().st_size}

    def save_clip(self, name: str, move: str, kind: str, video: bytes) -> dict[str, Any]:
        """A clip of result `name` the page encoded: checked (move, media type, signature),
        then saved beside it and listed in its report (`OutputFolder.save_clip`)."""
        from daemon.outputs import OutputFolder

        if move not in CLIP_MOVES:
            raise WriteRefused(400, f"move must be one of {', '.join(CLIP_MOVES)}, got {move!r}")
        suffix = CLIP_SUFFIXES.get(kind.split(";")[0].strip().lower())
        if suffix is None:
            raise WriteRefused(415, f"a clip is sent as {' or '.join(CLIP_SUFFIXES)}, not "
                                    f"{kind or 'no Content-Type'}")
        at, magic = VIDEO_MAGIC[suffix]
        if video[at:at + len(magic)] != magic:
            raise WriteRefused(415, f"the body is not an {suffix[1:].upper()} file (no "
                                    f"{magic!r} at byte {at})")
        found = self._in_outputs(name)
        with self._writing:
            path = OutputFolder(self.place.outputs).save_clip(found.ply, move, video, suffix)
        logger.info(f"viewer: saved {path.name} ({len(video) / 1e6:.2f} MB)")
        return {"file": path.name, "bytes": len(video)}

    def takeaway(self, name: str, file: str) -> Path:
        """File `file` of result `name` to download: one its report lists as made from its
        PLY (`daemon.results.takeaways`); raises `WriteRefused` (404) otherwise."""
        found = self._in_outputs(name)
        assert found.report is not None
        if file not in takeaways(found.name, found.report.files):
            raise WriteRefused(404, f"{found.name} has no file {file!r} to download")
        return self.place.outputs / file

    # files ------------------------------------------------------------------------------

    def thumbnail(self, result: results.Result, size: int,
                  browser_etag: str | None = None) -> Thumbnail | None:
        """The photo, its long side `size`, opened only inside the inputs folder."""
        if not self.tunable(result):
            return None
        return self._thumbnail(result.photo, self.place.inputs, size, browser_etag)

    def preview_thumbnail(self, result: results.Result, size: int,
                          browser_etag: str | None = None) -> Thumbnail | None:
        """The depth preview (or contact sheet), its long side `size`."""
        preview = self.index.preview(result)
        if preview is None:
            return None
        return self._thumbnail(preview, self.place.outputs, size, browser_etag)

    def _thumbnail(self, path: Path, within: Path, size: int,
                   browser_etag: str | None) -> Thumbnail | None:
        try:
            return self.thumbnails.get(path, within, size, browser_etag)
        except (OSError, InputError, ValueError) as exc:
            logger.debug(f"viewer: no thumbnail of {path}: {exc}")
            return None


class WriteRefused(Exception):
    """A share, clip or download the viewer will not do: its HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@functools.cache
def security_headers() -> dict[str, str]:
    """Sent with every answer. The Content-Security-Policy lets the pages run only this
    server's scripts (and the inline import map, by its hash), WebAssembly and the blob
    workers Spark makes, and load nothing from anywhere else; `no-referrer` keeps the
    viewer's addresses out of any request a page might make elsewhere."""
    hashes = sorted({"'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest())
                     .decode() + "'"
                     for page in PAGES.values()
                     for script in re.findall(r"<script[^>]*>(.*?)</script>",
                                              (STATIC / page).read_text(encoding="utf-8"),
                                              re.S) if script})
    policy = ("default-src 'none'; script-src 'self' 'wasm-unsafe-eval' " + " ".join(hashes)
              + "; worker-src 'self' blob:; connect-src 'self' blob: data:; "
              "img-src 'self' blob: data:; style-src 'self'; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'")
    return {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin"}


@functools.cache
def public_answers() -> dict[str, bytes]:
    """Every answer that needs no session, whole and ready to send, by path: the pages and
    our scripts and style sheets (and the vendored libraries'), read once. Nothing else
    under `static/` is served, and no name a client sends is ever looked up on disk."""
    answers = {path: response(200, (STATIC / page).read_bytes(), STATIC_TYPES[".html"],
                              security_headers()) for path, page in PAGES.items()}
    for file in sorted(STATIC.rglob("*")):
        if file.suffix in (".js", ".css") and file.is_file():
            answers["/static/" + file.relative_to(STATIC).as_posix()] = response(
                200, file.read_bytes(), STATIC_TYPES[file.suffix], security_headers())
    return answers


class _Handler(BaseHTTPRequestHandler):
    """One request that passed `ViewerApp._early`, on a worker thread: its head and body
    already read by the front door, the answer written to the socket (a file in chunks)."""

    server_version = "sharp-watch-viewer"
    protocol_version = "HTTP/1.1"

    def __init__(self, connection: socket.socket, request: Request, app: ViewerApp) -> None:
        self._raw = request.raw
        self._app = app
        self._started = False
        super().__init__(connection, ("127.0.0.1", 0), app)  # type: ignore[arg-type]

    @property
    def app(self) -> ViewerApp:
        return self._app

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._raw)
        self.wfile = self.connection.makefile("wb")

    def handle(self) -> None:
        self.handle_one_request()  # the front door reads the next one

    def log_message(self, format: str, *args: Any) -> None:
        """Only refusals and errors: the pages poll several times a second."""
        if len(args) >= 2 and str(args[1]) not in ("200", "303"):
            logger.debug("viewer: " + format % args)

    def _guarded(self, run: Callable[[], None]) -> None:
        """Run a route: a client that went away ends the connection; any other exception
        is a bug, answered 500 (if nothing was sent yet) and logged, never a connection
        closed without a word."""
        try:
            run()
        except (ConnectionError, TimeoutError):  # the client went away or stopped reading
            self.close_connection = True
        except Exception as exc:
            logger.opt(exception=True).warning(f"viewer: {self.command} {self.path!r} failed")
            if self._started:
                self.close_connection = True
            else:
                self._json(500, {"error": f"internal error ({type(exc).__name__})"})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        route = _GET_ROUTES.get(url.path)
        if route is None:
            self._json(404, {"error": f"no such page: {url.path}"})
            return
        self._guarded(lambda: route(self, query))

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _post(self) -> None:
        url = urlsplit(self.path)
        if url.path == CLIP:
            self._clip({k: v[-1] for k, v in parse_qs(url.query).items()})
            return
        route = _POST_ROUTES.get(url.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = MAX_BODY_BYTES + 1
        if route is None or not 0 <= length <= MAX_BODY_BYTES:
            self._json(404 if route is None else 413, {"error": f"cannot POST {url.path}"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            self._json(200, route(self.app, body))
        except (ValueError, RecursionError, OverflowError, tuning.TuningError) as exc:
            self._json(400, {"error": str(exc) or type(exc).__name__})
        except WriteRefused as exc:
            self._json(exc.status, {"error": str(exc)})
        except PipelineError as exc:  # a PLY not in SHARP's layout, a folder not writable
            self._json(422, {"error": str(exc)})
        except OSError as exc:
            self._json(500, {"error": f"cannot write: {exc.strerror or exc}"})

    def _clip(self, query: dict[str, str]) -> None:
        """`POST /api/clip?ply=NAME&move=MOVE`, the body the clip (`video/mp4` or
        `video/webm`, at most `MAX_CLIP_BYTES`, the front door's limit for it)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
            video = self.rfile.read(length)
            self._json(200, self.app.save_clip(query.get("ply", ""), query.get("move", ""),
                                               self.headers.get("Content-Type", ""), video))
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
        except WriteRefused as exc:
            self._json(exc.status, {"error": str(exc)})
        except PipelineError as exc:
            self._json(422, {"error": str(exc)})

    def _headers(self, code: int, length: int, kind: str, extra: dict[str, str]) -> None:
        self._started = True
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", extra.get("Cache-Control", "no-store"))
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in {**security_headers(), **extra}.items():
            if key != "Cache-Control":
                self.send_header(key, value)
        self.end_headers()

    def _send(self, code: int, data: bytes, kind: str,
              extra: dict[str, str] | None = None) -> None:
        self._headers(code, len(data), kind, extra or {})
        self.wfile.write(data)

    def _send_file(self, f: BinaryIO, kind: str, extra: dict[str, str]) -> None:
        """The whole open file, from its start, without holding it in memory."""
        length = f.seek(0, 2)
        f.seek(0)
        self._headers(200, length, kind, extra)
        shutil.copyfileobj(f, self.wfile, COPY_CHUNK)

    def _json(self, code: int, body: Any) -> None:
        self._send(code, json.dumps(body, default=str).encode(), "application/json")

    # GET routes -------------------------------------------------------------------------

    def _result(self, query: dict[str, str]) -> results.Result | None:
        """The result `?ply=` names (the newest without one), or None after a 404 saying so."""
        found = self.app.result(query.get("ply"))
        if found is None:
            self._json(404, {"error": f"no result {query.get('ply') or 'yet'} in "
                                      f"{self.app.place.outputs}"})
        return found

    def api_gallery(self, query: dict[str, str]) -> None:
        """`?limit=N` results from the newest, or after the cursor `after=`, and at least
        through the cursor `through=`; `since=V`: only the daemon's status if version V
        is still current."""
        try:
            limit = _whole_number(query.get("limit"), "limit", PAGE_SIZE)
            if not 0 < limit <= MAX_PAGE:
                raise ValueError(f"limit must be 1 to {MAX_PAGE}, got {limit}")
            self._json(200, self.app.gallery(limit, query.get("after"), query.get("since"),
                                             query.get("through")))
        except ValueError as exc:
            self._json(400, {"error": str(exc)})

    def api_result(self, query: dict[str, str]) -> None:
        found = self._result(query)
        if found is None:
            return
        self._json(200, self.app.detail(found))

    def api_state(self, query: dict[str, str]) -> None:
        """`wait=1`: hold the answer while an Apply waits (`STATE_WAIT_SECONDS`)."""
        self._json(200, self.app.state(STATE_WAIT_SECONDS if query.get("wait") == "1" else 0.0))

    def photo(self, query: dict[str, str]) -> None:
        """The result's photo, small (`size`: one of `thumbnails.SIZES`)."""
        self._thumbnail(query, ViewerApp.thumbnail, "no photo for this result")

    def _thumbnail(self, query: dict[str, str],
                   make: Callable[[ViewerApp, results.Result, int, str | None],
                                  Thumbnail | None], missing: str) -> None:
        """A thumbnail the browser may keep; 304 when the one it has is current."""
        try:
            size = _whole_number(query.get("size"), "size", PANEL_SIZE)
            if size not in SIZES:
                raise ValueError(f"size must be one of {', '.join(map(str, SIZES))}")
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        found = self.app.result(query.get("ply"))
        browser_etag = self.headers.get("If-None-Match")
        thumbnail = make(self.app, found, size, browser_etag) if found is not None else None
        if thumbnail is None:
            self._json(404, {"error": missing})
            return
        cache = {"ETag": thumbnail.etag, "Cache-Control": THUMBNAIL_CACHE}
        if thumbnail.etag == browser_etag:
            self._headers(304, 0, "image/jpeg", cache)
            return
        self._send(200, thumbnail.data, "image/jpeg", cache)

    def splat(self, query: dict[str, str]) -> None:
        """The result's PLY for the page's renderer; with `budget`, a thinned copy."""
        found = self._result(query)
        if found is None:
            return
        budget = query.get("budget")
        if budget is not None and not (budget.isascii() and budget.isdigit()
                                       and len(budget) <= 9 and int(budget) > 0):
            self._json(400, {"error": f"budget must be a positive whole number, got {budget!r}"})
            return
        try:
            with self.app.open_ply(found) as f:
                splat = check_splat(found.ply, f)
                if budget is not None and int(budget) < splat.count:
                    data = thinned_ply(splat, f, int(budget))
                    self._send(200, data, "application/octet-stream",
                               {"X-Gaussians": budget,
                                "X-Gaussians-Total": str(splat.count)})
                    return
                self._send_file(f, "application/octet-stream",
                                {"X-Gaussians": str(splat.count),
                                 "X-Gaussians-Total": str(splat.count)})
        except ConnectionError:  # the page went away (a newer result, closed) mid-transfer
            self.close_connection = True
        except (OSError, InputError, SplatError) as exc:
            self._json(404 if isinstance(exc, FileNotFoundError) else 422,
                       {"error": f"cannot show {found.ply.name}: {exc}"})

    def takeaway(self, query: dict[str, str]) -> None:
        """`?ply=NAME&file=FILE`: a share page, clip or export of the result, as a download
        (opened only inside the outputs folder, never a pipe or device)."""
        try:
            path = self.app.takeaway(query.get("ply", ""), query.get("file", ""))
            with open_regular_file(path, self.app.place.outputs) as f:
                self._send_file(f, "application/octet-stream", {
                    "Content-Disposition": f"attachment; filename*=UTF-8''{quote(path.name)}"})
        except WriteRefused as exc:
            self._json(exc.status, {"error": str(exc)})
        except (OSError, InputError) as exc:
            self._json(404 if isinstance(exc, FileNotFoundError) else 422,
                       {"error": f"cannot send {query.get('file')}: {exc}"})

    def preview(self, query: dict[str, str]) -> None:
        """The depth preview (or contact sheet), opened like the PLY (only inside its
        folder, never a pipe or device) and at most `MAX_PREVIEW_BYTES`; with `size`, a
        thumbnail of it."""
        if "size" in query:
            self._thumbnail(query, ViewerApp.preview_thumbnail, "no depth preview")
            return
        found = self.app.result(query.get("ply"))
        path = found.preview if found is not None else None
        if found is None or path is None:
            self._json(404, {"error": "no depth preview for this result"})
            return
        try:
            with open_regular_file(path, self.app.root(found)) as f:
                if os.fstat(f.fileno()).st_size > MAX_PREVIEW_BYTES:
                    raise InputError(f"is over {MAX_PREVIEW_BYTES // 2**20} MB, too large "
                                     "for a preview; not read", path)
                self._send_file(f, "image/png", {})
        except (OSError, InputError) as exc:
            self._json(404 if isinstance(exc, FileNotFoundError) else 422,
                       {"error": f"cannot show {path.name}: {exc}"})


def _whole_number(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{name} must be a whole number, got {text!r}")
    return int(text)


def _shown(app: ViewerApp, body: dict[str, Any]) -> dict[str, Any]:
    name, count = body.get("ply"), body.get("count")
    if (not isinstance(name, str) or isinstance(count, bool) or not isinstance(count, int)
            or count < 0):
        raise ValueError('expected {"ply": NAME, "count": GAUSSIANS DRAWN}')
    app.drawn(name, count)
    return {"shown": name}


def _apply(app: ViewerApp, body: dict[str, Any]) -> dict[str, Any]:
    changes = body.get("settings")
    if not isinstance(body.get("ply"), str) or not isinstance(changes, dict):
        raise ValueError('expected {"ply": NAME, "settings": {...}}')
    return app.apply(body["ply"], changes)


def _open_folder(app: ViewerApp, body: dict[str, Any]) -> dict[str, Any]:
    app.open_folder(app.place.outputs)
    return {"opened": str(app.place.outputs)}


def _share(app: ViewerApp, body: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(body.get("ply"), str):
        raise ValueError('expected {"ply": NAME}')
    return app.share(body["ply"])


def _handoff(app: ViewerApp, body: dict[str, Any]) -> dict[str, Any]:
    """Another `view` of this user asks for a launch page of `page` (`viewer.run`)."""
    page = body.get("page")
    if not isinstance(page, str) or not safe_page(page):
        raise ValueError('expected {"page": "/..."}')
    return {"launch": str(app.launch(page))}


_GET_ROUTES: dict[str, Callable[[_Handler, dict[str, str]], None]] = {
    "/api/gallery": _Handler.api_gallery,
    "/api/result": _Handler.api_result,
    "/api/state": _Handler.api_state,
    "/files/photo": _Handler.photo,
    "/files/preview": _Handler.preview,
    "/files/splat": _Handler.splat,
    "/files/takeaway": _Handler.takeaway,
}
_POST_ROUTES: dict[str, Callable[[ViewerApp, dict[str, Any]], dict[str, Any]]] = {
    "/api/shown": _shown,
    "/api/apply": _apply,
    "/api/open-folder": _open_folder,
    "/api/share": _share,
    HANDOFF: _handoff,
}
