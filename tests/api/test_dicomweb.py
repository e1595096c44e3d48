"""dicomweb-client, unmodified, against a real headless FirstLook that DCMTK storescu filled:
QIDO-RS searches find what was sent, WADO-RS returns the stored files' bytes exactly, metadata
and frames match the files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.api.conftest import Served


@pytest.fixture
def client(served: Served) -> DICOMwebClient:
    return DICOMwebClient(url=f"{served.service.url}/dicomweb", headers=served.headers)


def _uids(found: list[dict], tag: str) -> set[str]:
    return {item[tag]["Value"][0] for item in found}


def test_search_finds_what_storescu_sent(served: Served, client: DICOMwebClient) -> None:
    ct = pydicom.dcmread(served.ct[0], stop_before_pixels=True)
    small = pydicom.dcmread(served.small, stop_before_pixels=True)
    jpeg = pydicom.dcmread(served.jpeg, stop_before_pixels=True)
    studies = client.search_for_studies()
    assert _uids(studies, "0020000D") == {str(ct.StudyInstanceUID), str(small.StudyInstanceUID),
                                          str(jpeg.StudyInstanceUID)}
    by_id = client.search_for_studies(search_filters={"PatientID": str(ct.PatientID)})
    assert _uids(by_id, "0020000D") == {str(ct.StudyInstanceUID)}
    (study,) = by_id
    assert study["00201206"]["Value"] == [1] and study["00201208"]["Value"] == [5]
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00100010"]["Value"][0]["Alphabetic"] == str(ct.PatientName)
    assert study["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{ct.StudyInstanceUID}")
    wildcard = client.search_for_studies(search_filters={"PatientID": str(ct.PatientID)[:3] + "*"})
    assert str(ct.StudyInstanceUID) in _uids(wildcard, "0020000D")
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
    assert len(client.search_for_studies(limit=2)) == 2
    assert len(client.search_for_studies(limit=2, offset=2)) == 1
    ct_only = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
    assert str(jpeg.StudyInstanceUID) not in _uids(ct_only, "0020000D")
    assert "00080070" not in study  # Manufacturer is not a study attribute: only on request
    (with_extra,) = client.search_for_studies(search_filters={"PatientID": str(ct.PatientID)},
                                              fields=["Manufacturer"])
    assert with_extra["00080070"]["Value"] == [ct.Manufacturer]
    assert client.search_for_studies(search_filters={"StudyDate": f"{ct.StudyDate}-"}) != []
    assert client.search_for_studies(search_filters={"StudyDate": "-19991231"}) == []

    (series,) = client.search_for_series(study_instance_uid=str(ct.StudyInstanceUID))
    assert series["0020000E"]["Value"] == [str(ct.SeriesInstanceUID)] and series["00080060"]["Value"] == ["CT"]
    assert series["00201209"]["Value"] == [5]
    assert len(client.search_for_series()) == 3
    instances = client.search_for_instances(study_instance_uid=str(ct.StudyInstanceUID),
                                            series_instance_uid=str(ct.SeriesInstanceUID))
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in served.ct}
    assert _uids(instances, "00080018") == sent
    assert {i["00280010"]["Value"][0] for i in instances} == {64}
    assert _uids(client.search_for_instances(), "00080018") >= sent


def test_retrieve_gives_the_stored_bytes_exactly(served: Served, client: DICOMwebClient) -> None:
    stored = served.stored_files()
    assert len(stored) == 7
    for path in stored.values():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        url = f"{served.service.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
        # The client's own multipart decoder on the raw answer: byte for byte the stored file.
        response = client._http_get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
        (part,) = list(client._decode_multipart_message(response, stream=False))
        assert bytes(part) == path.read_bytes()
        retrieved = client.retrieve_instance(study, series, sop)
        assert retrieved.SOPInstanceUID == sop and retrieved.PixelData == pydicom.dcmread(path).PixelData


def test_retrieve_series_and_study(served: Served, client: DICOMwebClient) -> None:
    ct = pydicom.dcmread(served.ct[0], stop_before_pixels=True)
    series = client.retrieve_series(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID))
    assert sorted(int(d.InstanceNumber) for d in series) == [1, 2, 3, 4, 5]
    stored = served.stored_files()
    for ds in series:
        assert ds.PixelData == pydicom.dcmread(stored[str(ds.SOPInstanceUID)]).PixelData
    assert len(client.retrieve_study(str(ct.StudyInstanceUID))) == 5


def test_metadata_points_pixel_data_to_its_frames(served: Served, client: DICOMwebClient) -> None:
    ds = pydicom.dcmread(served.small)
    meta = client.retrieve_instance_metadata(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                             str(ds.SOPInstanceUID))
    assert meta["00100020"]["Value"] == [ds.PatientID]
    assert meta["00280010"]["Value"] == [ds.Rows]
    assert meta["7FE00010"]["BulkDataURI"].endswith(f"/instances/{ds.SOPInstanceUID}/frames/1")
    assert "00020010" not in meta  # no File Meta in metadata
    series_meta = client.retrieve_series_metadata(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
    assert len(series_meta) == 1


@pytest.mark.parametrize("which", ["small", "jpeg"])
def test_frames_are_the_uncompressed_pixels(served: Served, client: DICOMwebClient, which: str) -> None:
    path = served.small if which == "small" else served.jpeg
    ds = pydicom.dcmread(path)
    (frame,) = client.retrieve_instance_frames(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                                str(ds.SOPInstanceUID), frame_numbers=[1])
    expected = np.ascontiguousarray(ds.pixel_array)
    assert len(frame) == expected.nbytes
    assert np.array_equal(np.frombuffer(frame, dtype=expected.dtype.newbyteorder("<")).reshape(expected.shape), expected)


def test_unknown_resources_are_404_json(served: Served, client: DICOMwebClient) -> None:
    import httpx

    for path in ("/dicomweb/studies/1.2.3/series/4.5.6/instances/7.8.9", "/dicomweb/studies/1.2.3/metadata",
                 "/dicomweb/studies/not-a-uid", "/api/v1/studies/1.2.3", "/nothing/here"):
        answer = httpx.get(served.service.url + path, headers=served.headers)
        assert answer.status_code == 404 and set(answer.json()) == {"error"}, path
