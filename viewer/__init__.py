"""The local viewer: a Gaussian splat in the browser, live depth tuning, a gallery.

Everything here reads the outputs folder and writes sidecars; nothing here imports the
daemon's worker or the models. viser (the optional `viewer` extra) is imported only by
`viewer.scene`, which the `view` / `gallery` commands load on demand, so importing the
daemon, `predict` or `service.cli` never pulls it in.
"""
