"""``firstlook analyze PATH...``: the same pipeline as the node, on files, without a network.

Files go through the real store (in a scratch data dir, so the clinical store is left
alone), then through router, models and triage exactly as a received series would.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from app.core.config import Config
from app.core.events import EventHub
from app.core.model_registry import ModelRegistry
from app.core.models import ModelSpecs, default_specs
from app.core.pipeline import Pipeline
from app.core.store import InvalidDataset, StudyStore

log = logging.getLogger(__name__)


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            log.error("%s: no such file or folder", path)
    return out


def analyze_paths(config: Config, paths: list[Path], as_json: bool = False, device: str | None = None,
                  keep_dir: Path | None = None, specs: ModelSpecs | None = None) -> int:
    scratch = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="firstlook-analyze-"))
    store = StudyStore(scratch)
    skipped: list[dict[str, str]] = []
    series: list[str] = []
    sources: dict[str, list[str]] = {}  # series UID -> the files it came from, as the user named them
    for path in _files(paths):
        try:
            stored = store.store_instance(path, calling_ae="analyze")
        except InvalidDataset as exc:
            skipped.append({"file": str(path), "reason": str(exc)})
            continue
        if stored.header.series_uid not in series:
            series.append(stored.header.series_uid)
        sources.setdefault(stored.header.series_uid, []).append(str(path))
    for series_uid in series:
        store.enqueue_job(series_uid)
    wrapper = None
    if config.inference_backend == "ray":  # models run on a Ray Serve cluster (docs/cluster.md)
        from app.cluster.backend import runtime_wrapper

        wrapper = runtime_wrapper(config)
    models = ModelRegistry(replace(config, data_dir=scratch), device_override=device,
                           specs=specs if specs is not None else default_specs(), runtime_wrapper=wrapper)
    models.load()
    pipeline = Pipeline(config, store, EventHub(), models=models)
    pipeline.run_until_idle()
    results = [store.get_result(uid) for uid in series]
    if as_json:
        body = {"results": [{**asdict(r), "source_paths": sources[r.series_uid]} for r in results if r is not None],
                "skipped": skipped,
                "models": [asdict(s) for s in models.status()], "data_dir": str(scratch)}
        sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")
    else:
        for status in models.status():
            sys.stdout.write(f"model {status.name}: {status.state} {status.device} {status.message}\n")
        for r in results:
            if r is None:
                continue
            total = r.timings.get("total")
            files = sources[r.series_uid]
            where = files[0] + (f" (+{len(files) - 1} more)" if len(files) > 1 else "")
            sys.stdout.write(f"{where}  {r.series_uid}  {r.priority:12} {r.summary}"
                             + (f"  [{r.model} on {r.device}, {total:.2f} s]" if r.model and total else "") + "\n")
        for s in skipped:
            sys.stdout.write(f"skipped {s['file']}: {s['reason']}\n")
    failed = any(r is not None and r.status == "failed" for r in results)
    return 1 if failed or (not results and skipped) else 0
