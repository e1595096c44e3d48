"""Schema 2 (the outbox) over a data dir written by the release before it (schema 1, 9a55971):
the old rows and files are intact, the outbox tables arrive empty, and the old done result can
be sent on demand (its objects are built then)."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from app.core.destinations import Destination
from app.core.outbox.result_outbox import ResultOutbox
from app.core.store import StudyStore
from app.core.store.migrations import latest_version
from tests.support.dicom_factory import make_ct_slice, write
from tests.support.outbox_helpers import StandInBuilder
from tests.support.previous_release import written_by_release

SCHEMA_1_RELEASE = "9a55971"  # the last release with schema version 1 (no outbox)

WRITER = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import app.core.store
    from app.core.results import AnalysisResult
    from app.core.store import StudyStore

    root, data_dir, spec = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
    assert Path(app.core.store.__file__).resolve().is_relative_to(root.resolve()), app.core.store.__file__
    store = StudyStore(data_dir)
    for name in spec["files"]:
        store.store_instance(Path(name).read_bytes(), calling_ae="CT01", peer="10.0.0.7:40001")
    assert store.enqueue_job(spec["series"])
    job = store.claim_job()
    store.save_result(AnalysisResult(series_uid=spec["series"], study_uid=spec["study"], status="done",
                                     priority="urgent", model="blast-ct", model_version="1.0", summary="IPH 3 mL"))
    store.finish_job(job.series_uid, job.instance_count, job.enqueued_at)
    store.close()
""")


def _rows(db: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every row per table; with ``columns``, only those tables and columns (later migrations add columns)."""
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"
                                             " AND name NOT LIKE 'sqlite_%'")]
        if columns is not None:
            return {t: sorted(conn.execute(f"SELECT {', '.join(c)} FROM {t}").fetchall(), key=repr)
                    for t, c in columns.items()}
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def _columns(db: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"
                                             " AND name NOT LIKE 'sqlite_%'")]
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()


def test_schema_1_data_dir_opens_with_an_empty_outbox_and_sends_on_demand(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    files = [write(make_ct_slice(np.full((16, 16), i, np.int16), (0, 0, float(i)), instance=i + 1, study_uid=study,
                                 series_uid=series), tmp_path / "in") for i in range(3)]
    data_dir = written_by_release(SCHEMA_1_RELEASE, tmp_path, WRITER,
                                  {"files": [str(f) for f in files], "study": study, "series": series})
    db = data_dir / "index.sqlite3"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    before, old_columns = _rows(db), _columns(db)

    store = StudyStore(data_dir)
    try:
        after = _rows(db)
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version() >= 2
        conn.close()
        assert _rows(db, old_columns) == before  # no row of the old tables changed (new columns aside)
        assert after["outbox"] == [] and after["outbox_objects"] == []
        assert store.verify() == [] and store.get_result(series).summary == "IPH 3 mL"
        outbox = ResultOutbox(store, None, lambda: [Destination("pacs", "PACS", "127.0.0.1", 104)],  # type: ignore[arg-type]
                              StandInBuilder())
        outbox.recover()
        assert outbox.resend_study(study) == 2
        rows = store.outbox.rows(study)
        assert {r["kind"] for r in rows} == {"sr", "sc"} and {r["state"] for r in rows} == {"queued"}
    finally:
        store.close()
