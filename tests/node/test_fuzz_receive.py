"""Fuzz the receive path: hostile and broken datasets into the store and through a real association.

CI-sized (a few hundred cases); bench/fuzz_long.py runs the same strategies for >= 10,000 cases
with a watchdog for hangs and crashes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from app.core.store import StudyStore
from dicom_node.statuses import (
    STATUS_BAD_UID,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_MISSING_UID,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
)
from dicom_node.scu import ASSOCIATION_FAILED, echo, send_raw
from tests.support.fuzz_cases import (
    DERANDOMIZE, UNSUPPORTED_SYNTAXES, ReceiveCase, check_receive, files_outside, receive_cases)
from tests.support.node_helpers import start_node, stop_node

FAILURE_STATUSES = {STATUS_CANNOT_UNDERSTAND, STATUS_MISSING_UID, STATUS_BAD_UID, STATUS_OUT_OF_RESOURCES}


@pytest.mark.timeout(300)
def test_fuzz_store_and_tensor_path() -> None:
    """Every case is stored at its UID path or refused with a typed error; whatever is stored
    gives a finite model tensor or 'not analysed: <reason>'; nothing lands outside the data dir."""
    with tempfile.TemporaryDirectory() as root:
        sandbox = Path(root)
        data_dir = sandbox / "data"
        store = StudyStore(data_dir)
        cwd = os.getcwd()
        os.chdir(sandbox)  # a relative write would land here and be caught
        seen = {"stored": 0, "refused": 0}
        try:
            @settings(max_examples=int(os.environ.get("FIRSTLOOK_FUZZ_EXAMPLES", "400")), deadline=None,
                      suppress_health_check=list(HealthCheck), database=None,
          derandomize=DERANDOMIZE)
            @given(receive_cases())
            def one(case: ReceiveCase) -> None:
                outcome = check_receive(store, case)
                seen["stored" if outcome.stored else "refused"] += 1

            one()
        finally:
            os.chdir(cwd)
            store.close()
        assert files_outside(sandbox, data_dir) == []
        assert list((data_dir / "tmp").iterdir()) == []
        assert seen["stored"] > 20 and seen["refused"] > 20, seen  # both sides really exercised


@pytest.mark.timeout(300)
def test_fuzz_through_a_real_association(tmp_path: Path) -> None:
    """The node answers every broken C-STORE with Success or a failure status (never 0x0110,
    never a dropped association) and still answers C-ECHO."""
    node = start_node(tmp_path / "data")
    statuses: dict[int, int] = {}
    try:
        @settings(max_examples=int(os.environ.get("FIRSTLOOK_FUZZ_NET_EXAMPLES", "60")), deadline=None,
                  suppress_health_check=list(HealthCheck), database=None,
          derandomize=DERANDOMIZE)
        @given(receive_cases())
        def one(case: ReceiveCase) -> None:
            sop = case.sop_uid_hint or "1.2.3.4"
            status = send_raw("127.0.0.1", node.port, node.ae, case.sop_class, sop, case.body,
                              transfer_syntax=case.transfer_syntax, timeout=20)
            statuses[status] = statuses.get(status, 0) + 1
            if case.transfer_syntax in UNSUPPORTED_SYNTAXES:  # refused at negotiation: no context accepted
                assert status == ASSOCIATION_FAILED, (hex(status), case.steps)
            else:
                assert status == STATUS_SUCCESS or status in FAILURE_STATUSES, (hex(status), case.steps)

        one()
        assert echo("127.0.0.1", node.port, node.ae) == 0
        assert node.store.verify() == []
    finally:
        stop_node(node)
    assert files_outside(tmp_path, tmp_path / "data") == []
    assert len(statuses) >= 2, statuses
