"""The findings panel: what the model said, with its thresholds, provenance and timings.

Rendered as HTML in a read-only QTextBrowser: it is a report, not an editable table.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

from PySide6.QtWidgets import QTextBrowser, QWidget

from app.core.results import AnalysisResult
from app.core.store import SeriesRecord
from ui.viewing.image_loader import SeriesGeometry
from ui.viewing.opened_series import OpenedSeries
from app.core.models import LabelClass, ModelSpecs
from ui.viewing.overlays import UNKNOWN_CLASS_COLOUR
from ui.worklist_model import NOT_VALIDATED_TEXT, PRIORITY_COLOURS, PRIORITY_TEXT

_TIMING_NAMES = {"decode": "decode", "preprocess": "pre-process", "infer": "inference", "total": "total",
                 "arrival_to_result": "arrival → result"}


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _priority_badge(priority: str) -> str:
    colour = PRIORITY_COLOURS.get(priority, "#455a64")
    return (f'<span style="background:{colour}; color:white; font-weight:bold;">&nbsp;'
            f'{_esc(PRIORITY_TEXT.get(priority, priority))}&nbsp;</span>')


def preliminary_notice(result: AnalysisResult) -> str:
    """What a preliminary result is, in one line (the findings panel and the viewer's banner)."""
    return (f"{result.progress_text.upper()}: first ensemble member(s) only; "
            "the final result replaces it when the ensemble has run")


def findings_html(result: AnalysisResult | None, series: SeriesRecord | None = None,
                  geometry: SeriesGeometry | None = None, load_note: str = "",
                  classes: Mapping[str, LabelClass] | None = None) -> str:
    """``classes``: the result's model's label classes (names and colours), from its spec."""
    classes = classes or {}
    parts: list[str] = []
    if result is None:
        parts.append("<p><b>No AI result for this series.</b></p>")
        if series is not None and series.ready_at is None:
            parts.append("<p>The series is still arriving or waiting for analysis.</p>")
    else:
        if result.status == "done" and not result.validated:
            parts.append(f'<p style="background:#b00020; color:white; font-weight:bold; font-size:large;">'
                         f'&nbsp;⚠ {_esc(NOT_VALIDATED_TEXT.upper())}&nbsp;</p>')
        if result.preliminary:
            parts.append(f'<p style="background:#ef6c00; color:white; font-weight:bold;">&nbsp;'
                         f'{_esc(preliminary_notice(result))}&nbsp;</p>')
        if result.priority_note:
            parts.append(f'<p style="color:#8a5a00;"><b>⚠ {_esc(result.priority_note)}</b></p>')
        parts.append(f"<p>{_priority_badge(result.priority)}&nbsp; {_esc(result.summary)}</p>")
        if result.status == "not_analysed":
            parts.append(f'<p style="color:#8a5a00;"><b>Not analysed:</b> {_esc(result.reason or "no reason given")}</p>')
        elif result.status == "failed":
            parts.append(f'<p style="color:#b00020;"><b>Analysis failed:</b> {_esc(result.reason or "no reason given")}</p>')
        findings = result.findings or {}
        probabilities: dict[str, float] = findings.get("probabilities") or {}
        thresholds: dict[str, float] = findings.get("thresholds") or {}
        flagged = set(findings.get("flagged") or [])
        if probabilities:
            rows = []
            for label, p in sorted(probabilities.items(), key=lambda kv: -kv[1]):
                t = thresholds.get(label)
                style = ' style="color:#b00020; font-weight:bold;"' if label in flagged else ""
                rows.append(f"<tr{style}><td>{_esc(label)}</td><td align='right'>{p:.2f}</td>"
                            f"<td align='right'>{'' if t is None else f'{t:g}'}</td></tr>")
            parts.append("<table cellspacing='0' cellpadding='2' width='100%'><tr><th align='left'>Finding</th>"
                         "<th align='right'>Probability</th><th align='right'>Threshold</th></tr>"
                         + "".join(rows) + "</table>")
        volumes: dict[str, float] = findings.get("volumes_ml") or {}
        if volumes:
            involved = findings.get("slices_involved") or {}
            rows = []
            for label, v in volumes.items():
                known = classes.get(label)
                colour = "#%02x%02x%02x" % (known.colour if known else UNKNOWN_CLASS_COLOUR)
                t = thresholds.get(label)
                style = " style='font-weight:bold;'" if label in flagged else ""
                rows.append(f"<tr{style}><td><span style='color:{colour};'>■</span> {_esc(label)}"
                            f" <small>({_esc(known.name if known else label)})</small></td>"
                            f"<td align='right'>{v:.1f}</td><td align='right'>{'' if t is None else f'{t:g}'}</td>"
                            f"<td align='right'>{_esc(involved.get(label, ''))}</td></tr>")
            parts.append("<table cellspacing='0' cellpadding='2' width='100%'><tr><th align='left'>Class</th>"
                         "<th align='right'>mL</th><th align='right'>Threshold</th><th align='right'>Slices</th></tr>"
                         + "".join(rows) + "</table>")
        model = " ".join(x for x in (result.model or "", result.model_version or "") if x)
        meta = []
        if model:
            meta.append(f"<b>Model:</b> {_esc(model)}" + ("" if result.validated else " (not validated)"))
        if result.device:
            meta.append(f"<b>Device:</b> {_esc(result.device)}")
        if result.device_note:
            meta.append(f"<b>Note:</b> {_esc(result.device_note)}")
        if result.timings:
            meta.append("<b>Timings:</b> " + ", ".join(
                f"{_esc(_TIMING_NAMES.get(k, k))} {v:.2f} s" for k, v in result.timings.items()
                if isinstance(v, (int, float))))
        if meta:
            parts.append("<p>" + "<br>".join(meta) + "</p>")
    if load_note:
        parts.append(f'<p style="color:#8a5a00;">{_esc(load_note)}</p>')
    if geometry is not None:
        attrs = dict(geometry.attributes)
        rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in attrs.items())
        spacing = (f"{geometry.pixel_spacing[0]:.3f} × {geometry.pixel_spacing[1]:.3f} mm"
                   if geometry.spacing_known else "unknown (shown square)")
        rows += f"<tr><td>Pixel spacing</td><td>{spacing}</td></tr>"
        rows += f"<tr><td>Images</td><td>{geometry.n_slices}</td></tr>"
        if geometry.skipped:
            rows += f"<tr><td>Unreadable</td><td>{_esc('; '.join(geometry.skipped[:5]))}</td></tr>"
        parts.append("<h4>DICOM</h4><table cellspacing='0' cellpadding='1'>" + rows + "</table>")
    return "".join(parts)


class FindingsPanel(QTextBrowser):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setMinimumWidth(300)

    def show_findings(self, result: AnalysisResult | None, series: SeriesRecord | None = None,
                      geometry: SeriesGeometry | None = None, load_note: str = "",
                      classes: Mapping[str, LabelClass] | None = None) -> None:
        self.setHtml(findings_html(result, series, geometry, load_note, classes))

    def show_opened(self, opened: OpenedSeries | None, specs: ModelSpecs | None = None) -> None:
        """Follows the view state: called when a series opens and when its evidence is read."""
        if opened is None:
            self.clear()
            return
        spec = specs.get(opened.result.model) if specs is not None and opened.result and opened.result.model else None
        classes = {c.key: c for c in spec.label_classes} if spec is not None else None
        self.show_findings(opened.result, opened.series, opened.geometry, opened.overlay_note, classes)
