"""Users of the HTTP API and their bearer tokens (``firstlook users``; ``app.api`` checks them).

A token is ``secrets.token_urlsafe(32)`` (256 random bits) shown once; the index keeps only its
SHA-256, which is enough for a secret of that entropy (no password stretching needed) and lets
a request be checked with one indexed lookup. Revoking keeps the row (the audit log names the
user) and makes the token fail; adding the same name again issues a new token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from app.core.store import StudyStore

LOCAL_USER = "local"  # the local desktop's credential (the token file the service writes)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class UserError(Exception):
    """A user command that cannot be done; the message is one sentence."""


@dataclass(frozen=True)
class ApiUser:
    name: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class TokenCheck:
    """The outcome of checking one presented token: the user, or why not."""

    user: str | None
    refusal: str = ""   # "no token", "unknown token", "revoked token"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "fl_" + secrets.token_urlsafe(32)


class UserDirectory:
    """The ``api_users`` table of one store's index."""

    def __init__(self, store: StudyStore) -> None:
        self.index = store.index

    def add(self, name: str) -> str:
        """Create ``name`` (or re-issue a revoked one) and return its new token."""
        if not _NAME.match(name):
            raise UserError(f"user name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'.")
        token = new_token()
        with self.index.write_lock:
            conn = self.index.conn()
            row = conn.execute("SELECT revoked_at FROM api_users WHERE name=?", (name,)).fetchone()
            if row is not None and row["revoked_at"] is None and name != LOCAL_USER:
                raise UserError(f"user {name} already has a token; `firstlook users revoke {name}` first to issue a new one.")
            conn.execute("""INSERT INTO api_users (name, token_sha256, created_at) VALUES (?, ?, ?)
                            ON CONFLICT(name) DO UPDATE SET token_sha256=excluded.token_sha256,
                            created_at=excluded.created_at, revoked_at=NULL, last_used_at=NULL""",
                         (name, token_hash(token), time.time()))
        return token

    def revoke(self, name: str) -> None:
        with self.index.write_lock:
            cur = self.index.conn().execute("UPDATE api_users SET revoked_at=? WHERE name=? AND revoked_at IS NULL",
                                            (time.time(), name))
            if cur.rowcount == 0:
                known = self.index.conn().execute("SELECT 1 FROM api_users WHERE name=?", (name,)).fetchone()
                raise UserError(f"user {name} is already revoked." if known else f"there is no user {name}.")

    def list(self) -> list[ApiUser]:
        rows = self.index.conn().execute(
            "SELECT name, created_at, revoked_at, last_used_at FROM api_users ORDER BY name").fetchall()
        return [ApiUser(r["name"], r["created_at"], r["revoked_at"], r["last_used_at"]) for r in rows]

    def is_active_token(self, name: str, token: str) -> bool:
        row = self.index.conn().execute("SELECT token_sha256, revoked_at FROM api_users WHERE name=?", (name,)).fetchone()
        return row is not None and row["revoked_at"] is None and secrets.compare_digest(row["token_sha256"], token_hash(token))

    def check(self, token: str | None) -> TokenCheck:
        """Who presents ``token``; the lookup is by hash, so timing reveals nothing of valid tokens."""
        if not token:
            return TokenCheck(None, "no token")
        row = self.index.conn().execute("SELECT name, revoked_at FROM api_users WHERE token_sha256=?",
                                        (token_hash(token),)).fetchone()
        if row is None:
            return TokenCheck(None, "unknown token")
        if row["revoked_at"] is not None:
            return TokenCheck(None, "revoked token")
        return TokenCheck(row["name"])

    def touch(self, name: str) -> None:
        """Record use (at most one write per user per minute: requests must not queue on the index lock)."""
        with self.index.write_lock:
            self.index.conn().execute(
                "UPDATE api_users SET last_used_at=? WHERE name=? AND (last_used_at IS NULL OR last_used_at < ?)",
                (time.time(), name, time.time() - 60))
