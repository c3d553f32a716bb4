"""The local viewer: a Gaussian splat in the browser, live depth tuning, a gallery.

Everything here reads the outputs folder and writes sidecars; nothing here imports the
daemon's worker or the models, and the `view` / `gallery` commands load it on demand, so
importing the daemon, `predict` or `service.cli` never pulls it (or tomlkit, the optional
`viewer` extra) in. The splat is drawn in the browser by Spark (`static/vendor`).

`available()` lives here, in the package itself, so the service can ask whether the
extra is installed before importing any viewer module (this one imports nothing heavy).
"""

from __future__ import annotations

import importlib.util

from pipeline.errors import install_hint

MISSING = "the viewer is not installed: " + install_hint("viewer")


def available() -> bool:
    """Whether the optional `viewer` extra (tomlkit, for sidecars kept as written) is
    installed."""
    return importlib.util.find_spec("tomlkit") is not None
