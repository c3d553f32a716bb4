"""Fuzzed sidecars through the daemon's reader: each gives settings or a `SidecarError`
naming the file, and never a depth map outside the inputs folder. The documents come from
hypothesis with a fixed seed (derandomized), so every run checks the same 300."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def toml_value(value: object) -> str:
    """`value` as a TOML inline value (tomllib has no writer); nested dicts become inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else {math.inf: "inf", -math.inf: "-inf"}.get(value,
                                                                                      repr(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value))


_SIDECAR_KEYS = ("depth_scale", "depth_offset", "back_surface_factor", "depth_source",
                 "external_depth", "depth_format", "focal_mm", "save_internal_depth")
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_scalars = (st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
            | st.floats(allow_nan=True, allow_infinity=True) | _text
            | st.sampled_from(["depth-pro", "npy", "internal", "metric", "auto", "relative",
                               "depth.npy", "../outside.npy", "/etc/passwd", "sub/d.npy", ""]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_text, inner, max_size=3), max_leaves=8)
_keys = st.sampled_from(_SIDECAR_KEYS) | _text | st.sampled_from(["depth_scael", "focal", "Depth"])
sidecar_documents = st.one_of(
    st.dictionaries(_keys, _values, max_size=6).map(
        lambda doc: "\n".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}"
                              for k, v in doc.items())),
    st.integers(10, 3000).map(lambda depth: "depth_scale = " + "[" * depth + "]" * depth),
    st.integers(10, 3000).map(lambda depth: "x = " + "{a = " * depth + "1" + "}" * depth),
    st.binary(max_size=200).map(lambda raw: raw.decode("latin1")),
    st.sampled_from(["\ufeffdepth_scale = 2.0", "depth_scale = 2.0\ndepth_scale = 3.0",
                     "[defaults]\ndepth_scale = 2.0", "depth_scale = 1e400", "x" * 70_000,
                     "depth_scale = 0x10", "depth_scale = 2024-01-01"]),
)


@pytest.mark.timeout(120)
@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=sidecar_documents)
def test_fuzzed_sidecars_give_settings_or_a_clear_error(tmp_path: Path, document: str) -> None:
    from daemon.sidecar import SidecarError, read_sidecar
    from pipeline import DepthSettings

    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    photo = inputs / "photo.jpg"
    photo.write_bytes(b"")
    (inputs / "depth.npy").write_bytes(b"")
    sidecar = inputs / "photo.toml"
    sidecar.write_text(document, encoding="utf-8", errors="surrogatepass")
    try:
        result, used = read_sidecar(photo, DepthSettings(), inputs)
    except SidecarError as exc:
        assert exc.path == sidecar and str(sidecar) in str(exc) and exc.reason.strip()
        return
    assert used
    assert isinstance(result, DepthSettings)
    if result.external_depth is not None:
        assert Path(result.external_depth).resolve().is_relative_to(inputs.resolve())
