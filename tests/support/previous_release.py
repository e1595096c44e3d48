"""A data dir written by an earlier release's own code, for the migration tests.

The release's ``app`` and ``inference`` come from the git history (``git archive``) and a
writer script runs with them in a subprocess, so nothing of the current code touches the data.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO


def release_code(commit: str, target: Path) -> Path:
    """``app`` and ``inference`` of ``commit`` under ``target`` (fails clearly in a shallow clone)."""
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"this test needs commit {commit} from the git history, which this checkout lacks "
                    "(a shallow clone or a source archive?); run it in a full `git clone`")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, "app", "inference"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def written_by_release(commit: str, work: Path, writer: str, spec: dict[str, Any]) -> Path:
    """Run ``writer`` (argv: code root, data dir, spec.json) with ``commit``'s code; its data dir."""
    code = release_code(commit, work / "code")
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "writer.py").write_text(writer)
    data_dir = work / "data"
    run = subprocess.run([sys.executable, str(work / "writer.py"), str(code), str(data_dir), str(work / "spec.json")],
                         cwd=code, env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, f"release {commit} could not write its data dir:\n{run.stderr}"
    return data_dir
