"""Reading our PLY back (`pipeline.ply.read_ply`): exactly the columns it stores and the
camera SHARP wrote after them; every other file refused, named, with what is missing.
And what the exports make from a PLY is what they make from its Gaussians, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import write_ply
from pipeline.exports import EXPORTERS, ExportOptions
from pipeline.ply import SplatError, read_ply, vertex_rows
from tests.support.splat_reader import F_PX, SIZE, scene


def test_read_ply_gives_back_the_stored_columns_and_the_camera_exactly(tmp_path: Path) -> None:
    g = scene(500)
    got = read_ply(write_ply(tmp_path / "a.ply", g, F_PX, SIZE))
    assert got.rows.dtype == np.float32 and got.rows.shape == (500, 14)
    assert np.array_equal(got.rows, vertex_rows(g).numpy())
    assert got.f_px == np.float32(F_PX) and got.image_size == SIZE


@pytest.mark.parametrize("fmt", [f for f in EXPORTERS if f not in ("ply", "html")])
@pytest.mark.parametrize("version", [2, 3])
def test_exports_from_the_ply_are_the_exports_from_its_gaussians(
        tmp_path: Path, fmt: str, version: int) -> None:
    """So an old result converted today gives the files its photo's run would have."""
    g = scene(700)
    ply = read_ply(write_ply(tmp_path / "a.ply", g, F_PX, SIZE))
    write = EXPORTERS[fmt].write
    options = ExportOptions(spz_version=version)
    from_gaussians = write(tmp_path / f"g.{fmt}", g, F_PX, SIZE, [], options)
    from_ply = write(tmp_path / f"p.{fmt}", ply.rows, ply.f_px, ply.image_size, [], options)
    assert from_ply.read_bytes() == from_gaussians.read_bytes()


def _ply_without(tmp_path: Path, *elements: str) -> Path:
    """Our PLY with `elements` left out of its header and its trailer."""
    data = write_ply(tmp_path / "full.ply", scene(20), F_PX, SIZE).read_bytes()
    end = data.index(b"end_header\n")
    header = data[:end].decode().split("\n")
    sizes = {"extrinsic": 64, "intrinsic": 36, "image_size": 8, "frame": 8, "disparity": 8,
             "color_space": 1, "version": 3}
    body, trailer = data[end + 11:end + 11 + 20 * 56], data[end + 11 + 20 * 56:]
    kept, offset, lines, skip = b"", 0, [], False
    for line in header:
        words = line.split()
        if words[:1] == ["element"]:
            skip = words[1] in elements
            if words[1] in sizes:
                if not skip:
                    kept += trailer[offset:offset + sizes[words[1]]]
                offset += sizes[words[1]]
        if not skip:
            lines.append(line)
    path = tmp_path / "cut.ply"
    path.write_bytes(("\n".join(lines) + "\nend_header\n").encode() + body + kept)
    return path


def test_a_ply_with_only_the_camera_it_needs_is_read(tmp_path: Path) -> None:
    """The elements are found by name, whatever else is there."""
    path = _ply_without(tmp_path, "extrinsic", "frame", "disparity")
    got = read_ply(path)
    assert got.f_px == np.float32(F_PX) and got.image_size == SIZE
    assert np.array_equal(got.rows, read_ply(tmp_path / "full.ply").rows)


@pytest.mark.parametrize(("missing", "words"), [
    (("intrinsic",), "no intrinsic (9 float) element"),
    (("image_size",), "no image_size (2 uint) element"),
    (("intrinsic", "image_size"), "no intrinsic (9 float) or image_size (2 uint) element"),
])
def test_a_ply_without_sharps_camera_is_refused_naming_what_is_missing(
        tmp_path: Path, missing: tuple[str, ...], words: str) -> None:
    path = _ply_without(tmp_path, *missing)
    with pytest.raises(SplatError) as caught:
        read_ply(path)
    assert str(caught.value).startswith(f"{path}: {words} after the Gaussians")
    assert str(caught.value).endswith("which places the photo's own viewpoint")


def test_a_ply_whose_vertices_do_not_come_first_is_refused(tmp_path: Path) -> None:
    """(Other layouts, truncated files and files that are no PLY: `test_viewer_units.py`,
    on the same check.)"""
    path = tmp_path / "odd.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement camera 1\nproperty float f\n"
                     b"element vertex 1\nproperty float x\nend_header\n")
    with pytest.raises(SplatError) as caught:
        read_ply(path)
    assert str(caught.value) == (f"{path}: element 'camera' comes before the vertices; "
                                 "SHARP's PLYs start with them")


def test_a_camera_cut_short_or_unusable_is_named(tmp_path: Path) -> None:
    full = write_ply(tmp_path / "a.ply", scene(20), F_PX, SIZE)
    data = full.read_bytes()
    cut = tmp_path / "cut.ply"
    cut.write_bytes(data[:-60])  # into the intrinsic and image_size elements
    with pytest.raises(SplatError, match="element is cut short; it is truncated"):
        read_ply(cut)
    zero = write_ply(tmp_path / "zero.ply", scene(20), 0.0, SIZE)
    with pytest.raises(SplatError, match=r"camera is not usable \(focal length 0.0 px"):
        read_ply(zero)
