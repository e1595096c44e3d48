"""BLAST-CT ensemble speed, before vs after, with the labels checked for identity. Run by hand.

    # 1. save the labels of a commit's code (default HEAD; real series) as the reference
    python bench/bench_ensemble_speed.py save [--baseline <commit>] [--members 1 12]
    # 2. side by side: the baseline commit's inference/ vs this tree's, alternated in fresh processes
    #    (without a saved reference, the baseline's first run saves it)
    python bench/bench_ensemble_speed.py compare --baseline <commit> [--members 1 12] [--rounds 2] [--studies 2]
    # 3. are two saved label files identical? (e.g. a reference and a frozen run of a later commit)
    python bench/bench_ensemble_speed.py labels build/ensemble-reference/labels_A_m12.npz labels_B_m12.npz
    # where one member's seconds go (pathways, head, gather, compile, the rest) + per-node times of a patch
    python bench/bench_ensemble_speed.py breakdown [--members 1]
    # a frozen copy of a commit's code, run by hand (same JSON row as compare prints)
    python bench/bench_ensemble_speed.py child --src build/ensemble-reference/src_<commit> --member-count 12 \
        --save build/ensemble-reference/labels_after_<commit>_m12.npz [--keep-compiled]

The baseline's ``inference/`` package is exported with ``git archive`` into
``build/ensemble-reference/src_<commit>/`` and imported from there, so both variants run on the
same machine in the same minutes (the machine is shared: read the ratios, not only the seconds).
Every run's native labels (and 1 mm grid labels) are compared with ``np.array_equal`` against the
reference saved by ``save`` for the same member count (the grid labels too, which the split head
of later commits fills only at voxels a native pixel samples) (``labels_<commit>_m<N>.npz``, git-ignored).
``--studies 2`` analyses the series twice in one process: the second study shows what a
resident (compiled once) runtime costs per study. Peak RSS is per process (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "ensemble-reference"
SERIES = "data/headct/dcm_qa_ct_GE_HiSpeed_head/dicom"


def _commit(ref: str = "HEAD") -> str:
    return subprocess.run(["git", "rev-parse", "--short=10", ref], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def export_src(commit: str) -> Path:
    """The ``inference/`` package of ``commit`` in a folder of its own (imported instead of this tree's)."""
    dest = OUT / f"src_{commit}"
    if not (dest / "inference" / "blastct.py").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "inference"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def child(args: argparse.Namespace) -> dict:
    """One configuration in this process: analyse the real series ``--studies`` times."""
    sys.path.insert(0, args.src)
    import numpy as np
    import openvino as ov

    import inference.blastct as blastct
    from inference.ct_volume import load_ct_volume
    from inference.packs import load_pack

    assert Path(blastct.__file__).resolve().is_relative_to(Path(args.src).resolve()), blastct.__file__
    volume = load_ct_volume(sorted((Path(args.shared) / SERIES).glob("*.dcm")))
    pack = load_pack(Path(args.pack))
    t0 = time.perf_counter()
    extra = {"keep_compiled": True} if args.keep_compiled else {}
    runner = blastct.BlastCt(pack, ov.Core(), "CPU", members=args.members, check_device=False, **extra)
    t_load = time.perf_counter() - t0
    studies = []
    out = None
    for _ in range(args.studies):
        t1 = time.perf_counter()
        out = runner.analyse(volume, keep_grid=True)
        studies.append(round(time.perf_counter() - t1, 2))
    assert out is not None
    row = {"src": args.src, "members": args.members, "load_s": round(t_load, 2), "study_s": studies,
           "timings": {k: round(v, 2) for k, v in out.timings.items()}, "volumes_ml": out.volumes_ml,
           "tiles": [out.tiles_run, out.tiles_constant],
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)}
    if args.save:
        np.savez_compressed(args.save, labels=out.labels, grid_labels=out.grid_labels)
        row["saved"] = args.save
    if args.check:
        ref = np.load(args.check)
        row["labels_identical"] = bool(np.array_equal(ref["labels"], out.labels))
        row["grid_identical"] = bool(np.array_equal(ref["grid_labels"], out.grid_labels))
        row["labels_differing_voxels"] = int((ref["labels"] != out.labels).sum())
    return row


def breakdown(args: argparse.Namespace) -> dict:
    """Where one member's seconds go on the real series (this tree's code): the pathways model,
    the 1x1x1 head, the gather between them, compiling, and the rest (patches, softmax, sums);
    then OpenVINO's per-node times (PERF_COUNT) of the pathways on one 170^3 patch."""
    import numpy as np
    import openvino as ov

    import inference.blastct as blastct
    from inference.ct_volume import load_ct_volume
    from inference.packs import load_pack

    seconds = {"pathways": 0.0, "head": 0.0, "split_call": 0.0}

    class Timed(blastct.SplitMember):
        """The shipped SplitMember with its two inferences timed (no change to what it computes)."""

        def __init__(self, inner: blastct.SplitMember) -> None:
            self.__dict__.update(inner.__dict__)
            pathways, head = self._pathways, self._head

            class Clock:
                def __init__(self, request, key):
                    self._request, self._key = request, key

                def infer(self, *a):
                    t = time.perf_counter()
                    out = self._request.infer(*a)
                    seconds[self._key] += time.perf_counter() - t
                    return out

                def __getattr__(self, name):
                    return getattr(self._request, name)

            self._pathways, self._head = Clock(pathways, "pathways"), Clock(head, "head")

        def __call__(self, patch, voxels=None):
            t = time.perf_counter()
            try:
                return super().__call__(patch, voxels)
            finally:
                seconds["split_call"] += time.perf_counter() - t

    compile_split = blastct.BlastCt._compile_split
    blastct.BlastCt._compile_split = lambda self, member, size: Timed(compile_split(self, member, size))
    volume = load_ct_volume(sorted((Path(args.shared) / SERIES).glob("*.dcm")))
    pack = load_pack(Path(args.pack))
    runner = blastct.BlastCt(pack, ov.Core(), "CPU", members=args.member_count or 1, check_device=False)
    t0 = time.perf_counter()
    out = runner.analyse(volume)
    wall = time.perf_counter() - t0
    n = len(runner.member_names)
    t = out.timings
    row = {"members": n, "study_s": round(wall, 2),
           "per_member_s": {"pathways": seconds["pathways"] / n, "head": seconds["head"] / n,
                            "gather": (seconds["split_call"] - seconds["pathways"] - seconds["head"]) / n,
                            "compile": t.get("compile", 0.0) / n,
                            "tiles_rest": (t.get("infer", 0.0) - seconds["split_call"]) / n},
           "per_study_s": {"prepare": t.get("prepare", 0.0), "postprocess": t.get("postprocess", 0.0)}}
    row["per_member_s"] = {k: round(v, 2) for k, v in row["per_member_s"].items()}
    row["per_study_s"] = {k: round(v, 2) for k, v in row["per_study_s"].items()}
    # per-node times of the pathways on one full 170^3 input patch (what a 90^3 output tile costs)
    core = ov.Core()
    member = runner.member_names[0]
    model = core.read_model(str(pack.member_xml(member, runner._ir_key(member))))
    model.reshape([1, 1, 170, 170, 170])
    pathways, _ = blastct.split_model(model, ov.Type.bf16 if runner._native_bf16() else ov.Type.f32)
    compiled = core.compile_model(pathways, "CPU", {**runner._config("CPU"), "PERFORMANCE_HINT": "LATENCY",
                                                     "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    patch = np.random.default_rng(0).uniform(-1, 1, (1, 1, 170, 170, 170)).astype(np.float32)
    for _ in range(3):
        request.infer([patch])
    nodes = sorted(((p.real_time.total_seconds(), p.node_name.split("/")[0], p.exec_type)
                    for p in request.get_profiling_info()), reverse=True)
    total = sum(x[0] for x in nodes)
    row["patch_170_node_s"] = round(total, 3)
    row["patch_170_top"] = [{"node": name, "exec": ex, "s": round(sec, 4), "share": round(sec / total, 3)}
                            for sec, name, ex in nodes[:10]]
    return row


def spawn(args: argparse.Namespace, src: Path, members: int, studies: int, save: Path | None = None,
          check: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "child", "--src", str(src), "--pack", args.pack, "--shared", args.shared,
           "--member-count", str(members), "--studies", str(studies)]
    if save:
        cmd += ["--save", str(save)]
    if check:
        cmd += ["--check", str(check)]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["load_before"] = round(load, 2)
    row["load_after"] = round(os.getloadavg()[0], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["save", "compare", "child", "labels", "breakdown"])
    ap.add_argument("files", nargs="*", help="labels: two .npz files")
    ap.add_argument("--keep-compiled", action="store_true", help="BlastCt(keep_compiled=True) (this tree's code)")
    ap.add_argument("--pack", default=os.path.join(os.environ.get("FIRSTLOOK_PACKS", str(REPO / "build" / "model-packs")),
                                                   "blast-ct"))
    ap.add_argument("--shared", default=os.environ.get("FIRSTLOOK_SHARED", str(REPO.parent / "shared")))
    ap.add_argument("--members", type=int, nargs="+", default=[12])
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--baseline", default=None, help="commit whose inference/ is the 'before' (save: default HEAD)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--studies", type=int, default=1)
    ap.add_argument("--member-count", type=int, dest="member_count", help=argparse.SUPPRESS)
    ap.add_argument("--save", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--check", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode == "child":
        args.members = args.member_count
        print(json.dumps(child(args)))
        return
    if args.mode == "breakdown":
        sys.path.insert(0, str(REPO))
        args.member_count = args.members[0]
        print(json.dumps(breakdown(args)))
        return
    if args.mode == "labels":
        import numpy as np

        a, b = (np.load(f) for f in args.files)
        same = bool(np.array_equal(a["labels"], b["labels"]))
        print(json.dumps({"native_labels_identical": same, "differing_voxels": int((a["labels"] != b["labels"]).sum()),
                          "labelled_voxels": [int((a["labels"] > 0).sum()), int((b["labels"] > 0).sum())]}))
        raise SystemExit(0 if same else 1)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.mode == "save":
        tag = _commit(args.baseline or "HEAD")
        src = export_src(tag)  # a frozen copy: this tree may be edited while the run goes on
        for members in args.members:
            target = OUT / f"labels_{tag}_m{members}.npz"
            row = spawn(args, src, members, 1, save=target)
            print(json.dumps(row), flush=True)
        return
    if not args.baseline:
        raise SystemExit("compare needs --baseline <commit>")
    base = _commit(args.baseline)
    variants = {"before": export_src(base), "after": REPO}
    rows = []
    for members in args.members:
        ref = OUT / f"labels_{base}_m{members}.npz"
        for rnd in range(args.rounds):
            order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
            for name in order:
                if not ref.is_file() and name == "before":  # the baseline's own labels become the reference
                    row = spawn(args, variants[name], members, args.studies, save=ref)
                    row["labels_identical"] = True
                else:
                    row = spawn(args, variants[name], members, args.studies, check=ref if ref.is_file() else None)
                row.update(variant=name, round=rnd)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\nbaseline {base} vs this tree ({_commit()} + working copy); min over rounds, s per study")
    print(f"{'members':>7} {'study':>5} {'before s':>9} {'after s':>8} {'ratio':>6} {'RSS before':>10} {'RSS after':>9}"
          f"  labels identical")
    for members in args.members:
        for study in range(args.studies):
            sel = {v: [r for r in rows if r["members"] == members and r["variant"] == v] for v in variants}
            b = min(r["study_s"][study] for r in sel["before"])
            a = min(r["study_s"][study] for r in sel["after"])
            # native labels are what is reported; the split head leaves unsampled grid voxels at 0
            same = all(r.get("labels_identical") for r in sel["after"] + sel["before"])
            print(f"{members:>7} {study + 1:>5} {b:>9.1f} {a:>8.1f} {b / a:>5.2f}x "
                  f"{max(r['peak_rss_gb'] for r in sel['before']):>10.2f} {max(r['peak_rss_gb'] for r in sel['after']):>9.2f}"
                  f"  {same if any('labels_identical' in r for r in sel['after']) else 'no reference'}")
    (OUT / f"compare_{base}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
