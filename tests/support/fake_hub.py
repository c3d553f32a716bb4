"""A Hugging Face Hub stand-in on 127.0.0.1, for first-run downloads without the internet.

`serve_repo(repo_id, folder)` answers the few endpoints `huggingface_hub.snapshot_download`
uses (revision info, file tree, HEAD and GET of each file) with the files of `folder`;
point `HF_ENDPOINT` at `base_url(server)`. `serve_file(data)` serves one plain file (a
checkpoint for `pipeline.weights.fetch_checkpoint`). Both run until `server.shutdown()`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Reply = tuple[bytes, str, dict[str, str]]

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def base_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


class Server(ThreadingHTTPServer):
    """Answers from `routes(path) -> (body, content type, headers) | None`; keeps a request
    log in `requests`."""

    daemon_threads = True

    def __init__(self, routes: Callable[[str], Reply | None]) -> None:
        super().__init__(("127.0.0.1", 0), _Replies)
        self.routes = routes
        self.requests: list[str] = []
        threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True).start()


class _Replies(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        found = self.server.routes(self.path.split("?")[0])
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, kind, headers = found
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_repo(repo_id: str, folder: Path) -> Server:
    files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}

    def routes(path: str) -> Reply | None:
        if path.startswith(f"/api/models/{repo_id}/tree/"):
            tree = [{"type": "file", "path": name, "size": len(data),
                     "oid": hashlib.sha1(data).hexdigest()} for name, data in files.items()]
            return json.dumps(tree).encode(), "application/json", {}
        if path.startswith(f"/api/models/{repo_id}/revision/"):
            info = {"id": repo_id, "sha": COMMIT,
                    "siblings": [{"rfilename": name} for name in files]}
            return json.dumps(info).encode(), "application/json", {}
        prefix = f"/{repo_id}/resolve/"
        name = path[len(prefix):].partition("/")[2] if path.startswith(prefix) else None
        if name in files:
            data = files[name]
            etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            return data, "application/octet-stream", {"X-Repo-Commit": COMMIT, "ETag": etag}
        return None

    return Server(routes)


def serve_file(name: str, data: bytes) -> Server:
    return Server(lambda path: (data, "application/octet-stream", {})
                  if path == f"/{name}" else None)
