"""`firstlook --self-test` from source: a healthy install passes with latency per model per
device; a corrupt pack, a missing pack or unreadable TLS files fail and are named."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from app.core.config import Config
from app.commands.selftest import FAIL, PASS, SelfTestOptions, run_cli, synthetic_cxr, synthetic_head_ct
from tests.support import REPO


def _run(config: Config, options: SelfTestOptions) -> tuple[int, str]:
    out = io.StringIO()
    code = run_cli(config, options, write=out.write)
    return code, out.getvalue()


def test_synthetic_samples_go_through_the_real_input_pipeline_and_fit_one_ct_tile(tmp_path: Path) -> None:
    from inference.blastct import native_cells, plan_tiles
    from inference.ct_volume import load_ct_series
    from inference.cxr_input import load_cxr

    image = load_cxr(synthetic_cxr(tmp_path))
    assert image.pixels.shape == (640, 640) and 0.0 <= float(image.pixels.min()) < float(image.pixels.max()) <= 1.0
    volume = load_ct_series(synthetic_head_ct(tmp_path))
    assert volume.hu.max() > 900 and volume.hu.min() < -900  # skull and air survive resampling
    assert len(plan_tiles(native_cells(volume), 90)) == 1  # one tile per member: latency = per-tile cost


def test_healthy_install_passes_with_latency_per_model_and_device(packs_dir: Path, tmp_path: Path) -> None:
    import openvino as ov

    config = Config(data_dir=tmp_path / "data", packs_dir=packs_dir, min_free_mb=0)
    options = SelfTestOptions(chexnet_runs=1, blastct_members=1, report_dir=tmp_path / "logs")
    code, text = _run(config, options)
    assert code == 0, text
    lines = text.splitlines()
    assert lines[-2].startswith("RESULT: PASS"), text
    devices = [d for d in ov.Core().available_devices]
    for device in devices:
        for model in ("chexnet", "blast-ct"):
            assert any(line.startswith(f"PASS  compile {model} on {device}") for line in lines), text
            assert any(line.startswith(f"PASS  run {model} on {device}") for line in lines), text
            row = [line for line in lines if line.split()[:2] == [model, device]]
            assert len(row) == 1, text  # one latency row per model per device
            compile_s, first_s, median_s = (float(v) for v in row[0].split()[2:5])
            assert compile_s > 0 and first_s > 0 and median_s > 0
    for name in ("pack chexnet", "pack blast-ct", "decoder pylibjpeg-libjpeg", "decoder pylibjpeg-openjpeg",
                 "decoder pylibjpeg-rle", "dicom node (loopback)"):
        assert any(line.startswith(f"PASS  {name}") for line in lines), name
    html_files = sorted((tmp_path / "logs").glob("selftest-2*.html"))
    assert len(html_files) == 1 and lines[-1] == f"HTML report: {html_files[0]}"
    body = html_files[0].read_text()
    assert "<b>PASS</b>" in body and "blast-ct" in body and "dicom node (loopback)" in body
    assert (tmp_path / "logs" / "selftest-latest.html").read_text() == body
    assert not (tmp_path / "data").exists()  # the node check stores into a scratch folder


def test_corrupt_and_missing_packs_and_bad_tls_fail_by_name_through_the_cli(packs_dir: Path, tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(packs_dir / "chexnet", packs / "chexnet")
    weights = packs / "chexnet" / "int8" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))  # same size, one byte altered
    config = tmp_path / "firstlook.toml"
    config.write_text(f'packs_dir = "{packs}"\ndata_dir = "{tmp_path / "data"}"\nmin_free_mb = 0\n'
                      f'tls_cert = "{tmp_path / "missing.crt"}"\ntls_key = "{tmp_path / "missing.key"}"\n')
    done = subprocess.run([sys.executable, "-m", "app", "--config", str(config), "--self-test"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "FIRSTLOOK_LOG_DIR": str(tmp_path / "logs"), "HOME": str(tmp_path)})
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    status = {line[6:].split("  ")[0].strip(): line[:4] for line in lines if line[:4] in (PASS, FAIL, "WARN", "INFO")}
    assert status["pack chexnet"] == FAIL and "SHA-256" in next(x for x in lines if "pack chexnet" in x)
    assert status["pack blast-ct"] == FAIL and "not installed" in next(x for x in lines if "pack blast-ct" in x)
    assert status["tls certificates"] == FAIL
    assert status["dicom node (loopback)"] == PASS  # unaffected checks still run and pass
    assert not any(name.startswith(("compile ", "run ")) for name in status)  # nothing runs from a bad pack
    assert lines[-2].startswith("RESULT: FAIL (3 of"), lines[-2]
    assert lines[-2].endswith("tls certificates; pack chexnet; pack blast-ct"), lines[-2]
    assert "Traceback" not in done.stderr
    assert (tmp_path / "logs" / "selftest-latest.html").is_file()


def test_a_device_that_falls_back_to_cpu_fails_its_compile_check(packs_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """CompiledModel quietly falls back to CPU; the self-test must not call that a pass."""
    import inference.chexnet as chexnet

    real = chexnet.Chexnet

    class FallingBack(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.fallback_note = "GPU failed to compile (RuntimeError: no OpenCL); running on CPU"

    monkeypatch.setattr(chexnet, "Chexnet", FallingBack)
    config = Config(data_dir=tmp_path / "data", packs_dir=packs_dir, min_free_mb=0)
    code, text = _run(config, replace(SelfTestOptions(), chexnet_runs=1, blastct_members=1, devices=["CPU"],
                                      report_dir=tmp_path / "logs"))
    assert code == 1
    line = next(x for x in text.splitlines() if "compile chexnet on CPU" in x)
    assert line.startswith(FAIL) and "no OpenCL" in line
    assert "run chexnet on CPU" not in text
    assert text.splitlines()[-2].endswith("compile chexnet on CPU")


def _self_signed(directory: Path, cn: str) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    crt, pem = directory / f"{cn}.crt", directory / f"{cn}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_tls_files_are_checked_as_the_node_loads_them(tmp_path: Path) -> None:
    """A matching pair passes (and the loopback node still runs plain); a key from another
    certificate fails the `tls certificates` check by name."""
    crt, key = _self_signed(tmp_path, "node")
    _, other_key = _self_signed(tmp_path, "other")
    base = Config(data_dir=tmp_path / "data", packs_dir=tmp_path / "no-packs", min_free_mb=0, tls_cert=crt, tls_key=key)
    options = SelfTestOptions(devices=[], report_dir=tmp_path / "logs")
    _, good = _run(base, options)
    line = next(x for x in good.splitlines() if x[6:].startswith("tls certificates"))
    assert line.startswith(PASS) and "TLS port 2762" in line, line
    assert any(x.startswith(f"{PASS}  dicom node (loopback)") for x in good.splitlines()), good
    code, bad = _run(replace(base, tls_key=other_key), options)
    line = next(x for x in bad.splitlines() if x[6:].startswith("tls certificates"))
    assert code == 1 and line.startswith(FAIL) and "does not belong" in line, line
