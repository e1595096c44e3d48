"""Tampered model packs through the real app path (``firstlook analyze``): the bad pack is shown
unavailable with a message that says why, nothing runs from it, and a good pack keeps working.

Only the CheXNet pack is built on the test machine, so the "other" pack is a copy of it
dressed up as ``blast-ct``: it is refused before anything would try to run it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO
from tests.support.dicom_factory import make_cxr_dataset, write


def analyze(packs: Path, tmp_path: Path, cxr: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    config = tmp_path / "firstlook.toml"
    config.write_text(f'packs_dir = "{packs}"\ncache_dir = "{tmp_path / "cache"}"\n'
                      f'data_dir = "{tmp_path / "data"}"\nmin_free_mb = 0\n')
    done = subprocess.run([sys.executable, "-m", "app", "--config", str(config), "analyze", "--json", str(cxr)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert "Traceback" not in done.stderr, done.stderr
    return done, json.loads(done.stdout)


def radiograph(tmp_path: Path, cxr_dir: Path) -> Path:
    png = sorted((cxr_dir / "images").glob("*.png"))[0]
    return write(make_cxr_dataset(png, modality="DX"), tmp_path / "in")


def fake_blastct(packs: Path, source: Path) -> Path:
    fake = packs / "blast-ct"
    shutil.copytree(source, fake)
    manifest = json.loads((fake / "manifest.json").read_text())
    manifest.update(name="blast-ct", task="headct-segmentation")
    (fake / "manifest.json").write_text(json.dumps(manifest))
    return fake


def test_manifest_escaping_its_folder_is_refused_and_the_other_model_still_works(
        packs_dir: Path, cxr_dir: Path, tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(packs_dir / "chexnet", packs / "chexnet")
    fake = fake_blastct(packs, packs_dir / "chexnet")
    manifest = json.loads((fake / "manifest.json").read_text())
    manifest["files"]["../chexnet/int8/model.bin"] = manifest["files"]["int8/model.bin"]
    (fake / "manifest.json").write_text(json.dumps(manifest))

    done, body = analyze(packs, tmp_path, radiograph(tmp_path, cxr_dir))
    assert done.returncode == 0, done.stderr
    status = {m["name"]: m for m in body["models"]}
    assert status["blast-ct"]["state"] == "unavailable"
    assert "'../chexnet/int8/model.bin' points outside the pack folder" in status["blast-ct"]["message"]
    assert status["chexnet"]["state"] == "ready"
    (result,) = body["results"]
    assert (result["status"], result["model"]) == ("done", "chexnet")
    assert "points outside the pack folder" in done.stderr  # and logged for the admin


def test_altered_weights_and_a_symlink_out_of_the_pack_are_refused(packs_dir: Path, cxr_dir: Path,
                                                                   tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(packs_dir / "chexnet", packs / "chexnet")
    weights = packs / "chexnet" / "int8" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit, same size
    weights.write_bytes(bytes(data))
    fake = fake_blastct(packs, packs_dir / "chexnet")
    xml = fake / "int8" / "model.xml"
    xml.unlink()
    xml.symlink_to(packs_dir / "chexnet" / "int8" / "model.xml")  # same bytes, same hash, but outside

    done, body = analyze(packs, tmp_path, radiograph(tmp_path, cxr_dir))
    assert done.returncode == 1
    status = {m["name"]: m for m in body["models"]}
    assert status["chexnet"]["state"] == "unavailable"
    assert "file 'int8/model.bin' does not match its SHA-256 (truncated or altered)" in status["chexnet"]["message"]
    assert status["blast-ct"]["state"] == "unavailable"
    assert "'int8/model.xml' points outside the pack folder" in status["blast-ct"]["message"]
    (result,) = body["results"]  # nothing ran from the altered pack: the radiograph fails with the reason
    assert result["status"] == "failed" and "SHA-256" in result["reason"] and result["device"] is None
