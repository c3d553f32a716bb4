"""The local viewer: a Gaussian splat in the browser, live depth tuning, a gallery.

Everything here reads the outputs folder and writes sidecars; nothing here imports the
daemon's worker or the models, and the `view` / `gallery` commands load it on demand, so
importing the daemon, `predict` or `service.cli` never pulls it (or tomlkit, the optional
`viewer` extra) in. The splat is drawn in the browser by Spark (`static/vendor`).
"""
