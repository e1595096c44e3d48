"""`firstlook` as an IT admin uses it: headless run, studies, reindex, bad configuration."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO, free_port
from tests.support.node_helpers import dcmtk, dcmtk_env, fresh_uids, pydicom_file


def firstlook(*args: str, config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "--config", str(config), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "firstlook.toml"  # absent: defaults + command line


def test_headless_receives_from_storescu_and_stops_cleanly_on_sigterm(tmp_path: Path, config_file: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--config", str(config_file), "--headless", "--data-dir", str(data),
         "--port", str(port), "--api-port", str(free_port()), "--allow-ae", "CT01", "--quiet-period", "1", "--packs-dir", str(tmp_path / "packs"),
         "--min-free-mb", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from pydicom.uid import generate_uid

        study_uid = generate_uid()
        files = [fresh_uids(pydicom_file("CT_small.dcm"), tmp_path / "in", study=study_uid) for _ in range(3)]
        deadline = time.monotonic() + 30
        while True:  # wait until it answers C-ECHO
            echo = subprocess.run([dcmtk("echoscu"), "-aet", "CT01", "-aec", "FIRSTLOOK", "127.0.0.1", str(port)],
                                  capture_output=True, env=dcmtk_env())
            if echo.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert echo.returncode == 0
        sent = subprocess.run([dcmtk("storescu"), "-aet", "CT01", "-aec", "FIRSTLOOK", "127.0.0.1", str(port),
                               *map(str, files)], capture_output=True, text=True, env=dcmtk_env(), timeout=60)
        assert sent.returncode == 0, sent.stderr
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "NO CALLING-AE ALLOW-LIST" not in err  # an allow-list was given
    assert "SIGTERM" in err and "stopped cleanly" in err
    assert "Traceback" not in err
    listed = firstlook("--data-dir", str(data), "studies", "--json", config=config_file)
    assert listed.returncode == 0, listed.stderr
    (study,) = json.loads(listed.stdout)
    assert study["study_uid"] == study_uid and study["n_instances"] == 3 and study["calling_ae"] == "CT01" and study["patient_id"] == "1CT1"
    assert study["modalities"] == "CT" and study["n_series"] == 3
    assert study["patient_name"] == "CompressedSamples^CT1" and study["received"][:4].isdigit()
    table = firstlook("--data-dir", str(data), "studies", config=config_file)
    assert "CompressedSamples^CT1" in table.stdout and "CT01" in table.stdout


def test_headless_warns_loudly_without_allow_list_and_reports_busy_port(tmp_path: Path, config_file: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = firstlook("--headless", "--data-dir", str(tmp_path / "d"), "--port", str(port),
                         "--api-port", str(free_port()), "--packs-dir",
                         str(tmp_path / "p"), config=config_file, timeout=60)
    assert done.returncode == 1
    assert "NO CALLING-AE ALLOW-LIST" in done.stderr
    assert "cannot listen on" in done.stderr and "Traceback" not in done.stderr


def test_headless_with_an_unusable_data_dir_says_so(tmp_path: Path, config_file: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    done = firstlook("--headless", "--data-dir", str(blocker / "data"), "--port", str(free_port()),
                     "--api-port", str(free_port()),
                     config=config_file, timeout=60)
    assert done.returncode == 1
    assert "cannot open the data directory" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
def test_reindex_rebuilds_a_lost_index(tmp_path: Path, config_file: Path, damage: str) -> None:
    from app.core.store import StudyStore

    data = tmp_path / "data"
    store = StudyStore(data)
    for _ in range(2):
        store.store_instance(fresh_uids(pydicom_file("MR_small_implicit.dcm"), tmp_path / "in"))
    store.close()
    for part in data.glob("index.sqlite3*"):
        part.unlink()
    if damage == "corrupted":
        (data / "index.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 4000)
    done = firstlook("--data-dir", str(data), "reindex", config=config_file)
    assert done.returncode == 0, done.stderr
    assert "reindexed 2 instance(s)" in done.stdout
    listed = json.loads(firstlook("--data-dir", str(data), "studies", "--json", config=config_file).stdout)
    assert sum(s["n_instances"] for s in listed) == 2


@pytest.mark.parametrize("args, toml, needle", [
    (["--port", "70000"], "", "port must be a whole number from 1 to 65535"),
    (["--ae-title", "A" * 17], "", "longer than 16 characters"),
    (["--ae-title", "BAD\\AE"], "", "no backslash"),
    (["--allow-ae", "X" * 20], "", "allow_ae"),
    ([], "colour = 'blue'\n", "unknown key(s) colour"),
    ([], "port = 'eleven'\n", "port must be a whole number"),
    (["--allow-ip", "not-an-ip"], "", "allow_ip entry"),
    (["--quiet-period", "0"], "", "quiet_period_s must be between"),
])
def test_invalid_configuration_exits_2_with_one_sentence(tmp_path: Path, args: list[str], toml: str,
                                                         needle: str) -> None:
    config = tmp_path / "firstlook.toml"
    if toml:
        config.write_text(toml)
    done = firstlook(*args, "--data-dir", str(tmp_path / "d"), "studies", config=config)
    assert done.returncode == 2
    assert needle in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("firstlook: ") and "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()  # nothing was started


def test_global_options_work_after_the_sub_command_too(tmp_path: Path, config_file: Path) -> None:
    """Users type `firstlook studies --data-dir X`; it was a usage error (exit 2)."""
    from app.core.store import StudyStore

    data = tmp_path / "data"
    store = StudyStore(data)
    store.store_instance(fresh_uids(pydicom_file("MR_small_implicit.dcm"), tmp_path / "in"))
    store.close()
    before = firstlook("--data-dir", str(data), "studies", "--json", config=config_file)
    after = firstlook("studies", "--json", "--data-dir", str(data), config=config_file)
    assert before.returncode == 0 and after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout) and len(json.loads(after.stdout)) == 1
    # a value given before the sub-command is kept when the sub-command does not repeat it
    kept = firstlook("--data-dir", str(data), "studies", "--log-level", "WARNING", "--json", config=config_file)
    assert json.loads(kept.stdout) == json.loads(before.stdout)
    reindexed = firstlook("reindex", "--data-dir", str(data), config=config_file)
    assert reindexed.returncode == 0 and "reindexed 1 instance(s)" in reindexed.stdout
    bad = firstlook("studies", "--port", "70000", "--data-dir", str(tmp_path / "d"), config=config_file)
    assert bad.returncode == 2 and "port must be a whole number" in bad.stderr


def test_analyze_json_names_the_files_each_result_came_from(tmp_path: Path, config_file: Path) -> None:
    """Two series in one folder: each result lists its own source files (no packs needed: an MR
    series is not analysed, and says so, which is a result too)."""
    folder = tmp_path / "in"
    mr = [fresh_uids(pydicom_file("MR_small_implicit.dcm"), folder) for _ in range(2)]
    other = fresh_uids(pydicom_file("MR_small_implicit.dcm"), folder / "sub")
    done = firstlook("analyze", str(folder), "--json", "--packs-dir", str(tmp_path / "no-packs"),
                     "--data-dir", str(tmp_path / "d"), config=config_file, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert len(results) == 3  # fresh_uids gives every file its own series
    by_source = {tuple(r["source_paths"]): r for r in results}
    assert set(by_source) == {(str(p),) for p in [*mr, other]}
    assert all(r["status"] == "not_analysed" for r in results)
    text = firstlook("analyze", str(mr[0]), "--packs-dir", str(tmp_path / "no-packs"), config=config_file,
                     timeout=120)
    assert str(mr[0]) in text.stdout
