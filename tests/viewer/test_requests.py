"""Every request the viewer gets is answered, and a bad one with a 4xx: huge numbers and
deep nesting in JSON bodies, NUL bytes and endless names in paths, bad percent-encoding,
and a little fuzzing. (The old server closed the connection without a word for several.)"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.viewer_requests import raw_status
from viewer.server import ViewerApp


def _request(app: ViewerApp, method: str, target: bytes, body: bytes = b"",
             token: bool = True) -> bytes:
    head = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: 127.0.0.1:{app.port}".encode(),
            f"Content-Length: {len(body)}".encode(), b"Content-Type: application/json"]
    if token:
        head.append(f"Authorization: Bearer {app.token}".encode())  # type: ignore[attr-defined]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _apply(settings_value: str) -> bytes:
    return ('{"ply": "a_1.ply", "settings": ' + settings_value + "}").encode()


@pytest.mark.parametrize(("method", "target", "body"), [
    ("POST", b"/api/apply", _apply('{"depth_scale": ' + "9" * 400 + "}")),
    ("POST", b"/api/apply", _apply('{"focal_mm": -' + "9" * 400 + "}")),
    ("POST", b"/api/apply", _apply('{"depth_scale": ' + "[" * 3000 + "]" * 3000 + "}")),
    ("POST", b"/api/apply", b"[" * 8000 + b"]" * 8000),
    ("POST", b"/api/apply", b'{"ply": "a_1.ply", "settings": {"depth_scale": 1e999}}'),
    ("POST", b"/api/apply", b'{"ply": "a\\u0000.ply", "settings": {}}'),
    ("POST", b"/api/apply", b"\xff\xfe not utf-8"),
    ("POST", b"/api/shown", b'{"ply": "a_1.ply", "count": ' + b"9" * 5000 + b"}"),
    ("POST", b"/api/session", b"[" * 8000 + b"]" * 8000),
    ("GET", b"/static/a\x00b.js", b""),
    ("GET", b"/static/" + b"a" * 5000 + b".js", b""),
    ("GET", b"/static/%00.js", b""),
    ("GET", b"/static/../server.py", b""),
    ("GET", b"/files/splat?ply=%ZZ%FF%00", b""),
    ("GET", b"/files/photo?ply=a%00.ply", b""),
    ("GET", b"/files/preview?ply=" + b"a" * 5000 + b".ply", b""),
    ("GET", b"/api/result?ply=%C3%28.ply", b""),
    ("GET", b"/api/result?ply=..%2F..%2Fetc%2Fpasswd", b""),
    ("GET", b"/files/splat?ply=a_1.ply&budget=" + b"9" * 5000, b""),
    ("GET", b"/api/result?ply=%%%=%", b""),
])
def test_bad_requests_get_a_4xx(viewer_app: ViewerApp, method: str, target: bytes,
                                body: bytes) -> None:
    for token in (True, False):
        status = raw_status(viewer_app.port, _request(viewer_app, method, target, body, token))
        assert status is not None and 400 <= status < 500, (target[:60], body[:60], status)
    assert raw_status(viewer_app.port, _request(viewer_app, "GET", b"/api/state")) == 200


_TARGETS = st.one_of(
    st.text(max_size=40).map(lambda t: "/" + t),
    st.sampled_from(["/api/result?ply=", "/files/photo?ply=", "/files/preview?ply=",
                     "/files/splat?budget=3&ply=", "/api/state?", "/static/",
                     "/files/takeaway?ply=a_1.ply&file="])
    .flatmap(lambda base: st.text(max_size=40).map(lambda t: base + t)))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=10)
_BODIES = st.one_of(
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"ply": st.sampled_from(["a_1.ply", "nope.ply", ""]) | st.text(),
                           "settings": st.dictionaries(
                               st.sampled_from(["depth_scale", "depth_offset", "focal_mm",
                                                "back_surface_factor", "depth_source", "x"]),
                               _JSON, max_size=3),
                           "count": _JSON}).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64))


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST"]), target=_TARGETS,
       post=st.sampled_from(["/api/apply", "/api/shown", "/api/session", "/api/open-folder",
                             "/api/share", "/api/clip?ply=a_1.ply&move=orbit"]),
       body=_BODIES)
def test_fuzzed_requests_are_always_answered_and_never_with_a_5xx(
        viewer_app: ViewerApp, method: str, target: str, post: str, body: bytes) -> None:
    if method == "POST":
        encoded, sent = post.encode(), body
    else:  # percent-encoded as a browser would, any stray % left as it is
        encoded = quote(target.encode("utf-8", "surrogatepass"), safe="/?&=%").encode()
        sent = b""
    status = raw_status(viewer_app.port, _request(viewer_app, method, encoded, sent))
    assert status is not None and status < 500, (method, encoded, sent[:80], status)
