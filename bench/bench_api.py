"""WADO-RS benchmark: a 300-slice 512x512 CT from FirstLook's API vs reading the files vs Orthanc.

    python3 bench/bench_api.py [--slices 300] [--repeats 3]

Generates a synthetic head CT (app.core.synthetic_dicom, explicit VR LE, ~512 KiB a slice),
sends it with DCMTK storescu to a real ``firstlook --headless`` (no model packs, so nothing
analyses while measuring) and to Orthanc with its DICOMweb plugin, then measures, alternating
the three sources in each repeat, with the same client (dicomweb-client) for both servers:

* first image: the first instance of the series streamed (``iter_series``), decoded to pixels;
  also one instance (``retrieve_instance``) and one frame (``retrieve_instance_frames``);
* full series: every instance of ``iter_series`` decoded to pixels;
* files: the same for ``pydicom.dcmread`` of FirstLook's stored files (page cache warm).

Orthanc binds every address, so the whole run re-executes itself inside ``unshare -n``
(loopback only). Prints medians and the FirstLook/files and FirstLook/Orthanc ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.core.synthetic_dicom import synthetic_head_ct  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support.api_service import HeadlessService  # noqa: E402
from tests.support.node_helpers import dcmtk, dcmtk_env  # noqa: E402
from tests.support.orthanc import Orthanc, in_private_network  # noqa: E402


def send(aet: str, port: int, files: list[Path]) -> float:
    started = time.perf_counter()
    done = subprocess.run([dcmtk("storescu"), "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=900)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - started


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure_client(client, study: str, series: str, first_sop: str, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    out: dict[str, float] = {}

    def first_of_stream() -> None:
        stream = client.iter_series(study, series)
        first = next(iter(stream))
        assert first.pixel_array.shape == (512, 512) or first.pixel_array.ndim == 2
        close = getattr(stream, "close", None)
        if close:
            close()

    def one_instance() -> None:
        assert client.retrieve_instance(study, series, first_sop).pixel_array.ndim == 2

    def one_frame() -> None:
        (frame,) = client.retrieve_instance_frames(study, series, first_sop, frame_numbers=[1],
                                                    media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
        assert len(np.frombuffer(frame, dtype=np.uint8)) > 0

    def full() -> None:
        count = 0
        for ds in client.iter_series(study, series):
            assert ds.pixel_array.ndim == 2
            count += 1
        assert count == n, count

    out["first image (series stream)"] = timed(first_of_stream)
    out["first image (one instance)"] = timed(one_instance)
    out["first image (one frame)"] = timed(one_frame)
    out["full series"] = timed(full)
    return out


def measure_files(files: list[Path]) -> dict[str, float]:
    first = timed(lambda: pydicom.dcmread(files[0]).pixel_array)

    def full() -> None:
        for f in files:
            assert pydicom.dcmread(f).pixel_array.ndim == 2

    return {"first image (series stream)": first, "first image (one instance)": first,
            "first image (one frame)": first, "full series": timed(full)}


def run(slices: int, repeats: int) -> int:
    from dicomweb_client.api import DICOMwebClient

    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    files = synthetic_head_ct(work / "ct", n_slices=slices, size=512)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    head = pydicom.dcmread(files[0], stop_before_pixels=True)
    study, series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
    service = HeadlessService(work / "firstlook", quiet_period_s=1.0).start()
    orthanc = Orthanc(work / "orthanc", free_port(), free_port()).start()
    try:
        print(f"{slices} slices of 512x512, {size_mb:.1f} MB; sending to both ...", flush=True)
        t_fl = send("FIRSTLOOK", service.port, files)
        t_or = send(orthanc.aet, orthanc.dicom_port, files)
        print(f"storescu: FirstLook {t_fl:.1f} s, Orthanc {t_or:.1f} s", flush=True)
        time.sleep(3)  # readiness + the (pack-less) analysis settle
        stored = sorted((service.data_dir / "studies").rglob("*.dcm"),
                        key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))
        assert len(stored) == slices
        first_sop = stored[0].stem
        token = service.users_add("bench")
        ours = DICOMwebClient(url=f"{service.url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
        reference = DICOMwebClient(url=orthanc.dicomweb_url)
        results: dict[str, list[dict[str, float]]] = {"files": [], "FirstLook": [], "Orthanc": []}
        measure_client(ours, study, series, first_sop, slices)  # warm-up: page cache, connections
        measure_client(reference, study, series, first_sop, slices)
        for r in range(repeats):
            results["files"].append(measure_files(stored))
            results["FirstLook"].append(measure_client(ours, study, series, first_sop, slices))
            results["Orthanc"].append(measure_client(reference, study, series, first_sop, slices))
            print(f"repeat {r + 1}/{repeats} done", flush=True)
    finally:
        orthanc.stop()
        service.stop()
    metrics = list(results["files"][0])
    med = {src: {m: statistics.median(run[m] for run in runs) for m in metrics} for src, runs in results.items()}
    print(f"\nmedian of {repeats} (seconds; pixels decoded in every case)")
    print("| metric | files | FirstLook WADO-RS | Orthanc DICOMweb | FirstLook/files | FirstLook/Orthanc |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for m in metrics:
        f, o, fl = med["files"][m], med["Orthanc"][m], med["FirstLook"][m]
        print(f"| {m} | {f:.3f} | {fl:.3f} | {o:.3f} | {fl / f:.1f}x | {fl / o:.2f}x |")
    full = med["FirstLook"]["full series"]
    print(f"\nFirstLook full series: {size_mb / full:.0f} MB/s, {slices / full:.0f} images/s")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if os.environ.get("BENCH_API_IN_NAMESPACE") != "1":
        env = dict(os.environ, BENCH_API_IN_NAMESPACE="1", PYTHONPATH=str(REPO))
        return subprocess.run(in_private_network([sys.executable, __file__, *sys.argv[1:]]), env=env).returncode
    return run(args.slices, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
