"""Bringing index and files back into agreement after a crash, a power cut or a lost index.

The files are the truth (each was fsynced under its final name before it was acknowledged);
the index is rebuilt or completed from them, never the other way round.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from app.core.store.errors import InvalidDataset
from app.core.store.index import INDEX_FILE, Index, is_healthy
from app.core.store.part10 import read_header
from app.core.store.storage_area import StorageArea, sha256_file

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, area: StorageArea, index: Index) -> None:
        self.area = area
        self.index = index

    def reindex(self) -> int:
        """Rebuild the instance index from the files; results and jobs are kept."""
        with self.index.write_lock:
            self.index.forget_instances()
            count = 0
            for path in self.area.instance_files():
                count += self.index_file(path, "reindex: ")
            self.index.forget_empty_series_and_studies()
            return count

    def index_file(self, path: Path, context: str = "") -> int:
        """Index one stored file found on disk; 0 (and a logged reason) if it is not a valid
        instance at the path its UIDs give, in which case it is left in place untouched."""
        try:
            header = read_header(path)
        except InvalidDataset as exc:
            log.error("%s%s is not a readable instance (%s); left in place", context, path, exc)
            return 0
        if path != self.area.instance_path(header):
            log.error("%s%s does not match its UIDs; left in place", context, path)
            return 0
        st = path.stat()
        self.index.record_instance(header, self.area.relative(path), sha256_file(path), st.st_size, "", "",
                                   st.st_mtime)
        return 1

    def adopt_unindexed(self) -> int:
        """Index instance files that are on disk but not in the index (a power cut after the
        file was fsynced but before the index reached disk). Cheaper than ``reindex``: the
        existing rows, with their sending AE and arrival times, are kept."""
        with self.index.write_lock:
            known = self.index.indexed_paths()
            count = 0
            for path in self.area.instance_files():
                if self.area.relative(path) in known:
                    continue
                count += self.index_file(path)
            if count:
                log.warning("indexed %d instance file(s) the index did not know about", count)
            return count

    def reconcile_superseded(self) -> int:
        """After an unclean stop: a superseded copy without a ``replacements`` row is the trace
        of a replacement the crash interrupted. If the current file already holds the new
        version (crash after the rename, before the index commit) the index row is corrected
        and the replacement recorded; if it still holds the old version (crash before the
        rename) the extra name of the same bytes is removed. Cheap: only superseded/ is read."""
        with self.index.write_lock:
            recorded = self.index.recorded_superseded_paths()
            fixed = 0
            for kept in self.area.superseded_files():
                rel = self.area.relative(kept)
                parts = kept.name.rsplit(".", 3)  # <sop>.<ms>.<old sha[:12]>.dcm
                if rel in recorded or len(parts) != 4:
                    continue
                row = self.index.instance(parts[0])
                current = self.area.abs_path(row["path"]) if row is not None else None
                if current is None or not current.is_file():
                    continue
                actual = sha256_file(current)
                if actual == row["sha256"]:
                    kept_sha = sha256_file(kept)
                    if kept_sha == actual:
                        kept.unlink()  # the replacement never happened: same bytes as the current file
                        fixed += 1
                        continue
                    # Re-sent under another study/series and its new name already adopted: the old
                    # name (the same file as the superseded copy) is what the crash left behind.
                    stale = [p for p in self.area.studies_dir.glob(f"*/*/{parts[0]}.dcm")
                             if p != current and os.path.samefile(p, kept)]
                    for path in stale:
                        path.unlink()
                    if stale:
                        self.index.record_replacement(
                            (parts[0], kept_sha, actual, rel, current.stat().st_mtime, row["calling_ae"]))
                        fixed += 1
                    continue
                try:
                    header = read_header(current)
                except InvalidDataset as exc:
                    log.error("%s is not a readable instance (%s); left in place", current, exc)
                    continue
                st = current.stat()
                self.index.record_instance(
                    header, self.area.relative(current), actual, st.st_size, row["calling_ae"] or "",
                    row["peer"] or "", st.st_mtime, (parts[0], row["sha256"], actual, rel, st.st_mtime, row["calling_ae"]))
                fixed += 1
            if fixed:
                log.warning("completed %d replacement(s) interrupted by the last stop", fixed)
            return fixed

    def verify(self) -> list[str]:
        """Disagreements between index and files (empty when consistent)."""
        problems: list[str] = []
        indexed = {self.area.abs_path(r["path"]): r["sha256"] for r in self.index.instance_rows()}
        on_disk = set(self.area.instance_files())
        for path in on_disk - set(indexed):
            problems.append(f"file not in index: {self.area.relative(path)}")
        for path, sha in indexed.items():
            if path not in on_disk:
                problems.append(f"indexed file missing: {self.area.relative(path)}")
            elif sha256_file(path) != sha:
                problems.append(f"file does not match its index hash: {self.area.relative(path)}")
        return problems


def set_aside_damaged_index(data_dir: Path) -> None:
    """Rename a damaged index (and its WAL) out of the way, kept for inspection, never deleted."""
    db = Path(data_dir) / INDEX_FILE
    if not db.exists() or is_healthy(db):
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        part = db.with_name(db.name + suffix)
        if part.exists():
            os.replace(part, db.with_name(f"{db.name}{suffix}.damaged-{stamp}"))
    log.warning("index %s was damaged; set aside and rebuilt from the files", db)
