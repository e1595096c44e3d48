"""Progressive BLAST-CT: which member goes first, and how early the first answer comes.

    # 1. one full 12-member ensemble per case, saving every member's own labels and softmax
    python bench/bench_progressive.py members [--cases real synth-s6 real-noise ...] [--out build/progressive]
    # 2. agreement of each single member with the ensemble, and preliminary vs final priority
    python bench/bench_progressive.py report [--out build/progressive] [--first model_03] [--json]
    #    a case still running (some members saved): each member vs the ensemble of the others
    python bench/bench_progressive.py report-partial --cases real
    # 3. arrival -> preliminary and arrival -> final for the real series pushed by storescu
    python bench/bench_progressive.py arrival [--modes final-only progressive] [--parallel]

``members`` runs the ensemble in the pack's order through ``BlastCt.probabilities(on_member=)``
and writes, per case, ``<out>/<case>/member_XX.npz`` (that member's own native labels and its
softmax on the 1 mm grid in float16) and ``ensemble.npz`` (the exact 12-member native labels,
the per-slice pixel volume); each case is one full ensemble (~6 min for the real series on 2
idle cores). ``report`` reads the saved arrays only: Dice per class of each member against the
ensemble, whether the member's priority equals the ensemble's, and for the chosen first member
the priority after 1, 4 and 8 members (prefix sums of the saved float16 softmax, in the order the
app runs them) against the final one.

Cases: ``real`` (the 28-slice gantry-tilted GE series), ``real-noise`` (+ Gaussian noise sd 8 HU
on the 1 mm grid), ``real-shift`` (+15 HU everywhere), ``real-crop`` (the first and last 4
native slices dropped), ``synth-s<seed>[-n<slices>][-p<pixels>][-shift<HU>]`` (the seeded
``app.core.synthetic_dicom.synthetic_head_ct`` phantom, by default 12 slices of 64 x 64).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REAL = Path(os.environ.get("FIRSTLOOK_SHARED", "/work/shared")) / "data" / "headct" / "dcm_qa_ct_GE_HiSpeed_head" / "dicom"
DEFAULT_CASES = ["real", "synth-s1", "synth-s2-n20-p96", "synth-s3-shift15", "synth-s4-n16-p80", "real-crop",
                 "real-noise", "real-shift", "synth-s5-n24-p112", "synth-s6"]


def packs_dir() -> Path:
    return Path(os.environ.get("FIRSTLOOK_PACKS", REPO / "build" / "model-packs"))


def load_case(case: str, scratch: Path):  # -> CtVolume
    """The CtVolume of a named case (see the module docstring)."""
    from app.core.synthetic_dicom import synthetic_head_ct
    from inference.ct_volume import load_ct_volume

    if case.startswith("real"):
        files = sorted(REAL.glob("*.dcm"))
        if case == "real-crop":
            files = files[4:-4]
        volume = load_ct_volume(files)
        if case == "real-noise":
            rng = np.random.default_rng(14)
            volume.hu = (volume.hu + rng.normal(0, 8, volume.hu.shape)).astype(np.float32)
        elif case == "real-shift":
            volume.hu = volume.hu + np.float32(15.0)
        return volume
    m = re.fullmatch(r"synth-s(\d+)(?:-n(\d+))?(?:-p(\d+))?(?:-shift(-?\d+))?", case)
    if not m:
        raise SystemExit(f"unknown case {case!r}")
    seed, n, size, shift = int(m[1]), int(m[2] or 12), int(m[3] or 64), float(m[4] or 0)
    folder = scratch / case
    files = synthetic_head_ct(folder, n_slices=n, size=size, seed=seed)
    volume = load_ct_volume(files)
    if shift:
        volume.hu = volume.hu + np.float32(shift)
    return volume


def run_members(args: argparse.Namespace) -> None:
    """One full ensemble per case; every member's own labels and softmax saved."""
    import openvino as ov

    from inference.blastct import BlastCt
    from inference.ct_volume import labels_to_native
    from inference.packs import load_pack

    pack = load_pack(packs_dir() / "blast-ct")
    core = ov.Core()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as scratch:
        for case in args.cases:
            target = out / case
            if (target / "ensemble.npz").exists() and not args.again:
                print(f"{case}: already saved", flush=True)
                continue
            target.mkdir(parents=True, exist_ok=True)
            volume = load_case(case, Path(scratch))
            runner = BlastCt(pack, core, "CPU", check_device=False)
            prev = np.zeros((5,) + volume.shape, np.float32)
            t0 = time.perf_counter()
            stamps: list[float] = []

            def on_member(done: int, acc: np.ndarray) -> None:
                own = acc - prev
                prev[...] = acc
                name = runner.member_names[done - 1]
                native = labels_to_native(own.argmax(axis=0).astype(np.uint8), volume)
                np.savez(target / f"member_{done:02d}.npz", name=name, labels=native, probs=own.astype(np.float16))
                stamps.append(time.perf_counter() - t0)
                print(f"{case}: {name} done at {stamps[-1]:.0f} s", flush=True)

            acc, _, _ = runner.probabilities(volume, on_member=on_member)
            native = labels_to_native(acc.argmax(axis=0).astype(np.uint8), volume)
            np.savez(target / "ensemble.npz", labels=native, pixel_ml=volume.native.pixel_volume_ml(),
                     members=np.array(runner.member_names), seconds=np.array(stamps), shape=np.array(volume.shape))
            print(f"{case}: ensemble in {time.perf_counter() - t0:.0f} s", flush=True)
            del acc


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice of two masks; None when both are empty (agreement on absence, not counted)."""
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def priority_of(native: np.ndarray, pixel_ml: np.ndarray, manifest: dict) -> tuple[str, dict[str, float]]:
    """The app's priority for native labels: volumes in mL -> flagged -> the pack's triage rules."""
    from app.core.triage import flagged_labels, priority_from_rules
    from inference.blastct import CLASSES

    per_slice = np.stack([np.bincount(s.ravel(), minlength=5)[:5] for s in native])
    ml = (per_slice * pixel_ml[:, None]).sum(axis=0)
    values = {name: round(float(ml[c]), 2) for c, name in enumerate(CLASSES, start=1)}
    flagged = flagged_labels(values, manifest["thresholds"])
    return priority_from_rules(flagged, manifest["triage"], values), values


def report(args: argparse.Namespace) -> dict:
    """Agreement of single members with the ensemble, and preliminary vs final priority."""
    from inference.blastct import CLASSES, labels_to_native  # noqa: F401  (labels_to_native: see below)

    manifest = json.loads((packs_dir() / "blast-ct" / "manifest.json").read_text())
    out = Path(args.out)
    cases = sorted(p.name for p in out.iterdir() if (p / "ensemble.npz").exists())
    table: dict[str, dict] = {}
    members: list[str] = []
    for case in cases:
        ens = np.load(out / case / "ensemble.npz")
        final_labels, pixel_ml = ens["labels"], ens["pixel_ml"]
        members = [str(m) for m in ens["members"]]
        final_priority, final_values = priority_of(final_labels, pixel_ml, manifest)
        rows = {}
        for k, name in enumerate(members, start=1):
            own = np.load(out / case / f"member_{k:02d}.npz")["labels"]
            d = {cls: dice(own == c, final_labels == c) for c, cls in enumerate(CLASSES, start=1)}
            p, values = priority_of(own, pixel_ml, manifest)
            rows[name] = {"dice": d, "priority": p, "volumes_ml": values,
                          "voxel_agreement": float((own == final_labels).mean())}
        table[case] = {"final_priority": final_priority, "final_volumes_ml": final_values, "members": rows,
                       "seconds": [round(float(s)) for s in ens["seconds"]]}
    # Rank members: mean Dice over (case, class) pairs where either is non-empty, then priority hits.
    scores = {}
    for name in members:
        ds = [v for c in table.values() for v in c["members"][name]["dice"].values() if v is not None]
        hits = sum(c["members"][name]["priority"] == c["final_priority"] for c in table.values())
        real_ds = [v for v in table.get("real", {}).get("members", {}).get(name, {}).get("dice", {}).values()
                   if v is not None]
        scores[name] = {"mean_dice": float(np.mean(ds)) if ds else None, "priority_equal": hits,
                        "real_mean_dice": float(np.mean(real_ds)) if real_ds else None}
    best = max(scores, key=lambda n: (scores[n]["priority_equal"], scores[n]["mean_dice"] or 0.0)) if scores else None
    first = args.first or best
    # Preliminary after k members in the app's order (first member, then the pack's order).
    order = [first] + [m for m in members if m != first] if first else []
    steps = {}
    for case in cases:
        ens = np.load(out / case / "ensemble.npz")
        pixel_ml, shape = ens["pixel_ml"], tuple(int(s) for s in ens["shape"])
        acc = None
        per_k = {}
        for k, name in enumerate(order, start=1):
            probs = np.load(out / case / f"member_{members.index(name) + 1:02d}.npz")["probs"].astype(np.float32)
            acc = probs if acc is None else acc + probs
            if k in (1, 4, 8):
                per_k[k] = _prefix_priority(acc, case, out, pixel_ml, manifest, shape)
        steps[case] = {"after": per_k, "final": table[case]["final_priority"]}
    result = {"cases": cases, "scores": scores, "best_first": best, "first": first, "prefix": steps,
              "table": table}
    if args.json:
        print(json.dumps(result, indent=1))
        return result
    print(f"cases with a saved ensemble: {len(cases)}: {', '.join(cases)}")
    print(f"\n{'member':10} {'mean Dice':>9} {'real Dice':>9} {'prio = final':>12}")
    for name in members:
        s = scores[name]
        md = "-" if s["mean_dice"] is None else f"{s['mean_dice']:.3f}"
        rd = "-" if s["real_mean_dice"] is None else f"{s['real_mean_dice']:.3f}"
        print(f"{name:10} {md:>9} {rd:>9} {s['priority_equal']:>9}/{len(cases)}")
    print(f"\nbest first member: {best}; preliminary order starts with {first}")
    print(f"\n{'case':22} {'final':9} " + " ".join(f"{'after ' + str(k):>9}" for k in (1, 4, 8)))
    for case, s in steps.items():
        print(f"{case:22} {s['final']:9} " + " ".join(f"{s['after'].get(k, '-'):>9}" for k in (1, 4, 8)))
    for k in (1, 4, 8):
        equal = sum(s["after"].get(k) == s["final"] for s in steps.values())
        print(f"preliminary after {k} member(s) = final priority: {equal}/{len(steps)}")
    if "real" in table:
        print("\nreal series, Dice per class vs the ensemble (None: both empty):")
        for name in members:
            r = table["real"]["members"][name]
            print(f"  {name}: " + ", ".join(f"{c} {'-' if v is None else f'{v:.3f}'}" for c, v in r["dice"].items())
                  + f"  -> {r['priority']} {r['volumes_ml']}")
        print(f"  ensemble -> {table['real']['final_priority']} {table['real']['final_volumes_ml']}")
    return result


def _prefix_priority(acc: np.ndarray, case: str, out: Path, pixel_ml: np.ndarray, manifest: dict,
                     shape: tuple[int, int, int]) -> str:
    """Priority of a prefix ensemble: its grid argmax sampled onto the case's native slices."""
    from inference.ct_volume import labels_to_native

    volume = _geometry_cache.get(case)
    if volume is None:
        with tempfile.TemporaryDirectory() as scratch:
            volume = load_case(case, Path(scratch))
        volume.hu = np.empty((0, 0, 0), np.float32)  # keep only the geometry
        _geometry_cache[case] = volume
    grid = acc.argmax(axis=0).astype(np.uint8)
    return priority_of(labels_to_native(grid, volume), pixel_ml, manifest)[0]


_geometry_cache: dict = {}


def report_partial(args: argparse.Namespace) -> None:
    """Cases whose ensemble has not finished (only some members saved): each member against the
    ensemble of the OTHER saved members (leave-one-out), a proxy for the 12-member ensemble."""
    from inference.blastct import CLASSES
    from inference.ct_volume import labels_to_native

    manifest = json.loads((packs_dir() / "blast-ct" / "manifest.json").read_text())
    out = Path(args.out)
    for case in args.cases:
        files = sorted((out / case).glob("member_*.npz"))
        if len(files) < 3:
            print(f"{case}: {len(files)} member(s) saved, too few")
            continue
        with tempfile.TemporaryDirectory() as scratch:
            volume = load_case(case, Path(scratch))
        pixel_ml = volume.native.pixel_volume_ml()
        total = None
        names = []
        for f in files:
            z = np.load(f)
            probs = z["probs"].astype(np.float32)
            total = probs if total is None else total + probs
            names.append(str(z["name"]))
        ref_all = labels_to_native(total.argmax(axis=0).astype(np.uint8), volume)
        p_all, v_all = priority_of(ref_all, pixel_ml, manifest)
        print(f"\n{case}: {len(files)} of 12 members saved ({', '.join(names)}); their ensemble -> {p_all} {v_all}")
        print(f"{'member':10} {'LOO mean Dice':>13} {'prio':>9} {'LOO prio':>9}  Dice per class vs leave-one-out ensemble")
        for f, name in zip(files, names):
            z = np.load(f)
            own_labels = z["labels"]
            loo = labels_to_native((total - z["probs"].astype(np.float32)).argmax(axis=0).astype(np.uint8), volume)
            d = {c: dice(own_labels == k, loo == k) for k, c in enumerate(CLASSES, start=1)}
            ds = [v for v in d.values() if v is not None]
            p_own, v_own = priority_of(own_labels, pixel_ml, manifest)
            p_loo, _ = priority_of(loo, pixel_ml, manifest)
            md = f"{np.mean(ds):.3f}" if ds else "-"
            print(f"{name:10} {md:>13} {p_own:>9} {p_loo:>9}  "
                  + ", ".join(f"{c} {'-' if v is None else f'{v:.3f}'}" for c, v in d.items()) + f"  {v_own}")


def run_arrival(args: argparse.Namespace) -> None:
    """Push the real series with storescu to a headless FirstLook per mode, all modes at the same
    time (side by side under the same load); time arrival -> each stored result."""
    children = []
    for mode in args.modes:
        tmp = tempfile.mkdtemp(prefix=f"arrival-{mode}-")
        cmd = [sys.executable, __file__, "arrival-child", "--mode", mode, "--data-dir", tmp, "--series", args.series]
        children.append((mode, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        if not args.parallel:
            children[-1][1].wait()
    rows = []
    for mode, child in children:
        out, err = child.communicate(timeout=7200)
        if child.returncode != 0:
            print(err[-3000:])
            raise SystemExit(f"{mode} failed")
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'mode':12} {'arrival -> first result':>24} {'arrival -> final':>17}  results as stored")
    for r in rows:
        print(f"{r['mode']:12} {r['first_s']:>22.1f} s {r['final_s']:>15.1f} s  {'; '.join(r['steps'])}")


def arrival_child(args: argparse.Namespace) -> None:
    """Child: a headless service on a free loopback port; storescu sends; results are timed from the
    series' first arrival (the store's clock), as the worklist's "arrival -> result"."""
    import socket

    from app.core.config import Config
    from app.core.events import ResultStored
    from app.core.models import ModelSpecs
    from app.core.models.blast_ct import BlastCtSpec
    from app.core.models.chexnet import ChexnetSpec
    from app.service import Service

    steps = () if args.mode == "final-only" else BlastCtSpec().progressive_steps
    specs = ModelSpecs((ChexnetSpec(), BlastCtSpec(progressive_steps=steps)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Config(data_dir=Path(args.data_dir), cache_dir=Path(args.data_dir) / "cache", port=port,
                    packs_dir=packs_dir(), quiet_period_s=2.0, min_free_mb=0).validate(specs.names)
    service = Service(config, specs=specs)
    seen: list[tuple[float, ResultStored]] = []
    final = __import__("threading").Event()

    def on(event: object) -> None:
        if isinstance(event, ResultStored):
            seen.append((time.time(), event))
            if not event.preliminary:
                final.set()

    service.hub.subscribe(on)
    service.start()
    try:
        service.pipeline.models.loaded.wait(900)
        subprocess.run(["storescu", "-aec", "FIRSTLOOK", "+sd", "127.0.0.1", str(port), args.series],
                       check=True, capture_output=True)
        final.wait(7200)
        series = service.store.list_series(service.store.list_studies()[0].study_uid)[0]
        result = service.store.get_result(series.series_uid)
    finally:
        service.stop()
    arrival = series.first_received
    steps_text = [f"{'prelim ' + str(e.priority) if e.preliminary else 'final ' + e.priority} at {t - arrival:.0f} s"
                  for t, e in seen]
    print(json.dumps({"mode": args.mode, "first_s": round(min(t for t, _ in seen) - arrival, 1),
                      "final_s": round(result.timings["arrival_to_result"], 1),
                      "first_member": BlastCtSpec().first_member,
                      "final_priority": result.priority, "volumes_ml": result.findings.get("volumes_ml"),
                      "steps": steps_text}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["members", "report", "report-partial", "arrival", "arrival-child"])
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    ap.add_argument("--out", default=str(REPO / "build" / "progressive"))
    ap.add_argument("--again", action="store_true", help="recompute cases already saved")
    ap.add_argument("--first", help="report: the first member the app runs (default: the best one)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--modes", nargs="+", default=["final-only", "progressive"])
    ap.add_argument("--parallel", action="store_true", help="arrival: run the modes at the same time")
    ap.add_argument("--series", default=str(REAL), help="arrival: the folder storescu sends (default: the real series)")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.what == "members":
        run_members(args)
    elif args.what == "report":
        report(args)
    elif args.what == "report-partial":
        report_partial(args)
    elif args.what == "arrival":
        run_arrival(args)
    else:
        arrival_child(args)


if __name__ == "__main__":
    main()
