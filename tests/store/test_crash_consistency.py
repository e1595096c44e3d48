"""SIGKILL FirstLook while 4 DCMTK storescu senders push studies; nothing acknowledged is lost.

The short CI version of bench/bench_crash.py (same harness, tests/support/crash_harness.py): six
kills, one of each kind, including the debug-only crash points 'file renamed into place but
not indexed' and 'mid-analysis'.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import REPO, free_port
from tests.support.crash_harness import CrashSettings, chexnet_only_packs, cxr_pngs, run_crash_harness
from tests.support.node_helpers import dcmtk


@pytest.mark.packs  # analyses with the built CheXNet pack (its crash point 'mid-analysis' needs a model)
@pytest.mark.timeout(300)
def test_sigkill_while_receiving_and_analysing_loses_nothing(tmp_path: Path, shared_dir: Path) -> None:
    settings = CrashSettings(
        workdir=tmp_path, kills=6, senders=4, studies_per_sender=6, ct_slices=8, ct_size=128,
        cxr_pngs=cxr_pngs(shared_dir, 8), packs_dir=chexnet_only_packs(REPO / "build" / "model-packs", tmp_path),
        crash_point_p=0.5, max_kill_delay_s=2.5, study_pause_s=5.0, settle_timeout_s=150, storescu=dcmtk("storescu"),
    )
    report = run_crash_harness(settings, free_port())
    print("\n".join(report.lines()))
    assert report.kills == 6
    assert "point-after-rename" in report.kill_kinds  # the write-then-index window was hit
    assert report.acknowledged == report.instances  # senders re-sent until everything was acknowledged
    assert report.lost == 0 and report.altered == 0 and report.present == report.acknowledged
    assert report.replaced == 4  # each sender's corrected radiograph: the earlier version kept in superseded/
    assert report.verify_problems == []
    assert report.temp_files_left == []
    assert report.series_without_result == [] and report.stale_results == []
    assert report.duplicate_results == 0 and report.stray_overlays == []
    if settings.packs_dir is not None:  # CheXNet built: every radiograph series really analysed
        assert report.results.get("done", 0) >= 1
