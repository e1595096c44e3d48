"""One real ``python -m app --headless`` with its HTTP API for the API tests (no model packs:
the DICOMweb, auth and event paths need none), holding what DCMTK storescu sent it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.core.synthetic_dicom import synthetic_head_ct
from tests.support.api_service import HeadlessService
from tests.support.node_helpers import dcmtk, dcmtk_env, fresh_uids, pydicom_file


@dataclass
class Served:
    service: HeadlessService
    token: str            # a reader's token (firstlook users add reader)
    ct: list[Path]        # a 5-slice synthetic CT series, uncompressed
    small: Path           # pydicom's CT_small (explicit VR little endian)
    jpeg: Path            # a JPEG baseline colour image

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stored_files(self) -> dict[str, Path]:
        """SOP Instance UID -> the file the store keeps."""
        return {p.stem: p for p in (self.service.data_dir / "studies").rglob("*.dcm")}


def storescu(port: int, files: list[Path], *extra: str) -> None:
    sent = subprocess.run([dcmtk("storescu"), *extra, "-aec", "FIRSTLOOK", "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=120)
    assert sent.returncode == 0, sent.stderr


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("api")
    ct = synthetic_head_ct(root / "ct", n_slices=5, size=64)
    small = fresh_uids(pydicom_file("CT_small.dcm"), root / "small")
    jpeg = fresh_uids(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"), root / "jpeg")
    service = HeadlessService(root / "svc").start()
    try:
        storescu(service.port, [*ct, small])
        storescu(service.port, [jpeg], "-R", "-xy")
        yield Served(service, service.users_add("reader"), ct, small, jpeg)
    finally:
        service.stop()
