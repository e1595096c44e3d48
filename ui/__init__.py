"""FirstLook radiologist desktop (PySide6). The only package that imports Qt.

Entry point: ``ui.main.run_desktop(config, service_factory)``, called by ``app.cli``. Everything that touches disk or
SQLite runs off the GUI thread and reaches the views through queued Qt signals.
"""

from ui.qt_compat import guard_pyside_refcount_leak

# Before any widget exists: see ui/qt_compat.py (PySide6 6.12.0 releases None on void calls).
guard_pyside_refcount_leak()
