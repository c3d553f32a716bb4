"""What makes the daemon a well-behaved background program: the `sharp-watch` command,
tray icon, logging, autostart and starting the viewer. Thin on purpose: it wraps
`daemon.Daemon` (and its single-instance lock and control channel) and never
reimplements it. The top layer: it may import every other package, none imports it."""
