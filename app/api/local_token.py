"""The local desktop's credential: a token file the service rewrites at every start, readable by
the service's user and (mode 0640) by the group ``api_token_group`` (install.sh creates
``firstlook-desktop``, puts the file in ``/run/firstlook``; IT adds the radiologists' accounts),
so a desktop on this machine attaches without anyone typing a secret. It authenticates as the
user ``local``. Without a group it is private (0600), like the rest of the data dir."""

from __future__ import annotations

import grp
import logging
import os
from pathlib import Path

from app.core.users import LOCAL_USER, UserDirectory

log = logging.getLogger(__name__)


def write_local_token(users: UserDirectory, path: Path, group: str = "") -> str:
    """Issue a fresh token for ``local`` and write it atomically to ``path``; returns it.

    With ``group`` the file is 0640 and belongs to that group (a folder created here is 0750 and
    that group's too); without, only the service user may read it (0600, folder 0700), as for
    everything else in the data dir. An existing folder (systemd's RuntimeDirectory) is left as is.
    """
    token = users.add(LOCAL_USER)
    gid = -1
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.warning("api_token_group %s does not exist: the local API token %s stays private to the service user",
                        group, path)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o750 if gid >= 0 else 0o700)  # explicit, whatever the umask
        if gid >= 0:
            _give(path.parent, gid)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if gid >= 0 and _give(tmp, gid):
        os.chmod(tmp, 0o640)
    else:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token


def _give(path: Path, gid: int) -> bool:
    try:
        os.chown(path, -1, gid)
        return True
    except PermissionError as exc:  # the service user is not a member of the group
        log.warning("cannot give %s to group %d (%s): it stays private to the service user", path, gid, exc)
        return False


def read_local_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
