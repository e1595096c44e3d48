"""A third, test-only model: "toy-mr" marks bright voxels of MR series.

It proves that a model is added by one spec: the pack is a real OpenVINO IR built here at
run time (sigmoid((x - 200) / 20) per voxel) with a real manifest, and nothing outside this
module and the spec collection a test builds knows the model exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from app.core.models import LabelClass, ModelSpecs, OverlaySink, Reading, default_specs
from app.core.models.overlay import Overlay, read_label_volume
from app.core.series_info import Route, SeriesInfo
from app.core.triage import flagged_labels
from tests.support.dicom_factory import make_ct_slice, write

TOY = "toy-mr"
BRIGHT = LabelClass("bright", "bright tissue", (255, 128, 0))  # orange: none of the shipped colours
THRESHOLDS = {"bright": 0.5}
TRIAGE = {"rules": [{"priority": "urgent", "any_of": ["bright"]}], "default": "routine"}
OVERLAY_FILE = "bright.npz"


def build_toy_pack(packs_dir: Path, validated: bool = True) -> Path:
    """A pack folder ``packs_dir/toy-mr`` whose IR maps a [slices, rows, cols] volume to probabilities."""
    import openvino as ov

    from inference.packs import write_manifest

    pack = packs_dir / TOY
    for precision in ("int8", "fp32"):
        x = ov.opset13.parameter(ov.PartialShape([-1, -1, -1]), np.float32, name="volume")
        shifted = ov.opset13.divide(ov.opset13.subtract(x, ov.opset13.constant(np.float32(200.0))),
                                    ov.opset13.constant(np.float32(20.0)))
        y = ov.opset13.sigmoid(shifted)
        y.output(0).get_tensor().set_names({"probability"})
        target = pack / precision / "model.xml"
        target.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(ov.Model([y], [x], "toy"), str(target), compress_to_fp16=False)
    write_manifest(pack, {
        "name": TOY, "version": "0.1.0", "task": "mr-bright-voxels", "validated": validated,
        "members": [{"name": "model", "int8": "int8/model.xml", "fp32": "fp32/model.xml"}],
        "labels": ["bright"], "thresholds": THRESHOLDS, "triage": TRIAGE,
    })
    return pack


@dataclass(frozen=True)
class MrVolume:
    values: np.ndarray            # float32 [slices, rows, cols], rescaled
    sop_uids: tuple[str, ...]


@dataclass
class ToyOutput:
    probability: np.ndarray
    device: str
    fallback_note: str | None
    timings: dict[str, float]


class ToyRuntime:
    def __init__(self, pack: Any, core: Any, device: str) -> None:
        from inference.runner import CompiledModel

        self.pack = pack
        self.model = CompiledModel(core, pack.member_xml("model", "int8"), device)
        self.device = self.model.device
        self.fallback_note = self.model.fallback_note

    def analyse(self, volume: MrVolume) -> ToyOutput:
        out = self.model.infer({"volume": volume.values})
        return ToyOutput(np.asarray(out["probability"]), self.device, self.fallback_note, {"infer": 0.0})


@dataclass(frozen=True)
class ToyMrSpec:
    name: str = TOY
    units: str = "probability"
    threshold_max: float | None = 1.0
    default_thresholds: Mapping[str, float] = field(default_factory=lambda: dict(THRESHOLDS))
    self_test: None = None
    label_classes: tuple[LabelClass, ...] = (BRIGHT,)

    def route(self, info: SeriesInfo) -> Route | None:
        return Route(self.name) if info.modality == "MR" else None

    def load_input(self, files: Sequence[Path]) -> MrVolume:
        import pydicom

        from inference.errors import NotAnalysable

        slices = sorted((pydicom.dcmread(f) for f in files), key=lambda ds: int(ds.InstanceNumber))
        if not slices:
            raise NotAnalysable("no MR slices")
        values = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
        return MrVolume(values.astype(np.float32), tuple(str(ds.SOPInstanceUID) for ds in slices))

    def make_runtime(self, pack: Any, core: Any, device: str) -> ToyRuntime:
        return ToyRuntime(pack, core, device)

    def run(self, runtime: ToyRuntime, model_input: MrVolume) -> ToyOutput:
        return runtime.analyse(model_input)

    def read(self, model_input: MrVolume, output: ToyOutput) -> Reading:
        peak = float(output.probability.max())
        return Reading(values={"bright": peak}, findings={"peak": {"bright": peak}},
                       device=output.device, device_note=output.fallback_note, timings=output.timings)

    def flagged(self, values: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
        return flagged_labels(values, thresholds)

    def summary(self, values: Mapping[str, float], flagged: Sequence[str]) -> str:
        return ", ".join(f"{label} {values[label]:.2f}" for label in flagged) or "nothing bright"

    def write_overlay(self, model_input: MrVolume, output: ToyOutput, sink: OverlaySink) -> Path:
        labels = (output.probability >= 0.5).astype(np.uint8)
        return sink.save_npz(OVERLAY_FILE, labels=labels, sop_uids=np.array(model_input.sop_uids),
                             classes=np.array([BRIGHT.key]))

    def read_overlay(self, path: Path) -> Overlay:
        return read_label_volume(path, {BRIGHT.key: BRIGHT}, (BRIGHT.key,))


def specs_with_toy() -> ModelSpecs:
    """The shipped models plus the toy: all a test does to register a third model."""
    return default_specs().with_spec(ToyMrSpec())


def mr_series(tmp: Path, modality: str, bright: bool, n: int = 4, patient: str = "P1") -> tuple[list[Path], str]:
    """``n`` 16x16 slices written under ``tmp``; a bright 4x4 square on slices 1 and 2 when ``bright``."""
    paths: list[Path] = []
    study = series = None
    for k in range(n):
        hu = np.full((16, 16), 40.0)
        if bright and k in (1, 2):
            hu[6:10, 6:10] = 400.0
        ds = make_ct_slice(hu, (0.0, 0.0, 5.0 * k), instance=k + 1, study_uid=study, series_uid=series,
                           modality=modality, body_part="BRAIN" if modality == "MR" else "HEAD", patient_id=patient)
        study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
        paths.append(write(ds, tmp / series))
    assert series is not None
    return paths, series


def store_series(store: Any, paths: list[Path]) -> str:
    """Store the files as a DICOM peer would and queue the series; returns its UID."""
    uid = ""
    for path in paths:
        uid = store.store_instance(path.read_bytes(), "TESTSCU").header.series_uid
    store.enqueue_job(uid)
    return uid
