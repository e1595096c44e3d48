"""Priority from a model pack's triage rules.

An unvalidated pack (e.g. CheXNet built from a random initialisation) never raises a
study's priority: what its rules would say is kept for display, marked unvalidated,
but the worklist order is not changed by numbers nobody has validated.
"""

from __future__ import annotations

from typing import Any, Mapping

PRIORITIES = ("critical", "urgent", "routine", "not_analysed", "failed")


def flagged_labels(values: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
    """Labels at or above their threshold, highest value first."""
    hits = [label for label, value in values.items() if label in thresholds and value >= thresholds[label]]
    return sorted(hits, key=lambda label: -values[label])


def priority_from_rules(flagged: list[str], triage: Mapping[str, Any],
                        values: Mapping[str, float] | None = None) -> str:
    """First matching rule wins; otherwise the pack's default (routine).

    A rule matches when any of its labels is flagged, or, when the rule carries its own
    ``thresholds`` (e.g. "critical from 1 mL" while 0.1 mL already flags), when a label
    reaches that rule's threshold.
    """
    hit = set(flagged)
    for rule in triage.get("rules", []):
        labels = rule.get("any_of", [])
        own = rule.get("thresholds")
        if own is not None and values is not None:
            matched = any(label in own and values.get(label, 0.0) >= own[label] for label in labels)
        else:
            matched = bool(hit & set(labels))
        if matched:
            priority = rule["priority"]
            if priority not in ("critical", "urgent", "routine"):
                raise ValueError(f"triage rule priority {priority!r} is not critical, urgent or routine")
            return priority
    return str(triage.get("default", "routine"))


def effective_priority(rule_priority: str, validated: bool) -> str:
    return rule_priority if validated else "routine"
