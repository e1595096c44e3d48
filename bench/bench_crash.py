"""Crash-consistency run (long version of tests/store/test_crash_consistency.py).

    python3 bench/bench_crash.py [--kills 24] [--studies 12] [--seed 1] [--workdir DIR]

4 DCMTK storescu senders (TCP_NODELAY=1) push chest radiographs and head-CT series to
``firstlook --headless`` while it is SIGKILLed and restarted ``--kills`` times: from outside
at random moments, and at the debug-only crash points of app/core/crashpoints.py (after the file
fsync, after the rename before the index commit, after the index commit before the
directory fsync and the response, mid-analysis). Prints kills, instances sent, acknowledged,
present, lost, and the analysis checks; exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import free_port  # noqa: E402
from tests.support.crash_harness import CrashSettings, chexnet_only_packs, cxr_pngs, run_crash_harness  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--studies", type=int, default=12, help="studies per sender")
    ap.add_argument("--ct-slices", type=int, default=16)
    ap.add_argument("--ct-size", type=int, default=512, help="CT matrix (512: 512 KiB slices)")
    ap.add_argument("--pause", type=float, default=6.0, help="max pause between a sender's studies, s")
    ap.add_argument("--crash-point-p", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="firstlook-crash-", dir=args.workdir) as tmp:
        work = Path(tmp)
        settings = CrashSettings(
            workdir=work, kills=args.kills, senders=4, studies_per_sender=args.studies, ct_slices=args.ct_slices,
            ct_size=args.ct_size, cxr_pngs=cxr_pngs(args.shared, 16),
            packs_dir=chexnet_only_packs(REPO / "build" / "model-packs", work), seed=args.seed,
            crash_point_p=args.crash_point_p, max_kill_delay_s=4.0, study_pause_s=args.pause, settle_timeout_s=600,
        )
        report = run_crash_harness(settings, free_port())
        print("\n".join(report.lines()))
        for name in ("verify_problems", "temp_files_left", "series_without_result", "stale_results", "stray_overlays"):
            for item in getattr(report, name)[:10]:
                print(f"  {name}: {item}")
        print("RESULT:", "PASS" if report.ok else "FAIL")
        return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
