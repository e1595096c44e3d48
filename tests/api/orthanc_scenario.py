"""Scenario run inside a private network namespace (Orthanc binds every address): the same files
go by DCMTK storescu to a real ``firstlook --headless`` and to Orthanc with its DICOMweb plugin,
then the same dicomweb-client queries run against both; the raw DICOM JSON answers are written
to a report the test compares. Usage: ``orthanc_scenario.py REPORT.json WORK_DIR``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from dicomweb_client.api import DICOMwebClient

from app.core.synthetic_dicom import synthetic_cxr, synthetic_head_ct
from tests.support import free_port
from tests.support.api_service import HeadlessService
from tests.support.node_helpers import dcmtk, dcmtk_env, fresh_uids, pydicom_file
from tests.support.orthanc import Orthanc


def make_files(work: Path) -> tuple[list[Path], list[Path]]:
    """(uncompressed files, JPEG baseline files)."""
    files = synthetic_head_ct(work / "ct", n_slices=6, size=64)
    files.append(synthetic_cxr(work / "cxr", size=256))
    files.append(fresh_uids(pydicom_file("CT_small.dcm"), work / "small"))
    return files, [fresh_uids(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"), work / "jpeg")]


def send(aet: str, port: int, plain: list[Path], jpeg: list[Path]) -> None:
    for extra, files in (([], plain), (["-R", "-xy"], jpeg)):
        sent = subprocess.run([dcmtk("storescu"), *extra, "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
                              capture_output=True, text=True, env=dcmtk_env(), timeout=120)
        assert sent.returncode == 0, sent.stderr


def queries(client: DICOMwebClient) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["studies"] = client.search_for_studies()
    out["studies?PatientID"] = client.search_for_studies(search_filters={"PatientID": "SELFTEST"})
    out["studies?ModalitiesInStudy=CT"] = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
    out["studies?StudyDate"] = client.search_for_studies(search_filters={"StudyDate": "19000101-20991231"})
    out["series"] = client.search_for_series()
    for study in out["studies"]:
        s_uid = study["0020000D"]["Value"][0]
        out[f"series:{s_uid}"] = client.search_for_series(study_instance_uid=s_uid)
        for series in out[f"series:{s_uid}"]:
            se_uid = series["0020000E"]["Value"][0]
            instances = client.search_for_instances(study_instance_uid=s_uid, series_instance_uid=se_uid)
            out[f"instances:{s_uid}/{se_uid}"] = instances
            first = instances[0]["00080018"]["Value"][0]
            out[f"metadata:{first}"] = client.retrieve_instance_metadata(s_uid, se_uid, first)
    return out


def main(report: Path, work: Path) -> int:
    plain, jpeg = make_files(work)
    service = HeadlessService(work / "firstlook").start()
    orthanc = Orthanc(work / "orthanc", free_port(), free_port()).start()
    try:
        send("FIRSTLOOK", service.port, plain, jpeg)
        send(orthanc.aet, orthanc.dicom_port, plain, jpeg)
        token = service.users_add("scenario")
        ours = DICOMwebClient(url=f"{service.url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
        reference = DICOMwebClient(url=orthanc.dicomweb_url)
        result = {"files": len(plain) + len(jpeg), "firstlook": queries(ours), "orthanc": queries(reference)}
    finally:
        orthanc.stop()
        service.stop()
    report.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
