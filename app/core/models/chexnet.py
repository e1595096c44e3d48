"""CheXNet: 14 finding probabilities and class-activation maps for frontal chest radiographs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from app.core.models.overlay import HeatmapOverlay, LabelClass, Overlay
from app.core.models.spec import OverlaySink, ProbeKnobs, ProbeOutcome, Reading
from app.core.series_info import Route, SeriesInfo
from app.core.triage import flagged_labels

CHEXNET = "chexnet"
OVERLAY_FILE = "cam.npz"
LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
# The builder's placeholder operating point (inference.pack_builder.chexnet_build.DEFAULT_THRESHOLD).
DEFAULT_THRESHOLD = 0.5

_LATERAL_VIEWS = {"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"}
_FRONTAL_VIEWS = {"PA", "AP", ""}


@dataclass(frozen=True)
class ChestFilm:
    """The frontal image read from the series, and the file it came from (its SOP UID is stored)."""

    image: Any          # inference.cxr_input.CxrImage
    path: Path


@dataclass(frozen=True)
class ChexnetProbe:
    """Self-test: a synthetic PA film, every probability in 0..1, heatmaps at the image's size."""

    def make_sample(self, directory: Path) -> list[Path]:
        from app.core.synthetic_dicom import synthetic_cxr

        return [synthetic_cxr(directory)]

    def describe_sample(self, files: Sequence[Path]) -> str:
        return "synthetic DX chest radiograph"

    def compile(self, pack: Any, core: Any, device: str, knobs: ProbeKnobs) -> Any:
        from inference.chexnet import Chexnet

        return Chexnet(pack, core, device=device)

    def compiled_detail(self, runtime: Any, seconds: float) -> str:
        return f"INT8 IR compiled in {seconds:.2f} s"

    def exercise(self, runtime: Any, files: Sequence[Path], knobs: ProbeKnobs) -> ProbeOutcome:
        from inference.cxr_input import load_cxr

        try:
            image = load_cxr(files[0])
            times: list[float] = []
            out = None
            for _ in range(1 + max(1, knobs.runs)):
                t0 = time.perf_counter()
                out = runtime.analyse(image)
                times.append(time.perf_counter() - t0)
        finally:
            runtime.close()
        assert out is not None
        probs = np.array(list(out.probabilities.values()))
        if len(probs) != len(out.labels) or not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
            return ProbeOutcome(f"implausible probabilities {probs.round(3).tolist()}", "")
        if out.cam.shape != (len(out.labels), image.rows, image.cols):
            return ProbeOutcome(f"heatmap shape {out.cam.shape} does not match the image {image.rows}x{image.cols}", "")
        median = statistics.median(times[1:])
        return ProbeOutcome(None, (f"{len(out.labels)} probabilities in 0..1, heatmaps {image.rows}x{image.cols}; "
                                   f"median {median * 1000:.0f} ms per radiograph"),
                            first_s=times[0], median_s=median, runs=len(times) - 1, note="per radiograph incl. heatmaps")


@dataclass(frozen=True)
class ChexnetSpec:
    name: str = CHEXNET
    units: str = "probability"
    threshold_max: float | None = 1.0
    default_thresholds: Mapping[str, float] = field(
        default_factory=lambda: {label: DEFAULT_THRESHOLD for label in LABELS})
    self_test: ChexnetProbe | None = field(default_factory=ChexnetProbe)
    label_classes: tuple[LabelClass, ...] = ()

    def route(self, info: SeriesInfo) -> Route | None:
        if info.modality not in ("CR", "DX"):
            return None
        if info.body_part and "CHEST" not in info.body_part and "THORAX" not in info.body_part:
            return Route(None, f"{info.modality} of {info.body_part.lower()}: the chest model reads chest radiographs only")
        if info.view_position in _LATERAL_VIEWS:
            return Route(None, f"lateral view ({info.view_position}): the chest model reads frontal PA/AP views only")
        if info.view_position not in _FRONTAL_VIEWS:
            return Route(None, f"view position {info.view_position}: the chest model reads frontal PA/AP views only")
        return Route(self.name)

    def load_input(self, files: Sequence[Path]) -> ChestFilm:
        from inference.cxr_input import load_cxr
        from inference.errors import NotAnalysable

        reasons: list[str] = []
        for path in files:  # the first frontal image of the series is the one read
            try:
                return ChestFilm(load_cxr(path), path)
            except NotAnalysable as exc:
                reasons.append(exc.reason)
        raise NotAnalysable(reasons[0] if reasons else "no readable chest radiograph in the series")

    def make_runtime(self, pack: Any, core: Any, device: str) -> Any:
        from inference.chexnet import Chexnet

        return Chexnet(pack, core, device=device)

    def run(self, runtime: Any, model_input: ChestFilm) -> Any:
        # The 7x7 CAM is stored; the viewer upsamples the finding it shows (inference.cam).
        return runtime.analyse(model_input.image, full_cam=False)

    def read(self, model_input: ChestFilm, output: Any) -> Reading:
        import pydicom

        sop = pydicom.dcmread(model_input.path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
        probabilities = {k: float(v) for k, v in output.probabilities.items()}
        findings: dict[str, Any] = {"probabilities": probabilities, "sop_uid": str(sop)}
        if getattr(output, "ran_on", None):  # the cluster backend: where it ran, or why it ran locally
            findings["ran_on"] = output.ran_on
        return Reading(values=probabilities, findings=findings,
                       device=output.device, device_note=output.fallback_note,
                       timings={k: float(v) for k, v in output.timings.items()})

    def flagged(self, values: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
        return flagged_labels(values, thresholds)

    def summary(self, values: Mapping[str, float], flagged: Sequence[str]) -> str:
        return ", ".join(f"{label} {values[label]:.2f}" for label in flagged) or "no finding above threshold"

    def write_overlay(self, model_input: ChestFilm, output: Any, sink: OverlaySink) -> Path:
        image = model_input.image
        return sink.save_npz(OVERLAY_FILE, cam_raw=output.cam_raw.astype(np.float32),
                             labels=np.array(list(output.probabilities)), shape=np.array([image.rows, image.cols]))

    def read_overlay(self, path: Path) -> Overlay:
        with np.load(path, allow_pickle=False) as data:
            labels = tuple(str(x) for x in data["labels"])
            if "cam_raw" in data.files:
                raw = np.asarray(data["cam_raw"], dtype=np.float32)
                rows, cols = (int(v) for v in data["shape"])
                if raw.ndim != 3 or raw.shape[0] != len(labels) or rows < 1 or cols < 1:
                    raise ValueError(f"{path.name}: cam_raw {raw.shape} / shape {(rows, cols)} do not match "
                                     f"{len(labels)} labels")
                return HeatmapOverlay(labels=labels, shape=(rows, cols), cam_raw=raw)
            cam = np.asarray(data["cam"], dtype=np.uint8)
        if cam.ndim != 3 or cam.shape[0] != len(labels):
            raise ValueError(f"{path.name}: cam {cam.shape} does not match {len(labels)} labels")
        return HeatmapOverlay(labels=labels, shape=(int(cam.shape[1]), int(cam.shape[2])), cam=cam)
