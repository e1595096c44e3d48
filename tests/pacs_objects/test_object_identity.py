"""UIDs, versions and determinism of the objects for one result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import pytest

from app.core.models import default_specs
from app.core.pacs_objects import build_result_objects
from app.core.synthetic_dicom import synthetic_head_ct
from app.core.uids import derived_uid, is_valid_uid
from tests.pacs_objects.conftest import blobs, dsrdump, head_result, save


def test_derived_uids_are_valid_stable_and_distinct() -> None:
    for root in (None, "1.2.826.0.1.3680043.10.999"):
        a = derived_uid(root, "study", 1, "sr")
        assert is_valid_uid(a) and a == derived_uid(root, "study", 1, "sr") != derived_uid(root, "study", 2, "sr")
    assert derived_uid(None, "x").startswith("2.25.")
    with pytest.raises(ValueError):
        derived_uid("1.02.3", "x")


def test_rebuild_is_identical_and_a_new_version_is_a_new_series(data_dir: Path, tmp_path: Path) -> None:
    files = synthetic_head_ct(tmp_path / "src")
    result, _ = head_result(data_dir, files, blobs)
    first = build_result_objects(result, files, default_specs(), data_dir)
    again = build_result_objects(result, files, default_specs(), data_dir)
    assert [o.sop_instance_uid for o in first] == [o.sop_instance_uid for o in again]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert [save(o, tmp_path / "a").read_bytes() for o in first] == [save(o, tmp_path / "b").read_bytes() for o in again]

    reanalysed = replace(result, created_at=result.created_at + 60)
    second = build_result_objects(reanalysed, files, default_specs(), data_dir, version=2,
                                  supersedes=[o.sop_instance_uid for o in first])
    assert not {o.series_uid for o in first} & {o.series_uid for o in second}
    assert not {o.sop_instance_uid for o in first} & {o.sop_instance_uid for o in second}
    assert all(o.dataset.SeriesDescription.endswith("v2") for o in second)
    assert [o.dataset.SeriesNumber for o in second] == [o.dataset.SeriesNumber + 1 for o in first]
    sr_path = save(next(o for o in second if o.kind == "sr"), tmp_path)
    text = dsrdump(sr_path)
    for old in first:
        assert old.sop_instance_uid in text           # the superseded objects are named in the report
    assert next(o for o in second if o.kind == "sc").dataset.ImageComments.count(first[0].sop_instance_uid) == 1

    root = "1.2.826.0.1.3680043.10.999"
    rooted = build_result_objects(result, files, default_specs(), data_dir, uid_root=root)
    for obj in rooted:
        for uid in (obj.sop_instance_uid, obj.series_uid):
            assert uid.startswith(root + ".") and is_valid_uid(uid)
        assert obj.dataset.file_meta.MediaStorageSOPInstanceUID == obj.sop_instance_uid
    hd.sr.srread(save(rooted[1], tmp_path))


def test_only_done_results_make_objects(data_dir: Path, tmp_path: Path) -> None:
    files = synthetic_head_ct(tmp_path / "src")
    result, _ = head_result(data_dir, files, blobs)
    for status in ("not_analysed", "failed"):
        assert build_result_objects(replace(result, status=status), files, default_specs(), data_dir) == []
