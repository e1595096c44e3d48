"""What FirstLook must know about a model, in one place per model.

The analyser, registry, router, configuration, self-test and settings loop over specs, so a
new model is one module implementing ``ModelSpec`` plus one entry in the collection the
composition root builds. Implementations import OpenVINO-heavy modules inside their
methods: importing a spec (for config validation or the settings dialog) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from app.core.models.overlay import LabelClass, Overlay
from app.core.series_info import Route, SeriesInfo


@dataclass
class Reading:
    """What one run of a model says, in the form results are stored."""

    values: dict[str, float]        # per label, compared with the thresholds (probability or mL)
    findings: dict[str, Any]        # stored as the result's findings (before thresholds and flags)
    device: str | None = None
    device_note: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class OverlaySink(Protocol):
    """Writes overlay files under one result's folder; crash-safe (no truncated file behind a result)."""

    def save_npz(self, filename: str, **arrays: Any) -> Path: ...


@dataclass(frozen=True)
class ProbeKnobs:
    """Self-test knobs for slow machines and tests (the defaults are what IT runs)."""

    runs: int = 5                 # timed runs after the warm-up run, for models fast enough to repeat
    members: int | None = None    # ensemble members to compile; None: all


@dataclass
class ProbeOutcome:
    """One model run on a synthetic sample: a problem (FAIL) or a detail (PASS), and its latency."""

    problem: str | None
    detail: str
    first_s: float = 0.0
    median_s: float = 0.0
    runs: int = 0
    note: str = ""
    compile_s: float | None = None  # when the model compiles during the run (ensembles), that time


class SelfTestProbe(Protocol):
    """How ``firstlook --self-test`` proves a model works on this machine, offline."""

    def make_sample(self, directory: Path) -> list[Path]:
        """Write a seeded synthetic series (never patient data) and return its files."""

    def describe_sample(self, files: Sequence[Path]) -> str: ...

    def compile(self, pack: Any, core: Any, device: str, knobs: ProbeKnobs) -> Any: ...

    def compiled_detail(self, runtime: Any, seconds: float) -> str: ...

    def exercise(self, runtime: Any, files: Sequence[Path], knobs: ProbeKnobs) -> ProbeOutcome:
        """Run the sample through the real input loader and the runtime, and judge the output."""


class ModelSpec(Protocol):
    """One model: from series headers to an overlay on screen."""

    @property
    def name(self) -> str:
        """The pack's folder and name, and the ``model`` of the results it writes."""

    @property
    def units(self) -> str:
        """What values and thresholds are: "probability", "mL"."""

    @property
    def threshold_max(self) -> float | None:
        """The largest threshold that makes sense (1 for a probability); None: no limit."""

    @property
    def default_thresholds(self) -> Mapping[str, float]:
        """Per label, exactly what the pack builder writes into the manifest."""

    @property
    def self_test(self) -> SelfTestProbe | None: ...

    @property
    def label_classes(self) -> tuple[LabelClass, ...]:
        """A segmentation model's classes (key, name, colour) as findings and viewers show them;
        empty for a model that writes no label volume."""

    def route(self, info: SeriesInfo) -> Route | None:
        """``Route(name)`` to take the series, ``Route(None, reason)`` to refuse a series of this
        model's kind with a reason, ``None`` when the series is not this model's business."""

    def load_input(self, files: Sequence[Path]) -> Any:
        """The series' files as the runtime's input; raises ``inference.errors.NotAnalysable``."""

    def make_runtime(self, pack: Any, core: Any, device: str) -> Any:
        """A compiled runtime (with ``device``, ``fallback_note`` and ``pack``) for the registry."""

    def run(self, runtime: Any, model_input: Any) -> Any: ...

    def read(self, model_input: Any, output: Any) -> Reading: ...

    def flagged(self, values: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]: ...

    def summary(self, values: Mapping[str, float], flagged: Sequence[str]) -> str:
        """One line for the worklist, without the "unvalidated" prefix the analyser adds."""

    def write_overlay(self, model_input: Any, output: Any, sink: OverlaySink) -> Path | None: ...

    def read_overlay(self, path: Path) -> Overlay: ...


# on_partial(members_done, members_total, output): ``output`` is what ``run`` would return had the
# model stopped there, so ``read``/``write_overlay`` take it unchanged.
PartialCallback = Callable[[int, int, Any], None]


@runtime_checkable
class ProgressiveSpec(Protocol):
    """Optional extra of a ``ModelSpec`` whose model refines its answer in steps (an ensemble):
    it reports partial outputs on the way, so a first answer reaches the worklist early."""

    def run_progressive(self, runtime: Any, model_input: Any, on_partial: PartialCallback) -> Any:
        """Like ``run``, calling ``on_partial`` at the steps worth showing; returns the final output."""


def progressive(spec: Any) -> ProgressiveSpec | None:
    """The spec as a ``ProgressiveSpec`` when it implements ``run_progressive``, else None."""
    return spec if isinstance(spec, ProgressiveSpec) else None
