"""DICOM UID grammar (PS3.5 9.1): checked before a UID is ever used as a path component."""

from __future__ import annotations

import re

# Components are digits without leading zeros (except "0" itself), joined by dots, <= 64 chars.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.fullmatch(value) is not None
