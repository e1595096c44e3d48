"""Long fuzz run of the receive and DICOM-to-tensor paths, with a watchdog for hangs and crashes.

    python3 bench/fuzz_long.py [--cases 12000] [--hang-s 60] [--net-every 25] [--workdir DIR]

The cases are tests/support/fuzz_cases.py's hypothesis strategies (the CI tests run the same ones,
fewer): damaged datasets into ``StudyStore.store_instance`` and, when stored, into
``load_cxr`` + ``to_model_input``; every ``--net-every``-th case through a real association
(``send_raw`` to a StorageSCP in the worker) where the status must be Success or a failure
status; head-CT series into ``inference.ct_volume``; damaged radiograph datasets straight
into ``load_cxr``. Workers run in a child process with a 4 GiB address-space limit (an
allocation bomb becomes a MemoryError, not an OOM kill of the machine) and
``faulthandler.dump_traceback_later`` per case: a case that takes longer than ``--hang-s``
ends the worker with a stack dump and counts as a hang; a worker killed by a signal counts as
a crash; a failed check (an exception other than the typed refusals) counts as a finding.
Writes outside the data dir are looked for in the whole sandbox (the worker's cwd) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KINDS = ("receive", "ct", "cxr")


def worker(args: argparse.Namespace) -> int:
    import faulthandler
    import logging
    import resource
    import warnings

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from app.core.store import StudyStore
    from dicom_node.scp import (
        STATUS_BAD_UID, STATUS_CANNOT_UNDERSTAND, STATUS_MISSING_UID, STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS)
    from dicom_node.scu import ASSOCIATION_FAILED, send_raw
    from tests.support.fuzz_cases import (
        UNSUPPORTED_SYNTAXES,
        cxr_dataset, _deterministic, check_ct_series, check_receive, check_tensor_path, ct_series_cases, dataset_damage,
        receive_cases)
    from tests.support.node_helpers import start_node, stop_node

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    progress = Path(args.progress)
    counts = {"cases": 0, "stored": 0, "refused": 0, "net": 0, "not_analysed": 0, "tensor_ok": 0}
    ok_statuses = {STATUS_SUCCESS, STATUS_CANNOT_UNDERSTAND, STATUS_MISSING_UID, STATUS_BAD_UID,
                   STATUS_OUT_OF_RESOURCES}
    store = StudyStore(Path("data"))
    node = start_node(Path("net-data")) if args.kind == "receive" else None

    def tick(outcome: str) -> None:
        counts["cases"] += 1
        if outcome:
            counts[outcome] = counts.get(outcome, 0) + 1
        faulthandler.dump_traceback_later(args.hang_s, exit=True)  # re-armed per case
        if counts["cases"] % 20 == 0:
            progress.write_text(json.dumps(counts))

    common = dict(max_examples=args.cases, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=False)

    @settings(**common)
    @given(receive_cases())
    def receive(case) -> None:  # type: ignore[no-untyped-def]
        if node is not None and args.net_every and counts["cases"] % args.net_every == 0:
            status = send_raw("127.0.0.1", node.port, node.ae, case.sop_class, case.sop_uid_hint or "1.2.3.4",
                              case.body, transfer_syntax=case.transfer_syntax, timeout=30)
            expected = {ASSOCIATION_FAILED} if case.transfer_syntax in UNSUPPORTED_SYNTAXES else ok_statuses
            assert status in expected, (hex(status), case.steps)  # unsupported syntax: refused at negotiation
            tick("net")
            return
        outcome = check_receive(store, case)
        tick("stored" if outcome.stored else "refused")
        if outcome.tensor.startswith("not analysed"):
            counts["not_analysed"] += 1
        elif outcome.tensor == "ok":
            counts["tensor_ok"] += 1

    @settings(**common)
    @given(ct_series_cases())
    def ct(case) -> None:  # type: ignore[no-untyped-def]
        result = check_ct_series(case[0])
        tick("not_analysed" if result.startswith("not analysed") else "tensor_ok")

    @st.composite
    def damaged_cxr(draw):  # type: ignore[no-untyped-def]
        ds = _deterministic(cxr_dataset(64, 64))
        ds.file_meta.TransferSyntaxUID = draw(dataset_damage(ds, []))
        return ds

    @settings(**common)
    @given(damaged_cxr())
    def cxr(ds) -> None:  # type: ignore[no-untyped-def]
        result = check_tensor_path(ds)
        tick("not_analysed" if result.startswith("not analysed") else "tensor_ok")

    faulthandler.dump_traceback_later(args.hang_s, exit=True)
    try:
        {"receive": receive, "ct": ct, "cxr": cxr}[args.kind]()
    finally:
        faulthandler.cancel_dump_traceback_later()
        progress.write_text(json.dumps(counts))
        if node is not None:
            stop_node(node)
        store.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=12000, help="total cases (split over the kinds)")
    ap.add_argument("--chunk", type=int, default=1500, help="cases per worker run")
    ap.add_argument("--hang-s", type=float, default=60.0)
    ap.add_argument("--net-every", type=int, default=25)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kind", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--progress", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from tests.support.fuzz_cases import files_outside

    started = time.monotonic()
    totals = {"cases": 0, "crashes": 0, "hangs": 0, "findings": 0}
    by_kind: dict[str, dict[str, int]] = {}
    findings: list[str] = []
    share = {"receive": 0.5, "ct": 0.25, "cxr": 0.25}
    with tempfile.TemporaryDirectory(prefix="firstlook-fuzz-", dir=args.workdir) as tmp:
        sandbox = Path(tmp)
        run = 0
        for kind in KINDS:
            target = int(args.cases * share[kind])
            done = 0
            while done < target:
                run += 1
                progress = sandbox / f"progress-{run}.json"
                cwd = sandbox / f"run{run}"
                cwd.mkdir()
                n = min(args.chunk, target - done)
                proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--kind", kind,
                                       "--cases", str(n), "--hang-s", str(args.hang_s), "--net-every",
                                       str(args.net_every), "--progress", str(progress)],
                                      cwd=cwd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
                counts = json.loads(progress.read_text()) if progress.exists() else {"cases": 0}
                got = max(1, int(counts.get("cases", 0)))
                done += got
                totals["cases"] += got
                agg = by_kind.setdefault(kind, {})
                for k, v in counts.items():
                    agg[k] = agg.get(k, 0) + int(v)
                if proc.returncode < 0:
                    totals["crashes"] += 1
                    findings.append(f"{kind}: worker killed by signal {-proc.returncode}: {proc.stderr[-1500:]}")
                elif "Timeout" in proc.stderr and "Thread" in proc.stderr:
                    totals["hangs"] += 1
                    findings.append(f"{kind}: hang > {args.hang_s} s: {proc.stderr[-3000:]}")
                elif proc.returncode != 0:
                    totals["findings"] += 1
                    findings.append(f"{kind}: check failed: {proc.stderr[-3000:]}")
                print(f"run {run} {kind}: {got} cases, rc {proc.returncode}, total {totals['cases']}", flush=True)
        outside = files_outside(sandbox, sandbox / "none")
        outside = [p for p in outside if not any(part in ("data", "net-data") for part in p.relative_to(sandbox).parts)
                   and not p.name.startswith("progress-") and ".hypothesis" not in p.parts]  # the fuzzer's own cache
    print(f"\ncases tried {totals['cases']}, crashes {totals['crashes']}, hangs {totals['hangs']}, "
          f"check failures {totals['findings']}, writes outside the data dir {len(outside)}, "
          f"{time.monotonic() - started:.0f} s")
    for kind, agg in by_kind.items():
        print(f"  {kind}: {agg}")
    for item in findings:
        print("----\n" + item)
    for p in outside[:20]:
        print("outside:", p)
    ok = totals["crashes"] == 0 and totals["hangs"] == 0 and totals["findings"] == 0 and not outside
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
