"""The durable outbox on a real store: a result's objects are files before the commit and rows in
the result's transaction; destinations get rows by ``objects`` and ``when``; a re-analysis is a new
version that supersedes; interrupted sends re-queue the same UIDs; removed destinations stop."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pydicom
import pytest

from app.core.config import Config, ConfigError, load_config
from app.core.destinations import Destination
from app.core.outbox.result_outbox import ResultOutbox
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from tests.support.files import permissions
from tests.support.outbox_helpers import StandInBuilder, done_result

PACS = Destination("pacs", "PACS", "127.0.0.1", 104)
URGENT_SR = Destination("urgent-sr", "TRIAGE", "127.0.0.1", 105, objects=("sr",), when="urgent")


def _outbox(store: StudyStore, destinations: list[Destination], builder: StandInBuilder | None = None) -> ResultOutbox:
    return ResultOutbox(store, None, lambda: destinations, builder or StandInBuilder(), uid_root="1.2.826.0.1.3680043.10.999")  # type: ignore[arg-type]


def _commit(store: StudyStore, outbox: ResultOutbox, result: AnalysisResult) -> None:
    staged = outbox.stage(result)
    store.save_result(result, also=staged.record if staged else None)


def test_objects_are_files_before_the_commit_and_rows_with_the_result(store: StudyStore, stored_series) -> None:
    study, series = stored_series
    outbox = _outbox(store, [PACS, URGENT_SR])
    result = done_result(series, study, priority="urgent")
    staged = outbox.stage(result)
    assert staged is not None and {o.kind for o in staged.objects} == {"sr", "sc"}
    for o in staged.objects:  # written, fsynced and readable before anything is committed
        ds = pydicom.dcmread(store.data_dir / o.path)
        assert str(ds.SOPInstanceUID) == o.sop_uid and ds.StudyInstanceUID == study
        assert o.sop_uid.startswith("1.2.826.0.1.3680043.10.999.")
    assert store.outbox.rows() == [] and store.get_result(series) is None
    store.save_result(result, also=staged.record)
    rows = store.outbox.rows()
    by_dest = {(r["destination"], r["kind"]) for r in rows}
    assert by_dest == {("pacs", "sr"), ("pacs", "sc"), ("urgent-sr", "sr")}
    assert all(r["state"] == "queued" and r["attempts"] == 0 and r["version"] == 1 for r in rows)
    assert store.outbox.study_states()[study].state == "queued"
    assert permissions(store.data_dir) == []  # objects and their folders are private like the rest


def test_a_failed_transaction_keeps_neither_result_nor_rows_and_the_files_go_at_restart(
        store: StudyStore, stored_series) -> None:
    study, series = stored_series
    outbox = _outbox(store, [PACS])
    result = done_result(series, study)
    staged = outbox.stage(result)
    assert staged is not None

    def broken(conn: sqlite3.Connection) -> None:
        staged.record(conn)
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError):
        store.save_result(result, also=broken)
    assert store.get_result(series) is None and store.outbox.rows() == []
    files = sorted((store.data_dir / "outbox").rglob("*.dcm"))
    assert len(files) == 2  # written, never committed
    outbox.recover()
    assert not list((store.data_dir / "outbox").rglob("*.dcm"))


def test_when_and_status_pick_what_is_sent(store: StudyStore, stored_series) -> None:
    study, series = stored_series
    builder = StandInBuilder()
    outbox = _outbox(store, [URGENT_SR], builder)
    assert outbox.stage(done_result(series, study, priority="routine")) is None  # urgent-only: nothing
    for status, priority in (("not_analysed", "not_analysed"), ("failed", "failed")):
        assert outbox.stage(AnalysisResult(series, study, status, priority)) is None
    assert builder.calls == []  # nothing built for what is not sent
    assert _outbox(store, []).stage(done_result(series, study)) is None
    staged = outbox.stage(done_result(series, study, priority="critical"))
    assert staged is not None and [(o.kind, d) for o in staged.objects for (s, d) in staged.sends
                                   if s == o.sop_uid] == [("sr", "urgent-sr")]


def test_a_re_analysis_is_a_new_version_that_supersedes_the_unsent_one(store: StudyStore, stored_series) -> None:
    study, series = stored_series
    builder = StandInBuilder()
    outbox = _outbox(store, [PACS], builder)
    _commit(store, outbox, done_result(series, study))
    first = {r["sop_uid"] for r in store.outbox.rows()}
    _commit(store, outbox, done_result(series, study, priority="critical"))
    rows = store.outbox.rows()
    old = [r for r in rows if r["sop_uid"] in first]
    new = [r for r in rows if r["sop_uid"] not in first]
    assert {r["state"] for r in old} == {"superseded"} and {r["state"] for r in new} == {"queued"}
    assert {r["version"] for r in new} == {2} and all(set(r["supersedes"]) == first for r in new)
    assert builder.calls[1]["version"] == 2 and set(builder.calls[1]["supersedes"]) == first
    assert {o.sop_uid for o in store.outbox.latest_objects(series)} == {r["sop_uid"] for r in new}
    assert {r["series_uid"] for r in new}.isdisjoint({r["series_uid"] for r in old})  # new series


def test_interrupted_sends_requeue_the_same_objects_and_removed_destinations_stop(store: StudyStore,
                                                                                   stored_series) -> None:
    study, series = stored_series
    outbox = _outbox(store, [PACS, URGENT_SR])
    _commit(store, outbox, done_result(series, study, priority="urgent"))
    claimed = store.outbox.claim("pacs")
    assert len(claimed) == 2 and {r["state"] for r in store.outbox.rows() if r["destination"] == "pacs"} == {"sending"}
    before = {(r["sop_uid"], r["destination"]) for r in store.outbox.rows()}
    # a restart where "urgent-sr" was removed from the configuration
    restarted = _outbox(store, [PACS])
    restarted.recover()
    rows = store.outbox.rows()
    assert {(r["sop_uid"], r["destination"]) for r in rows} == before  # same objects, same UIDs
    assert {r["state"] for r in rows if r["destination"] == "pacs"} == {"queued"}
    (stopped,) = [r for r in rows if r["destination"] == "urgent-sr"]
    assert stopped["state"] == "stopped" and stopped["last_error"] == "destination urgent-sr is no longer configured"
    # configured again: it resumes
    _outbox(store, [PACS, URGENT_SR]).recover()
    assert {r["state"] for r in store.outbox.rows()} == {"queued"}


def test_resend_queues_the_latest_objects_again_or_builds_them(store: StudyStore, stored_series) -> None:
    study, series = stored_series
    store.save_result(done_result(series, study, priority="routine"))  # stored when no destination was set
    builder = StandInBuilder()
    outbox = _outbox(store, [URGENT_SR], builder)
    assert outbox.resend_study(study) == 1  # built now; "when" not applied on demand; sr only
    (row,) = store.outbox.rows()
    store.outbox.mark_sent(row["id"], 0)
    assert outbox.resend_study(study) == 1 and len(builder.calls) == 1  # same object again
    (again,) = store.outbox.rows()
    assert again["sop_uid"] == row["sop_uid"] and again["state"] == "queued"
    assert _outbox(store, []).resend_study(study) == 0


def test_destinations_are_validated_with_one_sentence_naming_the_entry(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('uid_root = "1.2.826.0.1.3680043.10.1"\n'
                    '[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = 4242\n'
                    '[[destinations]]\nname = "triage"\nae_title = "T"\nhost = "pacs.example.org"\nport = 104\n'
                    'tls = true\nobjects = ["sr"]\nwhen = "urgent"\n')
    config = load_config(good)
    assert config.destinations == [Destination("pacs", "ORTHANC", "127.0.0.1", 4242),
                                   Destination("triage", "T", "pacs.example.org", 104, True, ("sr",), "urgent")]
    assert config.uid_root == "1.2.826.0.1.3680043.10.1"
    bad = [('port = 0', "destination 'pacs' has port 0"),
           ('port = 104\nobjects = ["pdf"]', "destination 'pacs' has objects ['pdf']"),
           ('port = 104\nwhen = "sometimes"', "destination 'pacs' has when 'sometimes'"),
           ('port = 104\nae_title = "A_VERY_LONG_AE_TITLE"', "ae_title"),
           ('port = 104\ncolour = "red"', "destination 'pacs' has unknown key(s) colour")]
    for extra, message in bad:
        path = tmp_path / "bad.toml"
        lines = '[[destinations]]\nname = "pacs"\nhost = "127.0.0.1"\n' + extra + "\n"
        if "ae_title" not in extra:
            lines += 'ae_title = "PACS"\n'
        path.write_text(lines)
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")) as caught:
            load_config(path)
        assert str(caught.value).count(". ") == 0  # one sentence
    with pytest.raises(ConfigError, match="listed twice"):
        Config(destinations=[PACS, PACS]).validate()
    with pytest.raises(ConfigError, match="uid_root"):
        Config(uid_root="1.02.3").validate()
