"""What makes the daemon a well-behaved background program: the `sharp-watch` command,
tray icon, single instance, control channel, logging and autostart. Thin on purpose: it
wraps `daemon.Daemon` and never reimplements it."""
