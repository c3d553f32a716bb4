"""`python -m service ...` is `sharp-watch ...` (what autostart launches through pythonw)."""

from .cli import main

raise SystemExit(main())
