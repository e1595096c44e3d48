"""docs/architecture.md is where a newcomer starts: every module, package and file it names must
exist, so the map cannot drift from the tree again (it named `app.jobs` and a `quantize.py`
that never existed)."""

from __future__ import annotations

import re

from tests.support import REPO

DOC = REPO / "docs" / "architecture.md"
TOP = ("app", "ui", "inference", "dicom_node", "tests", "bench", "packaging", "docs")


def named_paths(text: str) -> set[str]:
    """Repository paths in `code spans`: `app/core/store/` or `app/core/store/part10.py`, and dotted
    modules such as `app.core.store.part10` (a trailing attribute such as `.StudyStore` is allowed)."""
    names: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        span = span.strip()
        if re.fullmatch(r"(%s)(/[\w.-]+)*/?" % "|".join(TOP), span):
            names.add(span.rstrip("/"))
        elif re.fullmatch(r"(app|ui|inference|dicom_node)(\.\w+)+", span):
            names.add(span)
    return names


def exists(name: str) -> bool:
    if "/" in name or name in TOP:
        return (REPO / name).exists()
    parts = name.split(".")
    base = REPO.joinpath(*parts)
    if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
        return True
    # otherwise a module followed by one name it defines or imports (`app.core.store.StudyStore`)
    module = REPO.joinpath(*parts[:-1])
    source = module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"
    if len(parts) < 2 or not source.is_file():
        return False
    attr = re.escape(parts[-1])
    return re.search(rf"(?m)^\s*(def|class)\s+{attr}\b|^{attr}\s*[:=]|^\s*from \S+ import .*\b{attr}\b",
                     source.read_text()) is not None


def test_every_module_the_architecture_doc_names_exists() -> None:
    names = named_paths(DOC.read_text())
    assert len(names) > 30, "the doc should map the tree"
    missing = sorted(n for n in names if not exists(n))
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


def test_the_checker_catches_a_stale_name() -> None:
    assert not exists("app.jobs") and not exists("inference/pack_builder/quantize.py")
    assert exists("app.core.store.StudyStore") and exists("app/core/store/part10.py")
    assert named_paths("see `app.jobs`, `inference/build/quantize.py` and `x = 1`") == {
        "app.jobs", "inference/build/quantize.py"}
