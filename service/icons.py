"""Tray icons drawn at runtime with Pillow: one colour and one glyph per state.

Colour tells the state at a glance, the glyph keeps it readable for colour-blind users:
idle = green disc with a dot, working = blue disc with a play triangle, paused = amber
disc with two bars, error = red disc with an exclamation mark, busy loading = grey disc
with three dots.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "idle": (46, 160, 67),
    "working": (31, 111, 235),
    "paused": (230, 160, 0),
    "error": (207, 34, 46),
    "loading": (110, 118, 129),
}
WHITE = (255, 255, 255, 255)


def icon_state(state: str, downloading: bool = False, problems: bool = False) -> str:
    """Map a daemon `Status.state` onto one of the five icons; a daemon that reports
    problems (a failing or stalled thread) shows the error icon whatever its state."""
    if problems:
        return "error"
    if downloading or state in ("starting", "loading", "stopped"):
        return "loading"
    return state if state in COLOURS else "error"


def draw_icon(state: str, size: int = 64) -> Image.Image:
    """The icon for an icon state (see `icon_state`), transparent outside the disc."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((1, 1, size - 2, size - 2), fill=(*COLOURS[state], 255))
    u = size / 16
    if state == "idle":
        draw.ellipse((6 * u, 6 * u, 10 * u, 10 * u), fill=WHITE)
    elif state == "working":
        draw.polygon([(6 * u, 4 * u), (6 * u, 12 * u), (12.5 * u, 8 * u)], fill=WHITE)
    elif state == "paused":
        draw.rectangle((5 * u, 4.5 * u, 7 * u, 11.5 * u), fill=WHITE)
        draw.rectangle((9 * u, 4.5 * u, 11 * u, 11.5 * u), fill=WHITE)
    elif state == "error":
        draw.rectangle((7 * u, 3.5 * u, 9 * u, 9.5 * u), fill=WHITE)
        draw.rectangle((7 * u, 10.5 * u, 9 * u, 12.5 * u), fill=WHITE)
    else:
        for x in (4.5, 8, 11.5):
            draw.ellipse(((x - 1.2) * u, 6.8 * u, (x + 1.2) * u, 9.2 * u), fill=WHITE)
    return image
