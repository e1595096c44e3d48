"""Head CT: SEG + SR + key image on the real gantry-tilted series, valid and round-tripping."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from app.core.models import default_specs
from app.core.models.blast_ct import CLASSES
from app.core.pacs_objects import build_result_objects
from app.core.synthetic_dicom import synthetic_head_ct
from tests.pacs_objects.conftest import blobs, dciodvfy, dsrdump, head_result, save, slices_along_normal

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def place_frames_by_geometry(seg_path: Path, source_headers: list[pydicom.Dataset]) -> np.ndarray:
    """Rebuild the label volume from the SEG's frames using only each frame's own position,
    orientation and source reference (class value from the segment's label)."""
    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    shared_iop = np.array(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                          .ImageOrientationPatient, dtype=float)
    value_of = {int(s.SegmentNumber): 1 + [c.key for c in CLASSES].index(s.SegmentLabel.rsplit("(", 1)[1][:-1])
                for s in seg.SegmentSequence}
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in source_headers])
    volume = np.zeros((len(source_headers), int(seg.Rows), int(seg.Columns)), dtype=np.uint8)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        index = int(np.argmin(np.linalg.norm(positions - ipp, axis=1)))
        assert np.allclose(positions[index], ipp, atol=1e-3), "a frame lies on no source slice"
        source = source_headers[index]
        assert np.allclose(shared_iop, np.array(source.ImageOrientationPatient, dtype=float), atol=1e-6)
        derivation = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert derivation.ReferencedSOPInstanceUID == source.SOPInstanceUID
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        assert not np.any(volume[index][frame > 0]), "two segments claim one voxel"
        volume[index][frame > 0] = value_of[number]
    return volume


def test_tilted_head_ct_seg_sr_and_key_image(data_dir: Path, headct_files: list[Path], tmp_path: Path) -> None:
    result, labels = head_result(data_dir, headct_files, blobs)
    objects = build_result_objects(result, headct_files, default_specs(), data_dir)
    assert [o.kind for o in objects] == ["seg", "sr", "sc"]
    assert [o.sop_class_uid for o in objects] == [SEG_CLASS, SR_CLASS, SC_CLASS]
    source = pydicom.dcmread(headct_files[0], stop_before_pixels=True)
    assert len({o.series_uid for o in objects}) == 3 and source.SeriesInstanceUID not in {o.series_uid for o in objects}
    paths = {o.kind: save(o, tmp_path) for o in objects}
    for obj in objects:
        ds = obj.dataset
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert (ds.PatientID, str(ds.PatientName)) == (source.PatientID, str(source.PatientName))
        assert ds.SeriesDescription.startswith("FirstLook AI") and ds.SeriesDescription.endswith("v1")
        assert ds.ContentDate and ds.ContentTime and ds.Manufacturer == "FirstLook"
        errors, _ = dciodvfy(paths[obj.kind])
        assert errors == [], f"{obj.kind}: {errors}"

    # SEG: one segment per present class, codes, frames only where non-empty, exact round trip.
    seg = hd.seg.segread(paths["seg"])
    present = [c for k, c in enumerate(CLASSES, start=1) if (labels == k).any()]
    assert [c.key for c in present] == ["IPH", "oedema", "IVH"]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [f"{c.name} ({c.key})" for c in present]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "50960005"
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "79654002"
    assert seg.SegmentSequence[2].AnatomicRegionSequence[0].CodeValue == "35764002"
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "blast-ct" and algorithm.AlgorithmVersion == "1.0.0"
    non_empty = sum(int((labels == k).any(axis=(1, 2)).sum()) for k in range(1, 5))
    assert int(seg.NumberOfFrames) == non_empty < len(headct_files) * len(present)
    headers = slices_along_normal(headct_files)
    np.testing.assert_array_equal(place_frames_by_geometry(paths["seg"], headers), labels)
    by_source = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[h.SOPInstanceUID for h in headers], combine_segments=True)
    remap = np.array([0] + [1 + CLASSES.index(c) for c in present], dtype=np.uint8)
    np.testing.assert_array_equal(remap[by_source], labels)

    # SR: TID 1500 read back by highdicom, one group per class (+ triage), volumes, segment references.
    sr = hd.sr.srread(paths["sr"])
    report = sr.content
    volumetric = report.get_volumetric_roi_measurement_groups()
    assert len(volumetric) == 3
    assert {g.referenced_segment.referenced_sop_instance_uid for g in volumetric} == {seg.SOPInstanceUID}
    assert sorted(n for g in volumetric for n in g.referenced_segment.referenced_segment_numbers) == [1, 2, 3]
    text = dsrdump(paths["sr"])
    for c in CLASSES:
        assert f"FirstLook {c.key}" in text
    volumes = result.findings["volumes_ml"]
    for group in volumetric:
        measured = {m.name.meaning: m.value for m in group.get_measurements()}
        key = group.tracking_identifier.split(":")[0].removeprefix("FirstLook ")
        assert measured["Volume"] == pytest.approx(volumes[key], rel=1e-6)
        assert measured["Number of slices involved"] == result.findings["slices_involved"][key]
    assert '"Priority")=(103391001,SCT,"Urgent")' in text

    # Key image: the slice with the most haemorrhage, outlined in colour, legend below.
    sc = pydicom.dcmread(paths["sc"])
    assert hd.imread(paths["sc"]).get_frame(1).shape == (sc.Rows, sc.Columns, 3)   # highdicom reads it too
    haem = np.isin(labels, [1, 2, 4]).sum(axis=(1, 2))
    key_sop = headers[int(np.argmax(haem))].SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == key_sop
    assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
    rgb = sc.pixel_array
    assert np.any(np.all(rgb == CLASSES[0].colour, axis=-1)), "IPH outline colour missing"
    assert np.any(np.all(rgb == CLASSES[2].colour, axis=-1)), "oedema outline colour missing"
    assert not any(s.startswith("UNVALIDATED") for s in (sc.SeriesDescription, sr.SeriesDescription))


def test_no_segment_gives_sr_with_zero_volumes_only(data_dir: Path, headct_files: list[Path], tmp_path: Path) -> None:
    result, _ = head_result(data_dir, headct_files, lambda r, c, n: np.zeros((n, r, c)))
    objects = build_result_objects(result, headct_files, default_specs(), data_dir)
    assert [o.kind for o in objects] == ["sr"]
    path = save(objects[0], tmp_path)
    assert dciodvfy(path)[0] == []
    report = hd.sr.srread(path).content
    assert report.get_volumetric_roi_measurement_groups() == []
    groups = report.get_image_measurement_groups()
    volumes = {g.tracking_identifier: {m.name.meaning: m.value for m in g.get_measurements()} for g in groups}
    assert sum(1 for v in volumes.values() if "Volume" in v) == 4
    assert all(v["Volume"] == 0 and v["Number of slices involved"] == 0 for v in volumes.values() if "Volume" in v)
    assert '"Priority")=(50811001,SCT,"Routine")' in dsrdump(path)


def test_synthetic_head_phantom(data_dir: Path, tmp_path: Path) -> None:
    files = synthetic_head_ct(tmp_path / "src")
    result, labels = head_result(data_dir, files, blobs)
    objects = build_result_objects(result, files, default_specs(), data_dir)
    assert [o.kind for o in objects] == ["seg", "sr", "sc"]
    paths = {o.kind: save(o, tmp_path) for o in objects}
    for kind, path in paths.items():
        assert dciodvfy(path)[0] == [], kind
    np.testing.assert_array_equal(place_frames_by_geometry(paths["seg"], slices_along_normal(files)), labels)
    assert pydicom.dcmread(paths["sc"]).Columns >= 512  # a 64-pixel phantom is enlarged for the legend
