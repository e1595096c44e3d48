"""An independent implementation as the peer: DCMTK storescu / echoscu against the node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

from tests.support.dicom_factory import write_cxr
from tests.support.node_helpers import (
    PYDICOM_FILES,
    Node,
    dcmtk,
    dcmtk_env,
    fresh_uids,
    pydicom_file,
    start_node,
    stop_node,
)


# storescu proposes uncompressed syntaxes unless told otherwise; one option per syntax.
_PROPOSE = {
    "1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.1": "-xe", "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu", "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr",
}


def storescu(node: Node, files: list[Path], calling: str = "DCMTKSCU") -> subprocess.CompletedProcess[str]:
    """One storescu run per transfer syntax, each proposing exactly that syntax (-R), so
    nothing is converted on the way; returns the first failure or the last run."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID), []).append(f)
    done: subprocess.CompletedProcess[str] | None = None
    for syntax, group in groups.items():
        done = subprocess.run([dcmtk("storescu"), "-R", _PROPOSE[syntax], "-aet", calling, "-aec", node.ae,
                               "127.0.0.1", str(node.port), *map(str, group)],
                              capture_output=True, text=True, timeout=60, env=dcmtk_env())
        if done.returncode != 0:
            return done
    assert done is not None
    return done


def test_echoscu(node: Node) -> None:
    done = subprocess.run([dcmtk("echoscu"), "-aet", "DCMTKSCU", "-aec", node.ae, "127.0.0.1", str(node.port)],
                          capture_output=True, text=True, timeout=30, env=dcmtk_env())
    assert done.returncode == 0, done.stderr


def test_storescu_radiographs_and_compressed_files(node: Node, tmp_path: Path, cxr_dir: Path) -> None:
    pngs = sorted((cxr_dir / "images").glob("*.png"))[:4]
    study = generate_uid()
    files = [
        write_cxr(tmp_path, pngs[0], modality="DX", photometric="MONOCHROME1", study_uid=study),
        write_cxr(tmp_path, pngs[1], modality="CR", photometric="MONOCHROME2", study_uid=study),
        write_cxr(tmp_path, pngs[2], modality="DX", photometric="MONOCHROME2", transfer_syntax=JPEG2000Lossless),
        write_cxr(tmp_path, pngs[3], modality="CR", photometric="MONOCHROME1", transfer_syntax=RLELossless),
    ]
    files += [fresh_uids(pydicom_file(n), tmp_path / "pyd") for n in
              ("MR_small_implicit.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_gdcm.dcm", "MR_small_jpeg_ls_lossless.dcm")]
    done = storescu(node, files)
    assert done.returncode == 0, done.stderr
    assert len(node.store.instance_rows()) == len(files)
    for path in files:
        sent = pydicom.dcmread(path)
        stored = pydicom.dcmread(node.store.studies_dir / sent.StudyInstanceUID / sent.SeriesInstanceUID
                                 / f"{sent.SOPInstanceUID}.dcm")
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert stored.PixelData == sent.PixelData
        for kw in ("PatientID", "PatientName", "Modality", "SOPClassUID", "StudyInstanceUID"):
            assert stored.get(kw) == sent.get(kw)
        assert stored.file_meta.SourceApplicationEntityTitle == "DCMTKSCU"
    cr = pydicom.dcmread(files[3])
    stored_cr = pydicom.dcmread(node.store.studies_dir / cr.StudyInstanceUID / cr.SeriesInstanceUID
                                / f"{cr.SOPInstanceUID}.dcm")
    assert stored_cr.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(stored_cr.pixel_array, cr.pixel_array)
    studies = {s.study_uid: s for s in node.store.list_studies()}
    assert studies[study].n_instances == 2 and studies[study].calling_ae == "DCMTKSCU"
    assert set(studies[study].modalities.split("\\")) == {"DX", "CR"}


def test_storescu_refused_ae_stores_nothing(data_dir: Path, tmp_path: Path) -> None:
    n = start_node(data_dir, allow_ae=["CT01"])
    try:
        path = fresh_uids(pydicom_file("CT_small.dcm"), tmp_path)
        done = storescu(n, [path], calling="STRANGER")
        assert done.returncode != 0
        assert "Calling AE Title Not Recognized" in (done.stdout + done.stderr)
        assert n.store.instance_rows() == []
        assert storescu(n, [path], calling="CT01").returncode == 0
        assert len(n.store.instance_rows()) == 1
    finally:
        stop_node(n)


def test_storescu_every_pydicom_syntax(node: Node, tmp_path: Path) -> None:
    files = [fresh_uids(pydicom_file(n), tmp_path) for n in PYDICOM_FILES]
    done = storescu(node, files)
    assert done.returncode == 0, done.stderr
    syntaxes = {r["transfer_syntax"] for r in node.store.instance_rows()}
    assert syntaxes == set(PYDICOM_FILES.values())
