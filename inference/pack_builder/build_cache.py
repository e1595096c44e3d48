"""A content-addressed cache of whole built model packs, outside the clone.

Why: CI starts from a fresh clone, so anything cached inside it (``build/``) is lost, and a cold
build costs ~25 min on 2 cores. Entries live in the user's cache directory
(``~/.cache/firstlook/pack-builds``; ``FIRSTLOOK_BUILD_CACHE`` names another folder, or ``off``)
under the key of :mod:`inference.pack_builder.build_key`.

Entry format: ``<root>/<key>/files/...`` (the pack's files) and ``<root>/<key>/entry.json``
(relative path -> sha256 and size, the pack name and the key), written last. An entry is
assembled in ``<root>/.tmp-...`` and renamed into place in one step, so a crash or a concurrent
writer never leaves a complete-looking half entry at a key. A restore copies exactly the
recorded files, verifying each hash, into a folder next to the destination and renames it into
place; a missing manifest, a missing file or a wrong hash removes the entry (never used).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from platformdirs import user_cache_dir

log = logging.getLogger(__name__)

ENV = "FIRSTLOOK_BUILD_CACHE"
OFF_VALUES = frozenset({"off", "0", "no", "false", "none"})
ENTRY_MANIFEST = "entry.json"
FILES_DIR = "files"
ENTRY_SCHEMA = 1
KEEP_PER_PACK = 3  # entries kept per pack (most recently used); older ones are pruned
STALE_SECONDS = 24 * 3600  # leftovers of crashed writers (.tmp-*, .old-*, .trash-*) older than this go
_KEY = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class CorruptEntry(Exception):
    """A cache entry that does not hold exactly what its manifest records."""


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int


@dataclass(frozen=True)
class EntryManifest:
    """``entry.json``: what a complete entry holds."""

    key: str
    pack: str
    created: str
    files: Mapping[str, FileRecord]

    def to_json(self) -> str:
        body = {
            "schema": ENTRY_SCHEMA,
            "key": self.key,
            "pack": self.pack,
            "created": self.created,
            "files": {rel: {"sha256": r.sha256, "size": r.size} for rel, r in sorted(self.files.items())},
        }
        return json.dumps(body, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EntryManifest:
        """Parse and validate; anything unexpected raises :class:`CorruptEntry`."""
        try:
            body: Any = json.loads(text)
            if body.get("schema") != ENTRY_SCHEMA:
                raise CorruptEntry(f"entry schema {body.get('schema')!r}, expected {ENTRY_SCHEMA}")
            files = {str(rel): FileRecord(str(r["sha256"]), int(r["size"])) for rel, r in body["files"].items()}
            manifest = cls(key=str(body["key"]), pack=str(body["pack"]), created=str(body["created"]), files=files)
        except CorruptEntry:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CorruptEntry(f"unreadable {ENTRY_MANIFEST}: {exc!r}") from exc
        if not manifest.files:
            raise CorruptEntry(f"{ENTRY_MANIFEST} records no files")
        for rel in manifest.files:
            _check_relative(rel)
        return manifest


def _check_relative(rel: str) -> None:
    """A recorded path must stay inside the entry and the destination."""
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts or any(part in ("", ".", "..") for part in path.parts):
        raise CorruptEntry(f"unsafe path in {ENTRY_MANIFEST}: {rel!r}")


def _check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a build key (64 lowercase hex digits): {key!r}")
    return key


def _unique(parent: Path, prefix: str) -> Path:
    return parent / f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def default_root(env: Mapping[str, str] | None = None) -> Path | None:
    """Where entries live: ``$FIRSTLOOK_BUILD_CACHE`` (``off`` disables), else the user cache dir."""
    env = os.environ if env is None else env
    value = env.get(ENV, "").strip()
    if value.lower() in OFF_VALUES:
        return None
    if value:
        return Path(value).expanduser()
    return Path(user_cache_dir("firstlook")) / "pack-builds"


def open_build_cache(root: Path | None) -> BuildCache | None:
    """The cache at ``root``, created if missing; ``None`` (with a warning) if it cannot be
    written, so the cold path still works on a machine with a read-only or odd home."""
    if root is None:
        return None
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".probe-", dir=root)
        os.rmdir(probe)
    except OSError as exc:
        log.warning("build cache %s is not usable (%s): building without it", root, exc)
        return None
    return BuildCache(root)


@dataclass(frozen=True)
class BuildCache:
    """Entries under ``root``; see the module docstring for the format and its guarantees."""

    root: Path
    keep_per_pack: int = KEEP_PER_PACK

    def entry_dir(self, key: str) -> Path:
        return self.root / _check_key(key)

    # -- reading -------------------------------------------------------------------------------

    def read_manifest(self, key: str) -> EntryManifest | None:
        """The manifest of a complete entry; ``None`` if there is no entry; raises CorruptEntry."""
        entry = self.entry_dir(key)
        if not entry.exists():
            return None
        try:
            text = (entry / ENTRY_MANIFEST).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise CorruptEntry(f"no {ENTRY_MANIFEST} (partial entry)") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptEntry(f"{ENTRY_MANIFEST} unreadable: {exc}") from exc
        manifest = EntryManifest.from_json(text)
        if manifest.key != key:
            raise CorruptEntry(f"{ENTRY_MANIFEST} is for key {manifest.key[:12]}, not {key[:12]}")
        return manifest

    def restore(self, key: str, dest: Path) -> bool:
        """Replace ``dest`` with the entry's recorded files, each verified; False on a miss.

        A corrupt or partial entry is removed and reported as a miss (the caller rebuilds).
        Errors writing ``dest`` propagate: the build would fail there too.
        """
        dest = Path(dest)
        try:
            manifest = self.read_manifest(key)
        except CorruptEntry as exc:
            self._drop_corrupt(key, exc)
            return False
        if manifest is None:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = _unique(dest.parent, f".{dest.name}.restoring")
        try:
            staging.mkdir()
            files = self.entry_dir(key) / FILES_DIR
            for rel, record in sorted(manifest.files.items()):
                self._copy_verified(files / rel, staging / rel, record)
        except CorruptEntry as exc:
            _remove_tree(staging)
            self._drop_corrupt(key, exc)
            return False
        except BaseException:
            _remove_tree(staging)
            raise
        old = _unique(dest.parent, f".{dest.name}.old")
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
        _remove_tree(old)
        try:  # mark as recently used, for pruning
            os.utime(self.entry_dir(key) / ENTRY_MANIFEST)
        except OSError:
            pass
        return True

    def _copy_verified(self, src: Path, dst: Path, record: FileRecord) -> None:
        """Copy one recorded file; a missing, short, long or altered source is CorruptEntry."""
        digest = hashlib.sha256()
        size = 0
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            fin = open(src, "rb")
        except OSError as exc:
            raise CorruptEntry(f"{src.name}: {exc.strerror or exc}") from exc
        with fin, open(dst, "wb") as fout:
            for chunk in iter(lambda: fin.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                fout.write(chunk)
        if size != record.size or digest.hexdigest() != record.sha256:
            raise CorruptEntry(f"{src.name}: {size} bytes sha256 {digest.hexdigest()[:12]}, "
                               f"recorded {record.size} bytes sha256 {record.sha256[:12]}")

    def _drop_corrupt(self, key: str, why: Exception) -> None:
        log.warning("build cache entry %s is corrupt or partial (%s): removed, the pack will be rebuilt",
                    key[:12], why)
        self.discard(key)

    # -- writing -------------------------------------------------------------------------------

    def store(self, key: str, pack: str, src: Path, *, replace: bool = False) -> bool:
        """Put the files of the built pack folder ``src`` in the cache under ``key``.

        An existing entry is kept unless ``replace`` (a concurrent build of the same key stored
        the same thing). Failures (disk full, permissions) are logged and return False: the pack
        is built, only the cache misses out.
        """
        entry = self.entry_dir(key)
        tmp = _unique(self.root, f".tmp-{key[:12]}")
        try:
            records: dict[str, FileRecord] = {}
            (tmp / FILES_DIR).mkdir(parents=True)
            for path in sorted(p for p in Path(src).rglob("*") if p.is_file()):
                rel = path.relative_to(src).as_posix()
                records[rel] = self._copy_in(path, tmp / FILES_DIR / rel)
            if not records:
                raise ValueError(f"{src} holds no files")
            manifest = EntryManifest(key=key, pack=pack, files=records,
                                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            self._write_manifest(tmp, manifest)
            self._publish(tmp, entry, replace)
        except (OSError, ValueError) as exc:
            _remove_tree(tmp)
            log.warning("build cache: could not store %s under %s (%s); continuing without", pack, key[:12], exc)
            return False
        self.prune(pack)
        return True

    def _copy_in(self, src: Path, dst: Path) -> FileRecord:
        """Copy one pack file into an entry being assembled, recording what was written."""
        digest = hashlib.sha256()
        size = 0
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            for chunk in iter(lambda: fin.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                fout.write(chunk)
        return FileRecord(digest.hexdigest(), size)

    def _write_manifest(self, tmp: Path, manifest: EntryManifest) -> None:
        """Written last and flushed, so the entry is complete before it can be published."""
        with open(tmp / ENTRY_MANIFEST, "w", encoding="utf-8") as fh:
            fh.write(manifest.to_json())
            fh.flush()
            os.fsync(fh.fileno())

    def _publish(self, tmp: Path, entry: Path, replace: bool) -> None:
        """Rename the assembled entry to its key: atomic, so readers see all of it or nothing."""
        if replace and entry.exists():
            old = _unique(self.root, f".old-{entry.name[:12]}")
            try:
                entry.rename(old)
            except FileNotFoundError:
                pass
            else:
                _remove_tree(old)
        try:
            tmp.rename(entry)
        except OSError:
            if not entry.exists():
                raise
            _remove_tree(tmp)  # a concurrent writer published this key first; keep theirs
            log.info("build cache entry %s was stored concurrently; keeping the existing one", entry.name[:12])

    # -- housekeeping --------------------------------------------------------------------------

    def discard(self, key: str) -> None:
        """Remove an entry; renamed away first so no half-deleted entry stays at the key."""
        entry = self.entry_dir(key)
        trash = _unique(self.root, f".trash-{key[:12]}")
        try:
            entry.rename(trash)
        except FileNotFoundError:
            return
        _remove_tree(trash)

    def keys(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _KEY.match(p.name))

    def prune(self, pack: str) -> None:
        """Keep the ``keep_per_pack`` most recently used entries of ``pack``; sweep stale leftovers."""
        used: list[tuple[float, str]] = []
        for key in self.keys():
            try:
                manifest = self.read_manifest(key)
            except CorruptEntry:
                continue  # removed when someone asks for it
            if manifest is not None and manifest.pack == pack:
                try:
                    used.append(((self.entry_dir(key) / ENTRY_MANIFEST).stat().st_mtime, key))
                except FileNotFoundError:
                    continue
        for _, key in sorted(used, reverse=True)[self.keep_per_pack:]:
            log.info("build cache: pruning old %s entry %s", pack, key[:12])
            self.discard(key)
        now = time.time()
        for path in self.root.iterdir():
            if path.name.startswith((".tmp-", ".old-", ".trash-")):
                try:
                    if now - path.stat().st_mtime > STALE_SECONDS:
                        _remove_tree(path)
                except FileNotFoundError:
                    pass
