"""Who may connect: no token, a wrong one or a revoked one is refused with one JSON sentence and
nothing about patients, and audited; users are managed with ``firstlook users``; the audit log
names the user for every study opened, reviewed change and retrieve."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest

from app.core.audit import AuditLog
from tests.api.conftest import Served
from tests.support import REPO

PROTECTED = ("/api/v1/worklist", "/api/v1/status", "/api/v1/events", "/dicomweb/studies", "/dicomweb/series",
             "/status")


def _users(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    svc = served.service
    return subprocess.run([sys.executable, "-m", "app", "--config", str(svc.root / "absent.toml"),
                           "--data-dir", str(svc.data_dir), "users", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def _assert_refused(answer: httpx.Response, served: Served) -> None:
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error"}
    ct = pydicom.dcmread(served.ct[0], stop_before_pixels=True)
    for secret in (str(ct.PatientID), str(ct.PatientName), str(ct.StudyInstanceUID)):
        assert secret not in answer.text and secret not in str(answer.headers)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer fl_not-a-token"}, {"Authorization": "Basic abc"}],
                         ids=["none", "wrong", "not-bearer"])
def test_missing_or_wrong_token_is_refused_and_audited(served: Served, headers: dict[str, str]) -> None:
    before = len(list(AuditLog(served.service.data_dir).records()))
    for path in PROTECTED:
        _assert_refused(httpx.get(served.service.url + path, headers=headers), served)
    _assert_refused(httpx.put(served.service.url + "/api/v1/studies/1.2.3/reviewed", json={"reviewed": True},
                              headers=headers), served)
    refused = [r for r in list(AuditLog(served.service.data_dir).records())[before:] if r["event"] == "api.refused"]
    assert [r["path"] for r in refused] == [*PROTECTED, "/api/v1/studies/1.2.3/reviewed"]
    assert {r["reason"] for r in refused} == {"no token" if "Bearer fl_" not in str(headers) else "unknown token"}
    assert all(r["ip"] == "127.0.0.1" for r in refused)


def test_a_token_in_the_url_is_taken_by_the_status_page_only(served: Served) -> None:
    url, token = served.service.url, served.token
    assert httpx.get(f"{url}/status?token={token}").status_code == 200
    for path in ("/api/v1/worklist", "/dicomweb/studies", "/api/v1/status"):
        _assert_refused(httpx.get(f"{url}{path}?token={token}"), served)


def test_users_add_list_revoke(served: Served) -> None:
    added = _users(served, "add", "dr.house")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("fl_") and len(token) > 40
    ok = httpx.get(served.service.url + "/api/v1/worklist", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and len(ok.json()["rows"]) == 3

    again = _users(served, "add", "dr.house")
    assert again.returncode == 1 and "already has a token" in again.stderr
    listed = _users(served, "list")
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("dr.house "))
    assert "active" in line

    with sqlite3.connect(served.service.data_dir / "index.sqlite3") as db:  # only the hash is stored
        stored = [row for row in db.execute("SELECT * FROM api_users")]
    assert token not in json.dumps(stored)

    revoked = _users(served, "revoke", "dr.house")
    assert revoked.returncode == 0, revoked.stderr
    refused = httpx.get(served.service.url + "/api/v1/worklist", headers={"Authorization": f"Bearer {token}"})
    _assert_refused(refused, served)
    assert "revoked" in refused.json()["error"]
    records = list(AuditLog(served.service.data_dir).records())
    assert records[-1]["event"] == "api.refused" and records[-1]["reason"] == "revoked token"
    assert any(r["event"] == "admin.api_user_revoked" and r["user"] == "dr.house" for r in records)
    assert "revoked" in next(ln for ln in _users(served, "list").stdout.splitlines() if ln.startswith("dr.house "))
    assert _users(served, "revoke", "nobody").returncode == 1
    assert _users(served, "add", "bad name!").returncode == 1
    assert _users(served, "add").returncode == 2

    reissued = _users(served, "add", "dr.house").stdout.strip().splitlines()[-1]  # a revoked user gets a new token
    assert reissued != token
    assert httpx.get(served.service.url + "/api/v1/worklist",
                     headers={"Authorization": f"Bearer {reissued}"}).status_code == 200


def test_the_audit_log_names_the_user_for_opening_reviewing_and_retrieving(served: Served) -> None:
    ct = pydicom.dcmread(served.ct[0], stop_before_pixels=True)
    study = str(ct.StudyInstanceUID)
    url, headers = served.service.url, served.headers
    opened = httpx.get(f"{url}/api/v1/studies/{study}", headers=headers)
    assert opened.status_code == 200
    body = opened.json()
    assert body["study"]["study_uid"] == study and len(body["series"][0]["sop_uids"]) == 5
    changed = httpx.put(f"{url}/api/v1/studies/{study}/reviewed", json={"reviewed": True}, headers=headers)
    assert changed.status_code == 200 and changed.json()["reviewed"] is True
    assert changed.json()["row"]["status"] == "reviewed"
    assert httpx.put(f"{url}/api/v1/studies/{study}/reviewed", json={"reviewed": "yes"}, headers=headers).status_code == 400
    back = httpx.put(f"{url}/api/v1/studies/{study}/reviewed", json={"reviewed": False}, headers=headers).json()
    assert back["reviewed"] is False and back["reviewed_at"] is None
    retrieved = httpx.get(f"{url}/dicomweb/studies/{study}", headers=headers)
    assert retrieved.status_code == 200
    records = list(AuditLog(served.service.data_dir).records())
    mine = [r for r in records if r.get("user") == "reader" and r.get("study_uid") == study]
    events = [r["event"] for r in mine]
    assert "api.study_opened" in events and events.count("api.reviewed_changed") == 2 and "api.retrieved" in events
    assert all(r["ip"] == "127.0.0.1" for r in mine)
    log_text = (served.service.data_dir / "audit.log").read_text()
    assert str(ct.PatientName) not in log_text and str(ct.PatientID) not in log_text  # no patient identity


def test_the_local_token_file_is_private_without_a_group(served: Served) -> None:
    path = served.service.token_file
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    answer = httpx.get(served.service.url + "/api/v1/status",
                       headers={"Authorization": f"Bearer {path.read_text().strip()}"})
    assert answer.status_code == 200 and answer.json()["user"] == "local"


def test_the_local_token_file_is_readable_by_its_group_only(tmp_path: Path) -> None:
    import grp
    import os

    from app.api.local_token import read_local_token, write_local_token
    from app.core.store import StudyStore
    from app.core.users import UserDirectory

    group = grp.getgrgid(os.getgid()).gr_name  # a group this process may give files to
    store = StudyStore(tmp_path / "data")
    try:
        users = UserDirectory(store)
        path = tmp_path / "run" / "firstlook" / "local-token"
        old_umask = os.umask(0)
        try:
            token = write_local_token(users, path, group)
        finally:
            os.umask(old_umask)
        assert path.stat().st_mode & 0o777 == 0o640 and path.stat().st_gid == os.getgid()
        assert path.parent.stat().st_mode & 0o777 == 0o750
        assert read_local_token(path) == token and users.check(token).user == "local"
        again = write_local_token(users, path, group)  # every start issues a new one; the old one stops working
        assert again != token and users.check(token).user is None and users.check(again).user == "local"
    finally:
        store.close()
