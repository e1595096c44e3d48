"""What the viewer reads from the store when a series is opened: the study, its series and
results, and the series' geometry (headers only), plus the evidence once it has been read.

Blocking: run it on a task thread, never on the GUI thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from app.core.results import AnalysisResult
from app.core.service_api import StudyReader
from app.core.store import SeriesRecord, StudyRecord
from ui.viewing.image_loader import SeriesGeometry, read_series_geometry
from ui.viewing.overlays import CamOverlay, LabelOverlay


@dataclass
class OpenedSeries:
    """One series of one study as the viewer shows it."""

    study: StudyRecord | None
    series: SeriesRecord
    all_series: list[SeriesRecord]
    results: dict[str, AnalysisResult]
    geometry: SeriesGeometry
    result: AnalysisResult | None
    cam: CamOverlay | None = None
    labels: LabelOverlay | None = None
    overlay_note: str = ""
    started: float = field(default_factory=time.perf_counter)


def prepare_series(store: StudyReader, study_uid: str, series_uid: str | None) -> OpenedSeries:
    """Headers and the result record, no overlay yet (a 300-slice label volume takes longer to
    inflate than the first image takes to show)."""
    started = time.perf_counter()
    all_series = store.list_series(study_uid)
    if not all_series:
        raise ValueError("this study has no stored series")
    results = {r.series_uid: r for r in store.results_for_study(study_uid)}
    series = next((s for s in all_series if s.series_uid == series_uid), None)
    if series is None:  # the analysed series first: that is where the evidence is
        series = next((s for s in all_series if (r := results.get(s.series_uid)) and r.status == "done"),
                      all_series[0])
    geometry = read_series_geometry(store.series_files(series.series_uid))
    return OpenedSeries(study=store.get_study(study_uid), series=series, all_series=all_series, results=results,
                        geometry=geometry, result=results.get(series.series_uid), started=started)
