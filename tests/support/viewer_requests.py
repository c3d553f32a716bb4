"""Requests to a started viewer (`viewer.server.ViewerApp`) as a browser or another local
program makes them, and results written as the daemon writes them, without a model.

- `gaussians(n, seed)`, `write_result(outputs, photo, name, settings, seconds, device)`: a
  few random Gaussians, and a result (PLY, report naming the photo, preview PNG).
- `call(app, method, path, body=None, headers=None) -> (status, body, response)`: one
  request with the app's session token (a header given as "" is left out); `body` is sent
  as JSON, or as it is when bytes; a JSON answer is decoded.
- `raw_status(port, data)`, `send_raw(sock, data)`: raw bytes to a loopback server (on a
  new connection, or on `sock`); the answer's status, or None when it closed without one.
- `launch_key(page)`, `viewer_session(app)`: the one-time key in a launch page, and a
  session token got as the owner's browser gets one (the key traded at
  `POST /api/session`).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pipeline import DepthSettings
from tests.conftest import write_photo


def launch_key(page: Path) -> str:
    """The one-time key in a viewer's launch page (in the address its script opens)."""
    text = page.read_text(encoding="utf-8")
    found = re.search(r"location\.replace\(\"[^\"#]*#([^\"]*)\"\)", text)
    assert found is not None, text
    return parse_qs(found.group(1))["key"][0]


def viewer_session(app: Any) -> str:
    """A session token for the started viewer `app`, as the owner's browser gets one."""
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        connection.request("POST", "/api/session",
                           body=json.dumps({"key": launch_key(app.launch())}),
                           headers={"Host": f"127.0.0.1:{app.port}",
                                    "Content-Type": "application/json"})
        answer = connection.getresponse()
        assert answer.status == 200, answer.read()
        return str(json.loads(answer.read())["token"])
    finally:
        connection.close()


def gaussians(n: int = 6, seed: int = 0) -> Any:
    """`n` random Gaussians (a `pipeline.Gaussians`) in front of the camera."""
    import torch

    from pipeline import Gaussians

    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        mean_vectors=torch.rand(1, n, 3, generator=g) + torch.tensor([0.0, 0.0, 1.0]),
        singular_values=torch.rand(1, n, 3, generator=g) * 0.1 + 0.01,
        quaternions=torch.nn.functional.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        colors=torch.rand(1, n, 3, generator=g) * 0.9 + 0.05,
        opacities=torch.rand(1, n, generator=g) * 0.9 + 0.05)


def write_result(outputs: Path, photo: Path, name: str, settings: DepthSettings | None = None,
                 seconds: float = 4.0, device: str = "cpu") -> Path:
    """A result as the daemon writes it: PLY plus report (and a preview PNG)."""
    from pipeline import write_ply

    outputs.mkdir(parents=True, exist_ok=True)
    ply = write_ply(outputs / f"{name}.ply", gaussians(), 50.0, (64, 48))
    preview = outputs / f"{name}_depth.png"
    write_photo(preview)
    report = {"photo": str(photo), "photo_sha256": "0" * 64, "job": "1" * 64,
              "created": "2026-12-01T10:00:00+00:00",
              "settings": (settings or DepthSettings()).as_dict(), "image_size": [64, 48],
              "focal": {"f_px": 50.0, "origin": "exif"},
              "depth": {"source": "depth-pro", "format": "metric", "model": "m",
                        "range_m": [1.0, 2.0], "from_cache": False},
              "models": {"device": device}, "gaussians": 6,
              "timings_s": {"depth": seconds / 2, "sharp": seconds / 2}, "warnings": ["w1"],
              "files": [ply.name, preview.name, f"{name}.json"]}
    (outputs / f"{name}.json").write_text(json.dumps(report), encoding="utf-8")
    return ply


def call(app: Any, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """One request to the viewer `app` with its session token; see the module docstring."""
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    sent = {"Host": f"127.0.0.1:{app.port}", "Authorization": f"Bearer {app.token}",
            **(headers or {})}
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    try:
        connection.request(method, path, body=data,
                           headers={k: v for k, v in sent.items() if v})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    kind = response.getheader("Content-Type") or ""
    return response.status, json.loads(raw) if "json" in kind else raw, response


def raw_status(port: int, data: bytes, timeout: float = 10.0) -> int | None:
    """Send `data` on a new connection to 127.0.0.1:`port`; see the module docstring."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        return send_raw(sock, data)


def send_raw(sock: socket.socket, data: bytes) -> int | None:
    """Send `data` on `sock` and read the answer's status line; see the module docstring."""
    try:
        sock.sendall(data)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except ConnectionError:
        return None
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.") else None
