"""Where results are sent: the ``[[destinations]]`` tables of the configuration.

Each destination is a DICOM Storage SCP (a PACS, a router) that FirstLook calls with its own
AE title. ``objects`` picks which of the objects built per result go there (``sr``, ``seg``,
``sc``) and ``when`` whether every result goes (``all``) or only urgent and critical ones
(``urgent``). Checked here, one sentence naming the entry, so a bad table stops start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

OBJECT_KINDS = ("sr", "seg", "sc")
WHEN_VALUES = ("all", "urgent")
URGENT_PRIORITIES = ("critical", "urgent")
_FIELDS = ("name", "ae_title", "host", "port", "tls", "objects", "when")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-:]{0,252})$")
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class DestinationError(ValueError):
    """One destination entry that cannot work; the message is one sentence naming it."""


@dataclass(frozen=True)
class Destination:
    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False
    objects: tuple[str, ...] = OBJECT_KINDS
    when: str = "all"

    def takes(self, priority: str) -> bool:
        """Whether results of this priority go here (``objects`` then picks which of their objects)."""
        return self.when == "all" or priority in URGENT_PRIORITIES

    def to_toml(self) -> dict[str, Any]:
        return {"name": self.name, "ae_title": self.ae_title, "host": self.host, "port": self.port,
                "tls": self.tls, "objects": list(self.objects), "when": self.when}


def parse_destination(raw: object, position: int) -> Destination:
    """One ``[[destinations]]`` table (or an existing ``Destination``) checked."""
    if isinstance(raw, Destination):
        raw = raw.to_toml()
    if not isinstance(raw, Mapping):
        raise DestinationError(f"destinations entry {position} must be a table with name, ae_title, host and port.")
    label = f"destination {raw.get('name')!r}" if isinstance(raw.get("name"), str) and raw.get("name") \
        else f"destinations entry {position}"
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise DestinationError(f"{label} has unknown key(s) {', '.join(unknown)}; known keys are {', '.join(_FIELDS)}.")
    missing = [k for k in ("name", "ae_title", "host", "port") if k not in raw]
    if missing:
        raise DestinationError(f"{label} lacks {', '.join(missing)}.")
    name = raw["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise DestinationError(f"{label} needs a name of 1 to 64 characters.")
    aet = raw["ae_title"]
    if (not isinstance(aet, str) or not aet.strip() or len(aet) > 16 or "\\" in aet
            or any(ord(c) < 32 or ord(c) > 126 for c in aet)):
        raise DestinationError(f"{label} has ae_title {aet!r}: it must be 1 to 16 printable ASCII characters "
                               "without a backslash.")
    host = raw["host"]
    if not isinstance(host, str) or not _HOST.match(host):
        raise DestinationError(f"{label} has host {host!r}: give an IP address or a host name.")
    port = raw["port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise DestinationError(f"{label} has port {port!r}: it must be a whole number from 1 to 65535.")
    tls = raw.get("tls", False)
    if not isinstance(tls, bool):
        raise DestinationError(f"{label} has tls {tls!r}: it must be true or false.")
    objects = raw.get("objects", list(OBJECT_KINDS))
    if isinstance(objects, str):
        objects = [objects]
    if (not isinstance(objects, (list, tuple)) or not objects
            or any(o not in OBJECT_KINDS for o in objects)):
        raise DestinationError(f"{label} has objects {objects!r}: list one or more of \"sr\", \"seg\", \"sc\".")
    when = raw.get("when", "all")
    if when not in WHEN_VALUES:
        raise DestinationError(f"{label} has when {when!r}: it must be \"all\" or \"urgent\".")
    return Destination(name=name, ae_title=aet, host=host, port=port, tls=tls,
                       objects=tuple(k for k in OBJECT_KINDS if k in objects), when=when)


def parse_destinations(raw: Iterable[object]) -> list[Destination]:
    """Every entry checked; names must be unique (the outbox keys its rows by name)."""
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise DestinationError("destinations must be a list of tables ([[destinations]] in the TOML file).")
    out: list[Destination] = []
    for position, entry in enumerate(raw, start=1):
        destination = parse_destination(entry, position)
        if any(d.name == destination.name for d in out):
            raise DestinationError(f"destination {destination.name!r} is listed twice; names must be unique.")
        out.append(destination)
    return out


def check_uid_root(value: object) -> str | None:
    """``uid_root``: a UID prefix short enough to leave room for the generated suffix."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _UID_ROOT.match(value.rstrip(".")) or len(value.rstrip(".")) > 40:
        raise DestinationError(f"uid_root {value!r} must be a DICOM UID prefix (digits and dots, no leading zeros) "
                               "of at most 40 characters, such as 1.2.826.0.1.3680043.10.1234.")
    return value.rstrip(".")
