"""Debug-only crash injection for the crash-consistency harness (tests/support/crash_harness.py).

Some windows are too short to hit with a SIGKILL from outside, notably "file renamed into
place but its index row not committed yet" (well under a millisecond). When the
environment variable ``FIRSTLOOK_CRASH_POINTS`` is set, e.g.
``after-rename:0.02,mid-analysis:0.3``, the named points SIGKILL their own process with
the given probability, after one log line naming the point. Unset (always, outside the
harness), ``crash_point`` is one dictionary lookup and does nothing.

Points: ``after-fsync`` (temporary file fsynced, not renamed), ``after-link`` (replacement:
old version linked into superseded/, new one not renamed in), ``after-rename`` (final name in
place, index row not committed), ``after-index`` (row committed, directory not fsynced,
Success not sent), ``mid-analysis`` (job claimed, result not saved), ``after-staging`` (a result's outgoing
objects written, the result and their outbox rows not committed), ``outbox-sent`` (a batch
C-STORed to a destination, its rows not yet marked sent).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys

log = logging.getLogger(__name__)

ENV = "FIRSTLOOK_CRASH_POINTS"


def _probability(name: str, spec: str) -> float:
    for item in spec.split(","):
        point, _, p = item.strip().partition(":")
        if point == name:
            try:
                return float(p or "1")
            except ValueError:
                return 0.0
    return 0.0


def crash_point(name: str) -> None:
    """SIGKILL this process here with the configured probability (harness only)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    if random.random() < _probability(name, spec):
        log.critical("crash point %s: SIGKILL", name)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
