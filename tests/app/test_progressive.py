"""Progressive results through the real pipeline on a real store: the preliminary result is stored
and announced before the final one, the worklist sorts and marks it at once, the final result
replaces it in the same row, and a priority the final result drops gets a visible note and an
audit record. The toy ensemble (tests/support/toy_progressive.py) makes the drop deterministic;
the BLAST-CT test runs the shipped spec with two members on the synthetic head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.audit import PRIORITY_CHANGED, AuditLog
from app.core.config import Config
from app.core.events import EventHub, ResultStored
from app.core.pipeline import Pipeline
from app.core.store import StudyStore
from app.core.worklist import build_rows
from app.core.worklist_text import priority_text, status_text, summary_text, turnaround_text
from tests.support.toy_model import TOY, build_toy_pack, mr_series, store_series
from tests.support.toy_progressive import specs_with_toy_ensemble


def _snapshots(hub: EventHub, store: StudyStore) -> list[dict]:
    """At each ResultStored (published on the worker thread, synchronously): the event, the stored
    row and the worklist as it is at that moment."""
    seen: list[dict] = []

    def on(event: object) -> None:
        if isinstance(event, ResultStored):
            seen.append({"event": event, "result": store.get_result(event.series_uid),
                         "rows": build_rows(store), "n_results": len(store.results_for_study(event.study_uid))})

    hub.subscribe(on)
    return seen


def test_a_preliminary_result_comes_first_sorts_at_once_and_the_final_one_replaces_it(tmp_path: Path) -> None:
    specs = specs_with_toy_ensemble()
    build_toy_pack(tmp_path / "packs")
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=tmp_path / "packs",
                    min_free_mb=0).validate(specs.names)
    store = StudyStore(config.data_dir)
    bright_paths, bright = mr_series(tmp_path / "in", "MR", bright=True, patient="BRIGHT")
    dark_paths, dark = mr_series(tmp_path / "in", "MR", bright=False, patient="DARK")
    store_series(store, dark_paths)    # analysed first; its preliminary "urgent" puts it on top at once
    store_series(store, bright_paths)
    hub = EventHub()
    seen = _snapshots(hub, store)
    pipeline = Pipeline(config, store, hub, specs=specs)
    pipeline.models.load()
    pipeline.run_until_idle()

    dark_seen = [s for s in seen if s["event"].series_uid == dark]
    assert [(s["event"].preliminary, s["event"].priority) for s in dark_seen] == [
        (True, "urgent"), (True, "routine"), (False, "routine")]
    first, second, final = dark_seen
    assert all(s["n_results"] == 1 for s in seen)                  # one row per series, always

    pre = first["result"]
    assert (pre.preliminary, pre.members_done, pre.members_total, pre.priority) == (True, 1, 3, "urgent")
    assert pre.summary == "preliminary (1/3): bright 1.00" and pre.progress_text == "preliminary (1/3)"
    assert pre.overlay_path == f"results/{dark}/bright.npz" and pre.timings["arrival_to_result"] >= 0
    assert pre.priority_note is None
    assert [r.patient_id for r in first["rows"]] == ["DARK", "BRIGHT"]
    row = first["rows"][0]                                         # on top of the worklist at once
    assert (row.patient_id, row.priority, row.preliminary, row.progress) == ("DARK", "urgent", True,
                                                                           "preliminary (1/3)")
    assert row.status == "analysing" and status_text(row) == "analysing · preliminary (1/3)"
    assert priority_text(row) == "URGENT prelim." and summary_text(row).startswith("preliminary (1/3)")
    assert turnaround_text(row).endswith(" s to preliminary (1/3)")

    mid = second["result"]                                         # member 2 already clears it
    assert (mid.preliminary, mid.members_done, mid.priority) == (True, 2, "routine")
    assert mid.priority_note == "priority changed: urgent in preliminary (1/3) → routine in preliminary (2/3)"

    done = final["result"]
    assert (done.preliminary, done.members_done, done.members_total, done.priority) == (False, 3, 3, "routine")
    assert done.summary == "nothing bright"
    assert done.priority_note == "priority changed: urgent in preliminary (1/3) → routine (final)"
    assert 0 <= done.timings["arrival_to_preliminary"] <= done.timings["arrival_to_result"]

    rows = build_rows(store)
    assert [r.patient_id for r in rows] == ["BRIGHT", "DARK"]      # moved down
    dark_row = rows[1]
    assert (dark_row.preliminary, dark_row.status, dark_row.priority) == (False, "ready", "routine")
    assert summary_text(dark_row).startswith("⚠ priority changed: urgent in preliminary (1/3) → routine (final)")
    assert len(store.results_for_study(rows[1].study_uid)) == 1

    changes = [r for r in AuditLog(config.data_dir).records() if r["event"] == PRIORITY_CHANGED]
    assert [(r["series_uid"], r["before"], r["after"], r["after_result"]) for r in changes] == [
        (dark, "urgent", "routine", "preliminary (2/3)"), (dark, "urgent", "routine", "final")]
    assert all(r["model"] == TOY and "DARK" not in json.dumps(r) for r in changes)  # no patient data

    bright_seen = [s for s in seen if s["event"].series_uid == bright]  # urgent throughout: no note
    assert [s["event"].preliminary for s in bright_seen] == [True, True, False]
    assert all(s["result"].priority == "urgent" and s["result"].priority_note is None for s in bright_seen)
    store.close()


def test_without_a_preliminary_callback_a_progressive_spec_runs_as_before(tmp_path: Path) -> None:
    """``SeriesAnalyser.analyse`` without ``on_preliminary`` (e.g. ``firstlook analyze``) gives the final
    result only, not marked preliminary."""
    specs = specs_with_toy_ensemble()
    build_toy_pack(tmp_path / "packs")
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=tmp_path / "packs",
                    min_free_mb=0).validate(specs.names)
    store = StudyStore(config.data_dir)
    paths, series = mr_series(tmp_path / "in", "MR", bright=False)
    store_series(store, paths)
    pipeline = Pipeline(config, store, EventHub(), specs=specs)
    pipeline.models.load()
    result = pipeline.analyser.analyse(series)
    assert (result.preliminary, result.members_done, result.priority, result.priority_note) == (
        False, 3, "routine", None)
    store.close()


def test_firstlook_worklist_json_is_the_worklist_in_order_with_preliminary_marks(tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture) -> None:
    from app.cli import main
    from app.core.results import AnalysisResult

    data = tmp_path / "data"
    store = StudyStore(data)
    uids = {}
    for patient, bright in (("A", False), ("B", False), ("C", False)):
        paths, series = mr_series(tmp_path / "in", "MR", bright=bright, patient=patient)
        uids[patient] = store_series(store, paths)
    study = {p: store.get_series(s).study_uid for p, s in uids.items()}
    store.save_result(AnalysisResult(series_uid=uids["A"], study_uid=study["A"], status="done", priority="routine",
                                     validated=True, summary="nothing", members_done=3, members_total=3))
    store.save_result(AnalysisResult(series_uid=uids["C"], study_uid=study["C"], status="done", priority="critical",
                                     validated=True, summary="preliminary (1/12): IPH 3.0 mL", preliminary=True,
                                     members_done=1, members_total=12))
    expected = [r.study_uid for r in build_rows(store)]
    store.close()
    assert expected[0] == study["C"]

    assert main(["worklist", "--json", "--data-dir", str(data)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["study_uid"] for r in listed] == expected and [r["position"] for r in listed] == [1, 2, 3]
    top = listed[0]
    assert (top["priority"], top["preliminary"], top["progress"], top["text"]["priority"]) == (
        "critical", True, "preliminary (1/12)", "CRITICAL prelim.")
    assert top["summary"] == "preliminary (1/12): IPH 3.0 mL" and top["status"] == "analysing"
    assert [r["preliminary"] for r in listed[1:]] == [False, False]

    assert main(["worklist", "--data-dir", str(data)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:3] == ["#", "priority", "status"] and len(text) == 4
    assert text[1].split()[:4] == ["1", "CRITICAL", "prelim.", "analysing"] and "preliminary (1/12)" in text[1]
    assert any(r["event"] == "admin.studies_listed" and r["listing"] == "worklist"
               for r in AuditLog(data).records())


def test_blast_ct_stores_its_first_member_as_a_preliminary_result_then_the_ensemble(packs_dir: Path,
                                                                                    tmp_path: Path) -> None:
    """The shipped spec with two members on the synthetic head: the chosen first member runs first,
    its result is stored (with its overlay) and announced before the two-member ensemble's."""
    from app.core.models import ModelSpecs
    from app.core.models.blast_ct import FIRST_MEMBER, BlastCtSpec
    from app.core.synthetic_dicom import synthetic_head_ct

    spec = BlastCtSpec(members=2, progressive_steps=(1,))
    specs = ModelSpecs((spec,))
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=packs_dir,
                    min_free_mb=0).validate(specs.names)
    store = StudyStore(config.data_dir)
    series = store_series(store, synthetic_head_ct(tmp_path / "in"))
    hub = EventHub()
    seen = _snapshots(hub, store)
    overlay_then: list[bool] = []
    hub.subscribe(lambda e: overlay_then.append((config.data_dir / f"results/{series}/labels.npz").is_file())
                  if isinstance(e, ResultStored) else None)
    pipeline = Pipeline(config, store, hub, specs=specs)
    pipeline.models.load()
    names = pipeline.models.get("blast-ct").member_names
    assert names[0] == FIRST_MEMBER and len(names) == 2
    pipeline.run_until_idle()

    assert [(s["event"].preliminary, s["result"].members_done, s["result"].members_total) for s in seen] == [
        (True, 1, 2), (False, 2, 2)]
    assert overlay_then == [True, True] and all(s["n_results"] == 1 for s in seen)
    pre, final = (s["result"] for s in seen)
    assert pre.summary.startswith("preliminary (1/2): ") and pre.model == "blast-ct" and pre.status == "done"
    assert set(pre.findings["volumes_ml"]) == {"IPH", "EAH", "oedema", "IVH"}
    assert seen[0]["rows"][0].preliminary and not build_rows(store)[0].preliminary
    assert not final.preliminary and not final.summary.startswith("preliminary")
    assert final.timings["arrival_to_preliminary"] <= final.timings["arrival_to_result"]
    assert (store.get_result(series).preliminary, len(store.results_for_study(final.study_uid))) == (False, 1)
    store.close()
