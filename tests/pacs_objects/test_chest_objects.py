"""Chest radiograph: the real (unvalidated) CheXNet result as TID 1500 SR + heatmap key image."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from app.core.models import default_specs
from app.core.pacs_objects import AlgorithmIdentity, build_result_objects, pack_hash
from app.core.pacs_objects.render import BANNER_RGB, banner_height
from inference.packs import load_pack
from tests.pacs_objects.conftest import dciodvfy, dsrdump, save


def test_chexnet_sr_and_key_image(chexnet_run, packs_dir: Path, tmp_path: Path) -> None:
    result, source = chexnet_run.result, chexnet_run.source
    pack = load_pack(packs_dir / "chexnet")
    objects = build_result_objects(result, chexnet_run.files, default_specs(), chexnet_run.data_dir, pack=pack)
    assert [o.kind for o in objects] == ["sr", "sc"]
    paths = {o.kind: save(o, tmp_path) for o in objects}
    for obj in objects:
        ds = obj.dataset
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert (ds.PatientID, str(ds.PatientName)) == ("PACSOBJ-1", "Test^Chest")
        for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID"):
            assert str(ds.get(keyword)) == str(source.get(keyword)), keyword
        assert "FirstLook AI" in ds.SeriesDescription
        errors, _ = dciodvfy(paths[obj.kind])
        assert errors == [], f"{obj.kind}: {errors}"

    probabilities = result.findings["probabilities"]
    flagged = set(result.findings["flagged"])
    report = hd.sr.srread(paths["sr"]).content
    groups = {g.tracking_identifier.removeprefix("FirstLook "): g for g in report.get_image_measurement_groups()}
    assert set(probabilities) <= set(groups)
    for label, p in probabilities.items():
        group = groups[label]
        (probability,) = [m for m in group.get_measurements() if m.name.meaning == "Probability"]
        assert abs(probability.value - p) < 1e-6
        (flag,) = [q for q in group.get_qualitative_evaluations() if q.name.meaning.startswith("Flagged by AI")]
        assert flag.value.meaning == ("Present" if label in flagged else "Absent")
        refs = probability.referenced_images
        assert [r.referenced_sop_instance_uid for r in refs] == [source.SOPInstanceUID]
    text = dsrdump(paths["sr"])
    assert "Pneumothorax" in text and "Probability" in text
    # The algorithm: name, version, pack hash, device, precision.
    assert pack_hash(pack.path) in text and "precision=int8" in text and f"device={result.device}" in text

    sc = pydicom.dcmread(paths["sc"])
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.Columns == source.Columns and sc.Rows > source.Rows   # the radiograph plus legend (and banner)


def test_objects_name_the_pack_the_analysis_ran_with(chexnet_run, packs_dir: Path, tmp_path: Path) -> None:
    """The result records its pack; objects built later (a re-send after the files were
    released) name that pack even when another one is loaded by then (an upgrade)."""
    result = chexnet_run.result
    pack = load_pack(packs_dir / "chexnet")
    assert result.findings["pack_sha256"] == pack_hash(pack.path) and result.findings["precision"] == "int8"
    older = replace(result, findings={**result.findings, "pack_sha256": "ab" * 32, "precision": "fp32"})
    objects = build_result_objects(older, chexnet_run.files, default_specs(), chexnet_run.data_dir, pack=pack)
    text = dsrdump(save(objects[0], tmp_path))
    assert "ab" * 32 in text and "precision=fp32" in text and pack_hash(pack.path) not in text
    # A result of a release that did not record its pack: the loaded pack fills in, as before.
    unrecorded = {k: v for k, v in result.findings.items() if k not in ("pack_sha256", "precision")}
    identity = AlgorithmIdentity.from_result(replace(result, findings=unrecorded), pack)
    assert (identity.pack_hash, identity.precision) == (pack_hash(pack.path), "int8")
    assert AlgorithmIdentity.from_result(replace(result, findings=unrecorded)).pack_hash == "not recorded"


def test_unvalidated_result_says_so_in_all_three_places(chexnet_run, tmp_path: Path) -> None:
    result = chexnet_run.result
    assert result.validated is False, "the shipped CheXNet pack is built from a random init"
    objects = build_result_objects(result, chexnet_run.files, default_specs(), chexnet_run.data_dir)
    paths = {o.kind: save(o, tmp_path) for o in objects}
    for obj in objects:  # SeriesDescription, where a worklist shows it first
        assert obj.dataset.SeriesDescription.startswith("UNVALIDATED NOT FOR DIAGNOSIS")

    sr = hd.sr.srread(paths["sr"])
    assert sr.ConceptNameCodeSequence[0].CodeMeaning.startswith("UNVALIDATED AI - NOT FOR DIAGNOSIS")
    text = dsrdump(paths["sr"])
    assert '"UNVALIDATED AI - NOT FOR DIAGNOSIS - Imaging Measurements"' in text
    comments = [item.TextValue for item in sr.ContentSequence if item.ValueType == "CONTAINER"
                and item.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
                for item in item.ContentSequence]
    assert comments and comments[0].startswith("UNVALIDATED AI OUTPUT - NOT FOR DIAGNOSIS")

    # Burned into the key image: a red banner on top that a validated rendering does not have.
    unvalidated = pydicom.dcmread(paths["sc"]).pixel_array
    validated_identity = replace(AlgorithmIdentity.from_result(result), validated=True)
    clean = build_result_objects(replace(result, validated=True), chexnet_run.files, default_specs(),
                                 chexnet_run.data_dir, identity=validated_identity)
    validated = clean[-1].dataset.pixel_array
    band = banner_height(unvalidated.shape[1])
    assert unvalidated.shape[0] == validated.shape[0] + band
    banner = unvalidated[:band]
    assert np.mean(np.all(banner == BANNER_RGB, axis=-1)) > 0.7          # mostly the red band ...
    assert np.any(np.all(banner == (255, 255, 255), axis=-1))            # ... with white text on it
    np.testing.assert_array_equal(unvalidated[band:], validated)          # the rest is the same picture
    assert not clean[0].dataset.SeriesDescription.startswith("UNVALIDATED")
