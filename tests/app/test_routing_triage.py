"""Routing from headers and triage from pack rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.models.blast_ct import BLAST_CT
from app.core.models.chexnet import CHEXNET
from app.core.router import SeriesInfo, route
from app.core.triage import effective_priority, flagged_labels, priority_from_rules
from tests.support.dicom_factory import make_ct_slice, make_cxr_dataset

PNG = "images/00000129_000.png"


def info(ds, n: int = 1) -> SeriesInfo:
    return SeriesInfo.from_dataset(ds, n)


def test_frontal_chest_radiographs_go_to_chexnet(cxr_dir: Path) -> None:
    for modality in ("DX", "CR"):
        for view in ("PA", "AP", None):
            ds = make_cxr_dataset(cxr_dir / PNG, modality=modality, view=view)
            assert route(info(ds)).model == CHEXNET


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL"])
def test_lateral_film_is_not_analysed_with_reason(cxr_dir: Path, view: str) -> None:
    decision = route(info(make_cxr_dataset(cxr_dir / PNG, view=view)))
    assert decision.model is None and "lateral" in decision.reason


def test_non_chest_radiograph_is_not_analysed(cxr_dir: Path) -> None:
    decision = route(info(make_cxr_dataset(cxr_dir / PNG, body_part="HAND")))
    assert decision.model is None and "hand" in decision.reason


def test_head_ct_goes_to_blastct_and_others_do_not() -> None:
    slab = np.zeros((8, 8), np.int16)
    assert route(info(make_ct_slice(slab, (0, 0, 0)), 30)).model == BLAST_CT
    assert route(info(make_ct_slice(slab, (0, 0, 0), body_part="CHEST"), 30)).reason.startswith("CT of chest")
    scout = make_ct_slice(slab, (0, 0, 0), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    assert "localizer" in route(info(scout)).reason
    mr = make_ct_slice(slab, (0, 0, 0), modality="MR")
    assert route(info(mr)).reason == "no model for MR images"


def test_real_head_ct_series_routes_to_blastct(headct_dir: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(headct_dir / "01.dcm", stop_before_pixels=True)
    assert route(info(ds, 28)).model == BLAST_CT


def test_triage_rules_first_match_wins_and_unvalidated_never_raises() -> None:
    rules = {"rules": [{"priority": "critical", "any_of": ["Pneumothorax"]},
                       {"priority": "urgent", "any_of": ["Effusion", "Mass"]}], "default": "routine"}
    probs = {"Pneumothorax": 0.7, "Effusion": 0.9, "Mass": 0.1}
    thresholds = {"Pneumothorax": 0.5, "Effusion": 0.5, "Mass": 0.5}
    flagged = flagged_labels(probs, thresholds)
    assert flagged == ["Effusion", "Pneumothorax"]
    assert priority_from_rules(flagged, rules) == "critical"
    assert priority_from_rules(["Effusion"], rules) == "urgent"
    assert priority_from_rules([], rules) == "routine"
    assert effective_priority("critical", validated=True) == "critical"
    assert effective_priority("critical", validated=False) == "routine"


def test_rule_with_its_own_thresholds_separates_critical_from_urgent() -> None:
    """BLAST-CT: 0.1 mL of blood flags (urgent); only 1 mL makes a study critical."""
    rules = {"rules": [{"priority": "critical", "any_of": ["IPH", "EAH", "IVH"],
                        "thresholds": {"IPH": 1.0, "EAH": 1.0, "IVH": 1.0}},
                       {"priority": "urgent", "any_of": ["IPH", "EAH", "IVH", "oedema"]}], "default": "routine"}
    thresholds = {"IPH": 0.1, "EAH": 0.1, "oedema": 5.0, "IVH": 0.1}
    small = {"IPH": 0.0, "EAH": 0.3, "oedema": 1.8, "IVH": 0.0}
    large = {"IPH": 12.4, "EAH": 0.0, "oedema": 0.0, "IVH": 0.0}
    none = {"IPH": 0.0, "EAH": 0.05, "oedema": 2.0, "IVH": 0.0}
    assert priority_from_rules(flagged_labels(small, thresholds), rules, small) == "urgent"
    assert priority_from_rules(flagged_labels(large, thresholds), rules, large) == "critical"
    assert priority_from_rules(flagged_labels(none, thresholds), rules, none) == "routine"
