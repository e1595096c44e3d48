"""``firstlook outbox [--json]`` and ``firstlook resend STUDY_UID`` as IT uses them, and a bad
``[[destinations]]`` entry stopping start-up with one sentence naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.core.results import AnalysisResult
from app.core.store import StudyStore
from tests.support import REPO
from tests.support.dicom_factory import write_cxr

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
          "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def firstlook(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "--config", str(config), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_resend_builds_and_queues_and_outbox_lists(tmp_path: Path, cxr_dir: Path) -> None:
    data_dir = tmp_path / "data"
    store = StudyStore(data_dir)
    png = sorted((cxr_dir / "images").glob("*.png"))[0]
    header = store.store_instance(write_cxr(tmp_path / "in", png).read_bytes(), calling_ae="CR01").header
    store.save_result(AnalysisResult(
        series_uid=header.series_uid, study_uid=header.study_uid, status="done", priority="urgent", model="chexnet",
        model_version="1.0.0", device="CPU", validated=False, summary="Effusion 0.71",
        findings={"probabilities": {label: 0.1 for label in LABELS} | {"Effusion": 0.71},
                  "thresholds": {label: 0.5 for label in LABELS}, "flagged": ["Effusion"]}))
    store.close()
    config = tmp_path / "firstlook.toml"
    config.write_text(f'data_dir = "{data_dir}"\npacks_dir = "{tmp_path / "no-packs"}"\n'
                      '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n')
    empty = firstlook(config, "outbox")
    assert empty.returncode == 0 and "outbox empty (destinations: pacs)" in empty.stdout
    done = firstlook(config, "resend", header.study_uid)
    assert done.returncode == 0, done.stderr
    listed = firstlook(config, "outbox", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert f"queued {len(rows)} send(s) of study {header.study_uid} to pacs" in done.stdout
    assert "sr" in {r["kind"] for r in rows} and {r["kind"] for r in rows} <= {"sr", "sc"}  # no overlay: SC optional
    assert {(r["state"], r["destination"], r["study_uid"], r["version"], r["destination_configured"])
            for r in rows} == {("queued", "pacs", header.study_uid, 1, True)}
    table = firstlook(config, "outbox")
    assert f"outbox: {len(rows)} queued" in table.stdout and header.study_uid in table.stdout
    again = firstlook(config, "resend", header.study_uid)  # the same objects, queued again
    rows_again = json.loads(firstlook(config, "outbox", "--json").stdout)
    assert again.returncode == 0 and {r["sop_uid"] for r in rows_again} == {r["sop_uid"] for r in rows}
    unknown = firstlook(config, "resend", "1.2.3.4")
    assert unknown.returncode == 1 and "no study 1.2.3.4" in unknown.stderr


def test_a_bad_destination_stops_start_up_with_one_sentence(tmp_path: Path) -> None:
    config = tmp_path / "firstlook.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                      '[[destinations]]\nname = "archive"\nae_title = "ARCH"\nhost = "10.1.2.3"\nport = 104\n'
                      'when = "weekends"\n')
    run = firstlook(config, "--headless")
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert "destination 'archive' has when 'weekends'" in line and line.startswith("firstlook: ")
