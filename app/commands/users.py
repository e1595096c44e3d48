"""``firstlook users add|revoke|list``: IT manages who may use the HTTP API (docs/api.md).

``add`` prints the new token as its last line (shown once; only its hash is stored). Each
change is audited with the OS user (and ``SUDO_USER`` under ``firstlookctl``).
"""

from __future__ import annotations

import datetime
import os
import sys

from app.core.audit import API_USER_ADDED, API_USER_REVOKED, AuditLog, os_user
from app.core.config import Config
from app.core.store import StudyStore
from app.core.users import UserDirectory, UserError


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def run_users(config: Config, action: str, name: str | None) -> int:
    store = StudyStore(config.data_dir)
    try:
        users = UserDirectory(store)
        audit = AuditLog(config.data_dir)
        who = {"by": os_user(), "sudo_user": os.environ.get("SUDO_USER")}
        try:
            if action == "add":
                assert name is not None
                token = users.add(name)
                audit.append(API_USER_ADDED, user=name, **who)
                sys.stdout.write(f"user {name} added; give them this token (it is not shown again):\n{token}\n")
            elif action == "revoke":
                assert name is not None
                users.revoke(name)
                audit.append(API_USER_REVOKED, user=name, **who)
                sys.stdout.write(f"user {name} revoked: their token no longer works\n")
            else:
                listed = users.list()
                if not listed:
                    sys.stdout.write("no API users (firstlook users add NAME)\n")
                for u in listed:
                    state = "active" if u.active else f"revoked {_when(u.revoked_at)}"
                    sys.stdout.write(f"{u.name:24} {state:24} created {_when(u.created_at)}  last used {_when(u.last_used_at)}\n")
        except UserError as exc:
            print(f"firstlook: {exc}", file=sys.stderr)
            return 1
        return 0
    finally:
        store.close()
