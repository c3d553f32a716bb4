"""Our PLY (SHARP's layout) checked, and thinned for browsers that draw without a GPU.

The vertex block is 14 little-endian float32 columns: xyz (metric, OpenCV camera axes:
x right, y down, z forward), SH DC of the sRGB colour, opacity logit, log scales and a
wxyz quaternion (`pipeline/ply.py`, which also checks and reads the layout); SHARP's
camera elements follow it. The browser renderer (Spark) reads the PLY itself, so the
viewer only checks the header, finds where to aim the camera, and for software WebGL
sends a thinned copy in the same layout (`pipeline.browser`: the share page's rules too).
"""

from __future__ import annotations

from typing import BinaryIO

from pipeline.browser import orbit_depth, thinned, vertical_fov
from pipeline.ply import SplatError, SplatFile, check_splat, vertex_block

__all__ = ["SplatError", "SplatFile", "check_splat", "median_depth", "thinned_ply",
           "vertical_fov"]


def median_depth(splat: SplatFile, f: BinaryIO) -> float:
    """Where the orbit centre goes (`pipeline.browser.orbit_depth`)."""
    return orbit_depth(vertex_block(splat, f)[:, 2])


def thinned_ply(splat: SplatFile, f: BinaryIO, budget: int, seed: int = 0) -> bytes:
    """A PLY of at most `budget` of the file's Gaussians (`pipeline.browser.thinned`);
    the camera elements after the vertex block are kept."""
    kept = thinned(vertex_block(splat, f), budget, seed)
    f.seek(splat.size)
    tail = f.read()
    header = splat.header.replace(f"element vertex {splat.count}\n".encode(),
                                  f"element vertex {len(kept)}\n".encode(), 1)
    return header + kept.astype("<f4").tobytes() + tail
