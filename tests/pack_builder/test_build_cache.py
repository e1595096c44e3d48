"""The content-addressed build cache: its key, its entries and the keep/restore/build order.

Small real files in tmp folders and a tiny fake builder; no model build, no built packs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from inference.pack_builder.build_cache import (
    ENTRY_MANIFEST,
    ENV,
    FILES_DIR,
    KEEP_PER_PACK,
    STALE_SECONDS,
    BuildCache,
    CorruptEntry,
    FileRecord,
    default_root,
    open_build_cache,
)
from inference.pack_builder.build_key import CODE_ROOT, KeyInputs, build_key, code_digest, current_environment
from inference.pack_builder.cached_build import PackJob, Provided, provide_pack

ENVIRONMENT = {"torch": "2.13.0", "nncf": "3.4.0", "openvino": "2026.4.1", "numpy": "2.4.6",
               "python": "3.11.7", "cpu": "Test CPU [FP32 INT8]"}


# -- helpers ---------------------------------------------------------------------------------------

def tree(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def flip_byte(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


class FakeBuilder:
    """Writes a small pack (unique bytes per build, like a real build's timestamps) into ``dest``."""

    def __init__(self, dest: Path, key: str = "k") -> None:
        self.dest = dest
        self.key = key
        self.calls = 0

    def __call__(self) -> Path:
        self.calls += 1
        nonce = os.urandom(8).hex()
        staging = self.dest.parent / f".{self.dest.name}.building"
        (staging / "fp32").mkdir(parents=True)
        (staging / "fp32" / "model.xml").write_text(f"<net build='{nonce}'/>")
        (staging / "fp32" / "model.bin").write_bytes(os.urandom(3000))
        (staging / "cam_weights.npy").write_bytes(b"\x93NUMPY" + os.urandom(100))
        (staging / "manifest.json").write_text(json.dumps({"key": self.key, "nonce": nonce}))
        if self.dest.exists():
            import shutil

            shutil.rmtree(self.dest)
        staging.rename(self.dest)
        return self.dest

    def is_current(self) -> bool:
        manifest = self.dest / "manifest.json"
        return manifest.is_file() and json.loads(manifest.read_text()).get("key") == self.key


KEY = "a" * 64
OTHER_KEY = "b" * 64


def make_job(out: Path, key: str = KEY, builder: FakeBuilder | None = None,
             is_current: Callable[[], bool] | None = None) -> tuple[PackJob, FakeBuilder]:
    builder = builder or FakeBuilder(out / "fake", key)
    job = PackJob(name="fake", dest=out / "fake", is_current=is_current or builder.is_current,
                  key=lambda: key, build=builder)
    return job, builder


@pytest.fixture
def cache(tmp_path: Path) -> BuildCache:
    made = open_build_cache(tmp_path / "cache")
    assert made is not None
    return made


# -- the key ---------------------------------------------------------------------------------------

@pytest.fixture
def key_world(tmp_path: Path) -> dict[str, Path]:
    """A tiny 'shared' folder (a weight, a checkpoint, two data files) and a code tree."""
    shared = tmp_path / "shared"
    (shared / "models").mkdir(parents=True)
    (shared / "data").mkdir()
    (shared / "models" / "model_01.pt").write_bytes(bytes(range(256)) * 4)
    (shared / "models" / "chexnet.pth").write_bytes(b"checkpoint" * 50)
    (shared / "data" / "00000001.png").write_bytes(b"\x89PNG" + bytes(100))
    (shared / "data" / "IM0001.dcm").write_bytes(b"DICM" + bytes(200))
    code = tmp_path / "code"
    (code / "pack_builder").mkdir(parents=True)
    (code / "runner.py").write_text("TILE = 90\n")
    (code / "pack_builder" / "build.py").write_text("RECIPE = 4\n")
    return {"shared": shared, "code": code}


def inputs_of(world: dict[str, Path], *, params: dict | None = None, environment: dict | None = None,
              checkpoint: bool = False, pack: str = "fake") -> KeyInputs:
    shared = world["shared"]
    files = {"weights/model_01.pt": shared / "models" / "model_01.pt",
             "images/00000001.png": shared / "data" / "00000001.png",
             "series/IM0001.dcm": shared / "data" / "IM0001.dcm"}
    if checkpoint:
        files["checkpoint"] = shared / "models" / "chexnet.pth"
    return KeyInputs(pack=pack, files=files, params=params if params is not None else {"recipe": 4, "seed": 0},
                     environment=environment if environment is not None else dict(ENVIRONMENT),
                     code_root=world["code"])


def test_key_is_stable_for_equal_inputs(key_world: dict[str, Path]) -> None:
    first = build_key(inputs_of(key_world))
    assert len(first) == 64 and all(c in "0123456789abcdef" for c in first)
    assert build_key(inputs_of(key_world)) == first
    # dict order of files and params does not matter
    reordered = inputs_of(key_world, params={"seed": 0, "recipe": 4})
    assert build_key(reordered) == first


@pytest.mark.parametrize("change", ["weight byte", "data image byte", "series file byte", "series file added",
                                    "code file byte", "code file added", "recipe", "seed", "checkpoint given",
                                    "pack name"])
def test_every_input_changes_the_key(key_world: dict[str, Path], change: str) -> None:
    before = build_key(inputs_of(key_world))
    shared, code = key_world["shared"], key_world["code"]
    kwargs: dict = {}
    if change == "weight byte":
        flip_byte(shared / "models" / "model_01.pt", 500)
    elif change == "data image byte":
        flip_byte(shared / "data" / "00000001.png", 50)
    elif change == "series file byte":
        flip_byte(shared / "data" / "IM0001.dcm", 150)
    elif change == "series file added":
        (shared / "data" / "IM0002.dcm").write_bytes(b"DICM")
        inputs = inputs_of(key_world)
        files = dict(inputs.files, **{"series/IM0002.dcm": shared / "data" / "IM0002.dcm"})
        after = build_key(KeyInputs(inputs.pack, files, inputs.params, inputs.environment, inputs.code_root))
        assert after != before
        return
    elif change == "code file byte":
        (code / "pack_builder" / "build.py").write_text("RECIPE = 4 \n")
    elif change == "code file added":
        (code / "pack_builder" / "extra.py").write_text("")
    elif change == "recipe":
        kwargs["params"] = {"recipe": 5, "seed": 0}
    elif change == "seed":
        kwargs["params"] = {"recipe": 4, "seed": 1}
    elif change == "checkpoint given":
        kwargs["checkpoint"] = True
    elif change == "pack name":
        kwargs["pack"] = "other"
    assert build_key(inputs_of(key_world, **kwargs)) != before


def test_checkpoint_bytes_change_the_key(key_world: dict[str, Path]) -> None:
    before = build_key(inputs_of(key_world, checkpoint=True, params={"recipe": 4, "seed": None}))
    flip_byte(key_world["shared"] / "models" / "chexnet.pth", 7)
    assert build_key(inputs_of(key_world, checkpoint=True, params={"recipe": 4, "seed": None})) != before


@pytest.mark.parametrize("library", sorted(ENVIRONMENT))
def test_every_library_version_and_the_cpu_change_the_key(key_world: dict[str, Path], library: str) -> None:
    before = build_key(inputs_of(key_world))
    changed = dict(ENVIRONMENT, **{library: ENVIRONMENT[library] + ".1"})
    assert build_key(inputs_of(key_world, environment=changed)) != before


def test_code_digest_reads_only_python_sources(key_world: dict[str, Path]) -> None:
    code = key_world["code"]
    before = code_digest(code)
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "runner.cpython-311.pyc").write_bytes(b"\x00" * 10)
    (code / "notes.txt").write_text("not code")
    assert code_digest(code) == before
    (code / "runner.py").rename(code / "runner2.py")  # a move is a change
    assert code_digest(code) != before


def test_default_code_root_is_the_whole_inference_package() -> None:
    assert CODE_ROOT.name == "inference"
    assert (CODE_ROOT / "pack_builder" / "build_key.py").is_file()  # the builder
    assert (CODE_ROOT / "blastct.py").is_file()  # the runtime it uses for the gates


def test_current_environment_names_libraries_python_and_cpu() -> None:
    env = current_environment()
    assert set(env) == {"torch", "nncf", "openvino", "numpy", "python", "cpu"}
    assert all(isinstance(v, str) and v for v in env.values())


# -- the real packs' key inputs (imports the builders: a few seconds) ----------------------------

def _fake_shared(root: Path) -> Path:
    shared = root / "shared"
    blast = shared / "models" / "blast-ct"
    blast.mkdir(parents=True)
    for i in range(1, 13):
        (blast / f"model_{i:02d}.pt").write_bytes(f"weights {i}".encode())
    series = shared / "data" / "headct" / "dcm_qa_ct_GE_HiSpeed_head" / "dicom"
    series.mkdir(parents=True)
    for i in range(3):
        (series / f"IM{i:04d}.dcm").write_bytes(f"slice {i}".encode())
    images = shared / "data" / "cxr" / "images"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"0000000{i}_000.png").write_bytes(f"png {i}".encode())
    return shared


def test_blastct_key_covers_every_weight_and_series_file(tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    from inference.pack_builder import blastct_build

    shared = _fake_shared(tmp_path)
    inputs = blastct_build.cache_key_inputs(shared, ENVIRONMENT)
    assert sorted(k for k in inputs.files if k.startswith("weights/")) == [f"weights/model_{i:02d}.pt"
                                                                         for i in range(1, 13)]
    assert sorted(k for k in inputs.files if k.startswith("series/")) == [f"series/IM{i:04d}.dcm" for i in range(3)]
    assert inputs.params["recipe"] == blastct_build.RECIPE
    before = build_key(inputs)
    flip_byte(shared / "models" / "blast-ct" / "model_07.pt")
    assert build_key(blastct_build.cache_key_inputs(shared, ENVIRONMENT)) != before
    after_weight = build_key(blastct_build.cache_key_inputs(shared, ENVIRONMENT))
    flip_byte(shared / "data" / "headct" / "dcm_qa_ct_GE_HiSpeed_head" / "dicom" / "IM0001.dcm")
    assert build_key(blastct_build.cache_key_inputs(shared, ENVIRONMENT)) != after_weight


def test_chexnet_key_covers_images_and_checkpoint_or_seed(tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    from inference.pack_builder import chexnet_build

    shared = _fake_shared(tmp_path)
    seeded = chexnet_build.cache_key_inputs(shared, ENVIRONMENT)
    assert sorted(seeded.files) == [f"images/0000000{i}_000.png" for i in range(3)]
    assert seeded.params["seed"] == 0 and seeded.params["builder_revision"] == chexnet_build.BUILDER_REVISION
    keys = {build_key(seeded), build_key(chexnet_build.cache_key_inputs(shared, ENVIRONMENT, seed=1))}
    checkpoint = tmp_path / "chexnet.pth.tar"
    checkpoint.write_bytes(b"trained")
    with_checkpoint = chexnet_build.cache_key_inputs(shared, ENVIRONMENT, checkpoint=checkpoint)
    assert with_checkpoint.files["checkpoint"] == checkpoint and with_checkpoint.params["seed"] is None
    keys.add(build_key(with_checkpoint))
    flip_byte(checkpoint)
    keys.add(build_key(chexnet_build.cache_key_inputs(shared, ENVIRONMENT, checkpoint=checkpoint)))
    flip_byte(shared / "data" / "cxr" / "images" / "00000001_000.png")
    keys.add(build_key(seeded))
    assert len(keys) == 5


# -- entries: hit, miss, corrupt, partial ----------------------------------------------------------

def test_cold_build_is_stored_and_a_hit_restores_exactly_those_files(tmp_path: Path, cache: BuildCache,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    job, builder = make_job(tmp_path / "out1")
    cold = provide_pack(job, cache)
    assert (cold.how, builder.calls, cold.key) == ("built", 1, KEY)
    built = tree(job.dest)
    manifest = cache.read_manifest(KEY)
    assert manifest is not None and manifest.pack == "fake"
    assert {rel: r.sha256 for rel, r in manifest.files.items()} == built

    # A fresh clone: another out folder, same inputs.
    job2, builder2 = make_job(tmp_path / "out2")
    with caplog.at_level(logging.INFO):
        hit = provide_pack(job2, cache)
    assert (hit.how, builder2.calls) == ("restored", 0)
    assert tree(job2.dest) == built
    assert f"restored from build cache {KEY[:12]} in" in caplog.text
    assert sorted(p.name for p in job2.dest.parent.iterdir()) == ["fake"]  # no staging left behind


def test_a_current_pack_is_kept_without_computing_the_key(tmp_path: Path, cache: BuildCache) -> None:
    builder = FakeBuilder(tmp_path / "out" / "fake", KEY)
    builder()
    before = tree(builder.dest)

    def no_key() -> str:
        raise AssertionError("the key of a current pack is never needed")

    job = PackJob("fake", builder.dest, builder.is_current, no_key, builder)
    assert provide_pack(job, cache).how == "current"
    assert builder.calls == 1 and tree(builder.dest) == before and cache.keys() == []


def test_a_hit_replaces_a_stale_pack_and_restores_no_extra_entry_files(tmp_path: Path, cache: BuildCache) -> None:
    job, _ = make_job(tmp_path / "out1")
    provide_pack(job, cache)
    built = tree(job.dest)
    (cache.entry_dir(KEY) / FILES_DIR / "extra.txt").write_text("not recorded")
    (cache.entry_dir(KEY) / FILES_DIR / "fp32" / "stray.bin").write_bytes(b"x")

    stale, _ = make_job(tmp_path / "out2", key="old")
    stale.build()
    (stale.dest / "left-over.txt").write_text("from an old build")
    job2, builder2 = make_job(tmp_path / "out2")
    assert provide_pack(job2, cache).how == "restored"
    assert builder2.calls == 0
    assert tree(job2.dest) == built


@pytest.mark.parametrize("damage", ["flipped byte", "missing file", "truncated file", "no manifest",
                                    "garbled manifest", "manifest of another key", "unsafe path"])
def test_a_damaged_entry_is_never_used_and_is_replaced(tmp_path: Path, cache: BuildCache, damage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    job, _ = make_job(tmp_path / "out1")
    provide_pack(job, cache)
    entry = cache.entry_dir(KEY)
    files = entry / FILES_DIR
    if damage == "flipped byte":
        flip_byte(files / "fp32" / "model.bin", 1234)
    elif damage == "missing file":
        (files / "cam_weights.npy").unlink()
    elif damage == "truncated file":
        data = (files / "fp32" / "model.bin").read_bytes()
        (files / "fp32" / "model.bin").write_bytes(data[:-1])
    elif damage == "no manifest":
        (entry / ENTRY_MANIFEST).unlink()
    elif damage == "garbled manifest":
        (entry / ENTRY_MANIFEST).write_text((entry / ENTRY_MANIFEST).read_text()[:40])
    elif damage == "manifest of another key":
        body = json.loads((entry / ENTRY_MANIFEST).read_text())
        body["key"] = OTHER_KEY
        (entry / ENTRY_MANIFEST).write_text(json.dumps(body))
    elif damage == "unsafe path":
        body = json.loads((entry / ENTRY_MANIFEST).read_text())
        body["files"]["../escaped.txt"] = {"sha256": "0" * 64, "size": 0}
        (entry / ENTRY_MANIFEST).write_text(json.dumps(body))

    out2 = tmp_path / "out2"
    job2, builder2 = make_job(out2)
    with caplog.at_level(logging.WARNING):
        result = provide_pack(job2, cache)
    assert (result.how, builder2.calls) == ("built", 1)  # rebuilt, not restored
    assert "corrupt or partial" in caplog.text
    assert not (out2.parent / "escaped.txt").exists()
    rebuilt = tree(job2.dest)
    assert rebuilt != tree(job.dest)  # the new build's own bytes, nothing from the damaged entry
    manifest = cache.read_manifest(KEY)  # replaced by a good entry of the new build
    assert manifest is not None and {rel: r.sha256 for rel, r in manifest.files.items()} == rebuilt
    job3, builder3 = make_job(tmp_path / "out3")
    assert provide_pack(job3, cache).how == "restored" and tree(job3.dest) == rebuilt


def test_restore_reports_a_miss_for_a_damaged_entry_and_removes_it(tmp_path: Path, cache: BuildCache) -> None:
    src = FakeBuilder(tmp_path / "src" / "fake")()
    assert cache.store(KEY, "fake", src)
    flip_byte(cache.entry_dir(KEY) / FILES_DIR / "manifest.json")
    dest = tmp_path / "out" / "fake"
    assert cache.restore(KEY, dest) is False
    assert not dest.exists() and not cache.entry_dir(KEY).exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # the restore's staging folder is gone
    assert cache.restore(KEY, dest) is False  # now a plain miss


def test_a_restored_pack_the_builder_rejects_is_dropped_and_rebuilt(tmp_path: Path, cache: BuildCache) -> None:
    job, _ = make_job(tmp_path / "out1")
    provide_pack(job, cache)
    # A builder whose own check disagrees with the restored pack (e.g. its inputs say otherwise).
    builder = FakeBuilder(tmp_path / "out2" / "fake", "something else")
    job2 = PackJob("fake", builder.dest, builder.is_current, lambda: KEY, builder)
    assert provide_pack(job2, cache).how == "built" and builder.calls == 1
    manifest = cache.read_manifest(KEY)
    assert manifest is not None and {r: f.sha256 for r, f in manifest.files.items()} == tree(builder.dest)


def test_force_rebuilds_and_refreshes_the_entry(tmp_path: Path, cache: BuildCache) -> None:
    job, builder = make_job(tmp_path / "out")
    provide_pack(job, cache)
    first = tree(job.dest)
    forced = provide_pack(job, cache, force=True)
    assert (forced.how, builder.calls) == ("built", 2)
    second = tree(job.dest)
    assert second != first
    manifest = cache.read_manifest(KEY)
    assert manifest is not None and {r: f.sha256 for r, f in manifest.files.items()} == second


def test_a_different_key_misses(tmp_path: Path, cache: BuildCache) -> None:
    provide_pack(make_job(tmp_path / "out1")[0], cache)
    job, builder = make_job(tmp_path / "out2", key=OTHER_KEY)
    assert provide_pack(job, cache).how == "built" and builder.calls == 1
    assert cache.keys() == sorted([KEY, OTHER_KEY])


# -- crashes and concurrency -----------------------------------------------------------------------

class CrashingCache(BuildCache):
    """Dies (like a killed process) after copying ``after`` files into a new entry."""

    def __init__(self, root: Path, after: int) -> None:
        super().__init__(root)
        object.__setattr__(self, "_left", [after])

    def _copy_in(self, src: Path, dst: Path) -> FileRecord:
        left = self._left  # type: ignore[attr-defined]
        if left[0] == 0:
            raise KeyboardInterrupt("simulated crash while storing")
        left[0] -= 1
        return super()._copy_in(src, dst)


class FullDiskCache(BuildCache):
    def _copy_in(self, src: Path, dst: Path) -> FileRecord:
        raise OSError(28, "No space left on device")


def test_a_crash_while_storing_leaves_no_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    crashing = CrashingCache(root, after=2)
    src = FakeBuilder(tmp_path / "src" / "fake")()
    with pytest.raises(KeyboardInterrupt):
        crashing.store(KEY, "fake", src)
    assert crashing.read_manifest(KEY) is None and crashing.keys() == []
    leftovers = [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1  # what a killed process leaves: never read as an entry

    cache = BuildCache(root)
    job, builder = make_job(tmp_path / "out")
    assert provide_pack(job, cache).how == "built" and builder.calls == 1
    assert cache.keys() == [KEY]
    # An old leftover is swept by the next store's housekeeping; a recent one is left alone.
    old = time.time() - STALE_SECONDS - 60
    os.utime(leftovers[0], (old, old))
    cache.prune("fake")
    assert not leftovers[0].exists()


def test_a_failing_store_still_provides_the_built_pack(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    job, builder = make_job(tmp_path / "out")
    with caplog.at_level(logging.WARNING):
        result = provide_pack(job, FullDiskCache(root))
    assert result.how == "built" and builder.is_current()
    assert "could not store" in caplog.text
    assert list(root.iterdir()) == []  # no entry, no temp folder


def test_a_failing_build_stores_nothing(tmp_path: Path, cache: BuildCache) -> None:
    def broken() -> Path:
        raise RuntimeError("fidelity gate failed")

    job = PackJob("fake", tmp_path / "out" / "fake", lambda: False, lambda: KEY, broken)
    with pytest.raises(RuntimeError, match="fidelity gate"):
        provide_pack(job, cache)
    assert cache.keys() == [] and list(cache.root.iterdir()) == []


def test_concurrent_stores_of_one_key_leave_one_complete_entry(tmp_path: Path, cache: BuildCache) -> None:
    sources = [FakeBuilder(tmp_path / f"src{i}" / "fake")() for i in range(6)]
    trees = [tree(s) for s in sources]
    barrier = threading.Barrier(len(sources))
    results: list[bool] = []

    def store(src: Path) -> None:
        barrier.wait()
        results.append(cache.store(KEY, "fake", src))

    threads = [threading.Thread(target=store, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results)
    assert cache.keys() == [KEY]
    assert [p.name for p in cache.root.iterdir()] == [KEY]  # no temp folders left
    dest = tmp_path / "out" / "fake"
    assert cache.restore(KEY, dest)
    assert tree(dest) in trees  # exactly one writer's files, never a mix


def test_restores_running_while_entries_are_refreshed_never_mix_builds(tmp_path: Path, cache: BuildCache) -> None:
    sources = [FakeBuilder(tmp_path / f"src{i}" / "fake")() for i in range(3)]
    trees = [tree(s) for s in sources]
    assert cache.store(KEY, "fake", sources[0])
    stop = threading.Event()
    restored: list[dict[str, str] | None] = []

    def reader(i: int) -> None:
        n = 0
        while not stop.is_set():
            dest = tmp_path / f"reader{i}" / f"fake{n}"
            restored.append(tree(dest) if cache.restore(KEY, dest) else None)
            n += 1

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in readers:
        t.start()
    for n in range(20):
        cache.store(KEY, "fake", sources[n % 3], replace=True)
    stop.set()
    for t in readers:
        t.join()
    assert restored
    assert all(r is None or r in trees for r in restored)


# -- where the cache lives -------------------------------------------------------------------------

def test_default_root_follows_the_environment(tmp_path: Path) -> None:
    assert default_root({}) is not None and default_root({}).parts[-2:] == ("firstlook", "pack-builds")
    assert default_root({ENV: str(tmp_path / "c")}) == tmp_path / "c"
    for off in ("off", "0", "no", "OFF"):
        assert default_root({ENV: off}) is None


def test_a_new_machine_gets_a_new_cache_folder(tmp_path: Path) -> None:
    made = open_build_cache(tmp_path / "home" / ".cache" / "firstlook" / "pack-builds")
    assert made is not None and made.root.is_dir() and list(made.root.iterdir()) == []


def test_an_unusable_cache_folder_warns_and_builds_without_caching(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        assert open_build_cache(blocker / "pack-builds") is None
    assert "building without it" in caplog.text
    job, builder = make_job(tmp_path / "out")
    result = provide_pack(job, None)
    assert (result.how, result.key, builder.calls) == ("built", None, 1)


def test_resolve_build_cache_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.pack_builder.cli import resolve_build_cache

    monkeypatch.setenv(ENV, str(tmp_path / "from-env"))
    assert resolve_build_cache(tmp_path / "given", True).root == tmp_path / "given"  # type: ignore[union-attr]
    assert resolve_build_cache(None, True).root == tmp_path / "from-env"  # type: ignore[union-attr]
    assert resolve_build_cache(tmp_path / "given", False) is None
    monkeypatch.setenv(ENV, "off")
    assert resolve_build_cache(None, True) is None


def test_old_entries_are_pruned_per_pack(tmp_path: Path, cache: BuildCache) -> None:
    src = FakeBuilder(tmp_path / "src" / "fake")()
    keys = [f"{i:x}" * 64 for i in range(KEEP_PER_PACK + 2)]
    for n, key in enumerate(keys):
        assert cache.store(key, "fake", src)
        stamp = time.time() - 1000 + n  # later stores are more recently used
        os.utime(cache.entry_dir(key) / ENTRY_MANIFEST, (stamp, stamp))
    other = "f" * 64
    assert cache.store(other, "other-pack", src)
    cache.prune("fake")
    assert cache.keys() == sorted(keys[-KEEP_PER_PACK:] + [other])


def test_bad_keys_are_refused(cache: BuildCache) -> None:
    for bad in ("../x", "A" * 64, "a" * 63, ""):
        with pytest.raises(ValueError):
            cache.entry_dir(bad)


def test_entry_manifest_rejects_nonsense() -> None:
    from inference.pack_builder.build_cache import EntryManifest

    for text in ("[]", "{}", json.dumps({"schema": 1, "key": KEY, "pack": "p", "created": "", "files": {}}),
                 json.dumps({"schema": 9, "key": KEY, "pack": "p", "created": "", "files": {"a": {}}})):
        with pytest.raises(CorruptEntry):
            EntryManifest.from_json(text)


def test_provided_records_the_source(tmp_path: Path, cache: BuildCache) -> None:
    result = provide_pack(make_job(tmp_path / "out")[0], cache)
    assert isinstance(result, Provided) and result.path == tmp_path / "out" / "fake" and result.seconds >= 0
