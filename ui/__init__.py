"""FirstLook radiologist desktop (PySide6). The only package that imports Qt.

Entry point: ``ui.main.run_desktop(config, service_factory)``, called by ``app.cli``; the service is
reached only through ``app.core.service_api.DesktopService``. Everything that touches disk or
SQLite runs off the GUI thread and reaches the views through queued Qt signals.

``ui.viewing`` is the viewer without Qt (state, frame composition, readers), tested headless;
the widgets here render it and write user input into it.
"""

from ui.qt_compat import guard_pyside_refcount_leak

# Before any widget exists: see ui/qt_compat.py (PySide6 6.12.0 releases None on void calls).
guard_pyside_refcount_leak()
