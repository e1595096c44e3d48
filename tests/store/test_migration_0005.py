"""Schema 5 (the requested C-STORE priority kept with the job): a data dir written by the code
before it (schema 4, commit 7853cc6), with a backlog, opens with its queue intact, and a HIGH
request made after the upgrade is kept across the next restart.

The old data dir is written by the old code itself (``git archive``, run in a subprocess).
"""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from app.core.store import StudyStore
from app.core.store.migrations import latest_version
from tests.support.dicom_factory import make_ct_slice, write
from tests.support.previous_release import written_by_release

PREVIOUS = "7853cc6"  # the last commit with schema 4 (jobs without requested_priority)

WRITER = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import app.core.store
    from app.core.store import StudyStore

    root, data_dir, spec = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
    assert Path(app.core.store.__file__).resolve().is_relative_to(root.resolve()), app.core.store.__file__
    store = StudyStore(data_dir, min_free_bytes=0)
    for series, names in spec["series"].items():
        for name in names:
            store.store_instance(Path(name).read_bytes(), calling_ae="CT01")
        store.enqueue_job(series)
    store.close()
""")


def test_a_schema_4_data_dir_keeps_its_backlog_and_then_keeps_requested_priorities(tmp_path: Path) -> None:
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    files = {s: [str(write(make_ct_slice(np.full((16, 16), i, np.int16), (0, 0, float(i)), instance=i + 1,
                                         study_uid=study, series_uid=s), tmp_path / "in" / s)) for i in range(2)]
             for s in series}
    data_dir = written_by_release(PREVIOUS, tmp_path, WRITER, {"series": files})
    conn = sqlite3.connect(data_dir / "index.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert "requested_priority" not in [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
    conn.close()

    store = StudyStore(data_dir, min_free_bytes=0)
    assert store.index.conn().execute("PRAGMA user_version").fetchone()[0] == latest_version() >= 5
    pending = [r[0] for r in store.index.conn().execute(
        "SELECT series_uid FROM jobs WHERE state='pending' ORDER BY enqueued_at")]
    assert pending == series  # the old backlog, in its order
    store.raise_job_priority(series[2], "high")  # a HIGH re-send of the last series after the upgrade
    store.close()

    store = StudyStore(data_dir, min_free_bytes=0)
    try:
        order = []
        while (job := store.claim_job(None, {})) is not None:
            order.append(job.series_uid)
        assert order == [series[2], series[0], series[1]]
    finally:
        store.close()
