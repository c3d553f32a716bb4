"""The 3D view: one viser server on 127.0.0.1 showing one splat at a time.

This is the only module that imports viser. The server shows the scene and nothing else:
no viser GUI widget is created, so its websocket accepts no command that changes
anything (viser's own server has no Host/Origin/secret checks; see the README's "What is
protected"). Swapping in a new result replaces the scene node under the same name, and
viser moves a connected client's camera only on "Reset view", so the user's view is kept.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path

import numpy as np
import viser

from .splat import Splat, read_splat, thinned, vertical_fov

NODE = "/splat"
BACKGROUND = (24, 26, 31)
"""The empty scene's colour (a fixed background image), so a blank view is recognisable."""


class SplatScene:
    """Owns the viser server; `show()` swaps the splat, keeping every client's camera."""

    def __init__(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner names its own URL
            self.server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
        self.server.scene.set_up_direction("-y")  # OpenCV camera axes: y points down
        self.server.scene.set_background_image(np.full((2, 2, 3), BACKGROUND, np.uint8),
                                               format="png")
        self.server.gui.configure_theme(show_logo=False, show_share_button=False,
                                        dark_mode=True)
        # The page beside the view holds the controls: keep viser's panel out of the way.
        self.server.gui.main_panel.float(x=-8, y=8, width=220)
        self.server.gui.main_panel.minimize()
        self._lock = threading.Lock()
        self.shown: Path | None = None
        self.version = 0
        self.shown_at = 0.0

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    def show(self, ply: Path, f_px: float | None, image_height: int | None,
             budget: int | None = None) -> Splat:
        """Load `ply` and put it in the scene, starting from SHARP's source camera.

        The initial camera sits at the origin looking down +z with y down, with the
        photo's vertical field of view; the orbit centre is the scene's median depth.
        `budget` caps the Gaussians sent (`splat.thinned`, for software rendering).
        """
        splat = read_splat(ply)
        if budget is not None:
            splat = thinned(splat, budget)
        with self._lock:
            camera = self.server.initial_camera
            camera.up = (0.0, -1.0, 0.0)
            camera.look_at = (0.0, 0.0, splat.median_depth())
            camera.position = (0.0, 0.0, 0.0)
            if f_px and image_height:
                camera.fov = vertical_fov(f_px, image_height)
            camera.near = 0.01
            self.server.scene.add_gaussian_splats(NODE, splat.centers, splat.covariances,
                                                  splat.rgbs, splat.opacities)
            self.shown = ply
            self.version += 1
            self.shown_at = time.time()
        return splat

    def close(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()
