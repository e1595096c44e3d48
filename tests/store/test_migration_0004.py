"""Schema 4 (preliminary results): a data dir written by the code before it (schema 1, commit
9a55971) opens with its results intact and read as final; a preliminary result and the final
one that replaces it share one row.

The old data dir is written by the old code itself (``git archive``, run in a subprocess).
"""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from app.core.results import AnalysisResult
from app.core.store import StudyStore
from app.core.store.migrations import latest_version
from app.core.worklist import build_rows
from tests.support.dicom_factory import make_ct_slice, write
from tests.support.previous_release import written_by_release

PREVIOUS = "9a55971"  # the last commit with schema 1 (results without the preliminary columns)

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
        store.store_instance(Path(name).read_bytes(), calling_ae="CT01")
    store.mark_series_ready(spec["series"], 1700000000.5)
    store.save_result(AnalysisResult(
        series_uid=spec["series"], study_uid=spec["study"], status="done", priority="critical", model="blast-ct",
        model_version="1.0.0", device="CPU", validated=True, summary="IPH 4.2 mL",
        findings={"volumes_ml": {"IPH": 4.2}}, timings={"total": 300.0}, arrival_at=1700000000.25))
    store.close()
""")


def test_a_schema_1_data_dir_opens_with_its_results_final_and_preliminary_rows_replace_in_place(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    files = [write(make_ct_slice(np.full((16, 16), i, np.int16), (0, 0, float(i)), instance=i + 1, study_uid=study,
                                 series_uid=series), tmp_path / "in") for i in range(3)]
    data_dir = written_by_release(PREVIOUS, tmp_path, WRITER, {"files": [str(f) for f in files], "study": study,
                                                               "series": series})
    conn = sqlite3.connect(data_dir / "index.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "preliminary" not in [r[1] for r in conn.execute("PRAGMA table_info(results)")]
    conn.close()

    store = StudyStore(data_dir)
    try:
        conn = sqlite3.connect(data_dir / "index.sqlite3")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version() >= 4
        conn.close()
        old = store.get_result(series)
        assert old is not None and (old.priority, old.summary, old.findings) == ("critical", "IPH 4.2 mL",
                                                                                  {"volumes_ml": {"IPH": 4.2}})
        assert (old.preliminary, old.members_done, old.members_total, old.priority_note) == (False, None, None, None)
        (row,) = build_rows(store)
        assert (row.priority, row.preliminary, row.progress, row.priority_note) == ("critical", False, "", "")

        # A re-analysis: preliminary first, then the final result, in the same row.
        store.save_result(AnalysisResult(series_uid=series, study_uid=study, status="done", priority="urgent",
                                         model="blast-ct", validated=True, summary="preliminary (1/12): IPH 0.5 mL",
                                         preliminary=True, members_done=1, members_total=12))
        got = store.get_result(series)
        assert got is not None and (got.preliminary, got.members_done, got.members_total) == (True, 1, 12)
        assert got.progress_text == "preliminary (1/12)"
        (row,) = build_rows(store)
        assert (row.priority, row.preliminary, row.progress) == ("urgent", True, "preliminary (1/12)")
        store.save_result(AnalysisResult(series_uid=series, study_uid=study, status="done", priority="routine",
                                         model="blast-ct", validated=True, summary="no haemorrhage", members_done=12,
                                         members_total=12, priority_note="priority changed: urgent → routine"))
        assert len(store.results_for_study(study)) == 1
        final = store.get_result(series)
        assert final is not None and (final.preliminary, final.members_done, final.priority_note) == (
            False, 12, "priority changed: urgent → routine")
        (row,) = build_rows(store)
        assert (row.priority, row.preliminary, row.priority_note) == ("routine", False, "priority changed: urgent → routine")
    finally:
        store.close()
