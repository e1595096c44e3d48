"""WADO-RS frames and metadata on multi-frame files in every encoding (pydicom's test files):
each frame is the decoded frame's pixels, little endian, and metadata points at every frame."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from app.api.dicom_json import instance_metadata
from app.api.wado import read_frames
from tests.support.node_helpers import pydicom_file


@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm", "SC_rgb_rle_2frame.dcm",
                                  "SC_rgb_rle_16bit_2frame.dcm"])
def test_frames_are_the_decoded_frames(name: str) -> None:
    path = pydicom_file(name)
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    n = int(ds.NumberOfFrames)
    frames = read_frames(path, [1, n, 2])
    for number, data in zip([1, n, 2], frames):
        want = np.ascontiguousarray(pixels[number - 1]).astype(pixels.dtype.newbyteorder("<"))
        assert data == want.tobytes(), number
    with pytest.raises(IndexError):
        read_frames(path, [n + 1])


def test_metadata_points_at_every_frame() -> None:
    path = pydicom_file("rtdose.dcm")
    meta = instance_metadata(path, "http://h/dicomweb/studies/1/series/2/instances/3")
    assert meta["7FE00010"]["BulkDataURI"] == "http://h/dicomweb/studies/1/series/2/instances/3/frames/" + \
        ",".join(str(n) for n in range(1, 16))
    assert meta["00280008"]["Value"] == [15]
