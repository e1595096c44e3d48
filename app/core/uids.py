"""DICOM UIDs: the grammar check (PS3.5 9.1, before a UID touches a path) and derived UIDs for the objects FirstLook creates."""

from __future__ import annotations

import re
import uuid as _uuid

# Components are digits without leading zeros (except "0" itself), joined by dots, <= 64 chars.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


# Fixed namespace of FirstLook's name-based UUIDs (a random UUID drawn once for this purpose).
_NAMESPACE = _uuid.UUID("6f0c1a52-3c1e-4d0e-9b43-2f2b8a7d9e15")


def derived_uid(root: str | None, *parts: object) -> str:
    """A UID that is a pure function of ``parts`` under ``root`` (PS3.5 B.2 / 9.1).

    ``root`` None gives the UUID-derived form ``2.25.<128-bit integer>``; otherwise
    ``<root>.<digits>`` cut to 64 characters. Deriving instead of drawing at random means
    rebuilding the objects of one stored result after a crash yields the very same UIDs, so
    a receiver sees a duplicate at worst, never a second, different object.
    """
    from pydicom.uid import generate_uid

    if root is None:  # a name-based (SHA-1) UUID of the parts, as PS3.5 B.2 allows
        return f"2.25.{_uuid.uuid5(_NAMESPACE, chr(31).join(repr(p) for p in parts)).int}"
    if not is_valid_uid(root):
        raise ValueError(f"UID root {root!r} is not a valid DICOM UID prefix")
    if len(root) > 54:
        raise ValueError(f"UID root {root!r} is longer than 54 characters: no room left for unique digits")
    return str(generate_uid(prefix=root + ".", entropy_srcs=[repr(p) for p in parts]))
