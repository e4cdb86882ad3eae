"""Qt under the offscreen platform (no display needed) for the dashboard's view tests."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
