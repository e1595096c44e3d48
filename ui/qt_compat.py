"""Guard against a PySide6 build that drops references to ``None`` and ``True``.

PySide6-Essentials 6.12.0 (as installed here, CPython 3.11) releases one reference to
``None`` on every call of a void C++ method (``update()``, ``processEvents()``...) and one
to ``True`` on every ``Signal.emit()``. CPython 3.11 frees them when the count reaches zero,
so a running app aborts with "deallocating None" after some thousands of calls. 6.11.3
does not do this. When (and only when) the leak is measured, we give the three singletons
a reference count no session can exhaust, which is what CPython 3.12 does for them anyway
(immortal objects). Upgrading/downgrading PySide6 is the real fix; this keeps the desktop
alive meanwhile.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_HEADROOM = 1 << 40
_applied = {"done": False}  # process-wide by nature: the singletons are process-wide


def _leaks_none() -> bool:
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("probe")
    lost = before - sys.getrefcount(None)
    probe.deleteLater()
    return lost >= 32


def guard_pyside_refcount_leak() -> bool:
    """Returns True when the workaround is active (leak measured on this interpreter)."""
    if _applied["done"]:
        return True
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False  # immortal singletons: the leak is harmless there
    if not _leaks_none():
        return False
    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += _HEADROOM
    _applied["done"] = True
    import PySide6

    log.warning("PySide6 %s drops references to None/True on every call; applied the refcount guard "
                "(pin a PySide6 without this bug, e.g. 6.11.3)", PySide6.__version__)
    return True
