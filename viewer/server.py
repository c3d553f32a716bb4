"""The viewer's web side: gallery and viewer pages, their JSON API, Apply, and the swap.

One HTTP server on 127.0.0.1 (OS-chosen port) serves the pages, the photos and previews
and the API; every request passes `daemon.access.refusal` (Host naming this port,
Origin absent or this server's own, this run's secret as a cookie or Bearer token). The
browser is opened at `/?key=<secret>`: that one request sets an HttpOnly, SameSite=Strict
cookie and redirects to the address without the key. The 3D view is drawn in the page by
Spark (a three.js Gaussian splat renderer, vendored in `static/vendor`), which loads the
PLY from `/files/splat` through the same checks: no other port, nothing unchecked.

After Apply, a watcher thread looks for the photo's new result (a report with exactly the
applied settings and its PLY); the page, polling `/api/state`, swaps it into its scene as
soon as it exists, keeping its camera, and reports when it is drawn (`/api/shown`), which
gives the Apply-to-new-view time it shows; or it says why nothing happens yet (daemon
paused, busy with another photo, not running, or the photo failed).
"""

from __future__ import annotations

import io
import json
import math
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlencode, urlsplit

from loguru import logger
from PIL import Image, ImageOps

from daemon.access import loopback_origins, refusal
from pipeline import DepthSettings, InputError
from pipeline.browser import SOFTWARE_BUDGET
from pipeline.image import open_regular_file

from . import results, tuning
from .notes import daemon_note, estimate_note
from .splat import SplatError, check_splat, median_depth, thinned_ply, vertical_fov

STATIC = Path(__file__).with_name("static")
COOKIE = "sharp_watch_viewer"
THUMB_PX = 640
MAX_THUMBS = 256
"""Thumbnails kept in memory (about 50 KB each); the oldest goes first."""
MAX_BODY_BYTES = 16 * 1024
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
"""Fixed, not `mimetypes`: on Windows that reads the registry, where `.js` is often
`text/plain`, and browsers refuse a module script of any type but JavaScript."""
COPY_CHUNK = 1 << 20
WATCH_SECONDS = 0.1
IDLE_CONNECTION_SECONDS = 30.0
"""A kept-alive connection that sends nothing for this long is closed (frees its thread)."""
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
                 extra: Path | None = None, rerun: Rerun | None = None) -> None:
        self.place = place
        self.status = status
        self.rerun = rerun
        self.open_folder = open_folder
        self.secret = secrets.token_urlsafe(32)
        self.extra = extra
        """A PLY named on the command line, viewable even outside the outputs folder."""
        self._lock = threading.Lock()
        self.pending: Pending | None = None
        self.shown: str | None = None
        """The result a page last reported drawn, and how many of its Gaussians."""
        self.shown_count: int | None = None
        self._thumbs: dict[tuple[str, float], bytes] = {}
        self._closing = threading.Event()
        self.last_request = time.monotonic()
        self.http = _QuietServer(("127.0.0.1", 0), _Handler)
        self.http.daemon_threads = True
        self.http.app = self  # type: ignore[attr-defined]
        self.port: int = self.http.server_address[1]
        self._threads = [threading.Thread(target=self.http.serve_forever, name="viewer-http",
                                          daemon=True),
                         threading.Thread(target=self._watch, name="viewer-watch", daemon=True)]

    # life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._threads[0].is_alive():  # shutdown() waits for a serve_forever that runs
            self.http.shutdown()
        self.http.server_close()

    def url(self, path: str = "/") -> str:
        """The address to open in the owner's browser (carries the secret once)."""
        joiner = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}{path}{joiner}key={self.secret}"

    # results ----------------------------------------------------------------------------

    def result(self, name: str | None) -> results.Result | None:
        """`name` in the outputs folder (or the command line's PLY); newest when None."""
        if not name:
            if self.extra is not None:
                return self._extra_result()
            newest = results.list_results(self.place.outputs)
            return newest[0] if newest else None
        if self.extra is not None and name == self.extra.name:
            return self._extra_result()
        return results.find_result(self.place.outputs, name)

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

    def tunable(self, result: results.Result) -> bool:
        """Whether the result's photo is in the inputs folder (only then can it be tuned)."""
        photo = result.photo
        return bool(photo.name) and photo.is_relative_to(self.place.inputs) and photo.is_file()

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

    def open_ply(self, result: results.Result) -> BinaryIO:
        """The result's PLY, opened only inside the outputs folder (or the command line's
        PLY's own folder)."""
        root = (self.extra.parent if self.extra is not None and result.ply == self.extra
                else self.place.outputs)
        return open_regular_file(result.ply, root)

    def tuned(self, result: results.Result) -> dict[str, Any]:
        """The tunable settings this result was made with that differ from the defaults."""
        made = result.report.settings if result.report else {}
        defaults = self.place.defaults.as_dict()
        return {k: made[k] for k in tuning.TUNABLE if k in made and made[k] != defaults.get(k)}

    def gallery(self) -> dict[str, Any]:
        found = results.list_results(self.place.outputs)
        status = self.status()
        return {
            "results": [{**results.summary(r), "tuned": self.tuned(r)} for r in found],
            "failures": [f.summary() for f in results.list_failures(self.place.outputs)],
            "daemon": status,
            "note": daemon_note(status, None),
            "estimate": estimate_note(found, status),
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

    def state(self) -> dict[str, Any]:
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
        if not self.tunable(found):
            raise tuning.TuningError(f"{found.photo} is not in the inputs folder "
                                     f"{self.place.inputs}; only photos there can be tuned")
        applied = tuning.apply_tuning(found.photo, changes, self.place.defaults,
                                      self.place.inputs)
        answer: dict[str, Any] = {"sidecar": applied.path.name, "written": list(applied.written),
                  "settings": applied.settings.as_dict()}
        if not applied.written:  # every value is what the photo runs with: nothing to wait for
            return answer
        with self._lock:
            self.pending = Pending(found.photo, answer["settings"], time.time())
        logger.info(f"viewer: wrote {applied.path} "
                    f"({', '.join(f'{k}={v}' for k, v in applied.written.items())})")
        if self.rerun is not None:
            self.rerun(found.photo)  # else the daemon's watcher sees the sidecar a second later
        return answer

    def _watch(self) -> None:
        """Swap in the pending Apply's result as soon as its PLY (and report) exist."""
        while not self._closing.wait(WATCH_SECONDS):
            with self._lock:
                pending = self.pending
            if pending is None or pending.result is not None or pending.error is not None:
                continue
            try:
                self._check(pending)
            except Exception as exc:
                logger.opt(exception=True).warning(f"viewer: watching for a result: {exc}")

    def _check(self, pending: Pending) -> None:
        found = results.latest_for(self.place.outputs, pending.photo, pending.settings)
        if found is not None:
            with self._lock:
                pending.result = found.name  # the page polls for it and swaps it in
            return
        for failure in results.list_failures(self.place.outputs):
            if (Path(failure.photo).name == pending.photo.name
                    and failure.modified >= pending.applied_at - 1.0):
                with self._lock:
                    pending.error = failure.text
                return

    # files ------------------------------------------------------------------------------

    def thumbnail(self, result: results.Result) -> bytes | None:
        """A JPEG of the photo, at most `THUMB_PX` wide, opened only inside the inputs folder."""
        photo = result.photo
        if not self.tunable(result):
            return None
        try:
            key = (str(photo), photo.stat().st_mtime)
            if key not in self._thumbs:
                if len(self._thumbs) >= MAX_THUMBS:
                    self._thumbs.pop(next(iter(self._thumbs)))  # the oldest
                with open_regular_file(photo, self.place.inputs) as f:
                    image = ImageOps.exif_transpose(Image.open(f))
                    image.thumbnail((THUMB_PX, THUMB_PX))
                    out = io.BytesIO()
                    image.convert("RGB").save(out, format="JPEG", quality=85)
                self._thumbs[key] = out.getvalue()
            return self._thumbs[key]
        except (OSError, InputError, ValueError) as exc:
            logger.debug(f"viewer: no thumbnail of {photo}: {exc}")
            return None


class _QuietServer(ThreadingHTTPServer):
    """A browser closing a kept-alive connection is normal, not a traceback on stderr
    (which a console-less viewer does not even have); anything else goes to the log."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return
        logger.opt(exception=True).warning(f"viewer: a request from {client_address} failed")


class _Handler(BaseHTTPRequestHandler):
    server_version = "sharp-watch-viewer"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_SECONDS

    @property
    def app(self) -> ViewerApp:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Only refusals and errors: the pages poll several times a second."""
        if len(args) >= 2 and str(args[1]) not in ("200", "303"):
            logger.debug("viewer: " + format % args)

    def _refused(self) -> bool:
        app = self.app
        app.last_request = time.monotonic()
        refused = refusal(self.headers, app.port, app.secret, loopback_origins(app.port), COOKIE)
        if refused is None:
            return False
        self._json(refused[0], {"error": refused[1]})
        return True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if "key" in query and self._key_login(url.path, query):
            return
        if self._refused():
            return
        if url.path.startswith("/static/"):
            self.static(url.path.removeprefix("/static/"))
            return
        route = _GET_ROUTES.get(url.path)
        if route is None:
            self._json(404, {"error": f"no such page: {url.path}"})
            return
        route(self, query)

    def do_POST(self) -> None:
        if self._refused():
            return
        url = urlsplit(self.path)
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
        except (ValueError, tuning.TuningError) as exc:
            self._json(400, {"error": str(exc)})
        except OSError as exc:
            self._json(500, {"error": f"cannot write: {exc.strerror or exc}"})

    def _key_login(self, path: str, query: dict[str, str]) -> bool:
        """`?key=<secret>`: set the cookie and send the browser on without the key."""
        app = self.app
        headers = {"Host": self.headers.get("Host"), "Origin": self.headers.get("Origin"),
                   "Authorization": f"Bearer {query.pop('key')}"}
        if refusal(headers, app.port, app.secret, loopback_origins(app.port)) is not None:
            return False
        rest = urlencode(query)
        self.send_response(303)
        self.send_header("Location", path + (f"?{rest}" if rest else ""))
        self.send_header("Set-Cookie", f"{COOKIE}={app.secret}; HttpOnly; SameSite=Strict; "
                                       "Path=/")
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        return True

    def _headers(self, code: int, length: int, kind: str, extra: dict[str, str]) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, code: int, data: bytes, kind: str,
              extra: dict[str, str] | None = None) -> None:
        self._headers(code, len(data), kind, extra or {})
        self.wfile.write(data)

    def _send_file(self, f: BinaryIO, extra: dict[str, str]) -> None:
        """The whole open file, from its start, without holding it in memory."""
        length = f.seek(0, 2)
        f.seek(0)
        self._headers(200, length, "application/octet-stream", extra)
        shutil.copyfileobj(f, self.wfile, COPY_CHUNK)

    def _json(self, code: int, body: Any) -> None:
        self._send(code, json.dumps(body, default=str).encode(), "application/json")

    # GET routes -------------------------------------------------------------------------

    def page(self, name: str) -> None:
        self._send(200, (STATIC / name).read_bytes(), STATIC_TYPES[".html"])

    def static(self, name: str) -> None:
        """A script or style sheet of ours or of the vendored libraries: nothing else, and
        nothing outside `static/`."""
        path = (STATIC / name).resolve()
        if (not path.is_relative_to(STATIC.resolve()) or path.suffix not in (".js", ".css")
                or not path.is_file()):
            self._json(404, {"error": "no such file"})
            return
        self._send(200, path.read_bytes(), STATIC_TYPES[path.suffix])

    def _result(self, query: dict[str, str]) -> results.Result | None:
        """The result `?ply=` names (the newest without one), or None after a 404 saying so."""
        found = self.app.result(query.get("ply"))
        if found is None:
            self._json(404, {"error": f"no result {query.get('ply') or 'yet'} in "
                                      f"{self.app.place.outputs}"})
        return found

    def api_gallery(self, query: dict[str, str]) -> None:
        self._json(200, self.app.gallery())

    def api_result(self, query: dict[str, str]) -> None:
        found = self._result(query)
        if found is None:
            return
        self._json(200, self.app.detail(found))

    def api_state(self, query: dict[str, str]) -> None:
        self._json(200, self.app.state())

    def photo(self, query: dict[str, str]) -> None:
        found = self.app.result(query.get("ply"))
        data = self.app.thumbnail(found) if found is not None else None
        if data is None:
            self._json(404, {"error": "no photo for this result"})
            return
        self._send(200, data, "image/jpeg")

    def splat(self, query: dict[str, str]) -> None:
        """The result's PLY for the page's renderer; with `budget`, a thinned copy."""
        found = self._result(query)
        if found is None:
            return
        budget = query.get("budget")
        if budget is not None and not (budget.isascii() and budget.isdigit() and int(budget) > 0):
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
                self._send_file(f, {"X-Gaussians": str(splat.count),
                                    "X-Gaussians-Total": str(splat.count)})
        except ConnectionError:  # the page went away (a newer result, closed) mid-transfer
            self.close_connection = True
        except (OSError, InputError, SplatError) as exc:
            self._json(404 if isinstance(exc, FileNotFoundError) else 422,
                       {"error": f"cannot show {found.ply.name}: {exc}"})

    def preview(self, query: dict[str, str]) -> None:
        found = self.app.result(query.get("ply"))
        path = found.preview if found is not None else None
        if path is None:
            self._json(404, {"error": "no depth preview for this result"})
            return
        self._send(200, path.read_bytes(), "image/png")


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


_GET_ROUTES: dict[str, Callable[[_Handler, dict[str, str]], None]] = {
    "/": lambda h, q: h.page("gallery.html"),
    "/view": lambda h, q: h.page("view.html"),
    "/api/gallery": _Handler.api_gallery,
    "/api/result": _Handler.api_result,
    "/api/state": _Handler.api_state,
    "/api/ping": lambda h, q: h._json(200, {"viewer": True}),
    "/files/photo": _Handler.photo,
    "/files/preview": _Handler.preview,
    "/files/splat": _Handler.splat,
}
_POST_ROUTES: dict[str, Callable[[ViewerApp, dict[str, Any]], dict[str, Any]]] = {
    "/api/shown": _shown,
    "/api/apply": _apply,
    "/api/open-folder": _open_folder,
}
