"""The local desktop's credential: a token file the service rewrites at every start, readable by
the service's user and (mode 0640) by the group ``api_token_group`` (install.sh creates
``firstlook-desktop``; IT adds the radiologists' accounts), so a desktop on this machine
attaches without anyone typing a secret. It authenticates as the user ``local``."""

from __future__ import annotations

import grp
import logging
import os
from pathlib import Path

from app.core.users import LOCAL_USER, UserDirectory

log = logging.getLogger(__name__)


def write_local_token(users: UserDirectory, path: Path, group: str = "") -> str:
    """Issue a fresh token for ``local`` and write it atomically to ``path``; returns it."""
    token = users.add(LOCAL_USER)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if group:
        try:
            os.chown(tmp, -1, grp.getgrnam(group).gr_gid)
        except (KeyError, PermissionError) as exc:
            log.warning("the local API token %s stays readable by the service user only: cannot give it to group "
                        "%s (%s)", path, group, exc)
    os.chmod(tmp, 0o640)  # explicit, whatever the umask
    os.replace(tmp, path)
    return token


def read_local_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
