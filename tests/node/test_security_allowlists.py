"""Calling-AE and peer-IP allow-lists hold for every service, C-ECHO included, and a refused
peer gets a real A-ASSOCIATE-RJ (not a dropped connection) that DCMTK reports as such."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from app.core.audit import ASSOCIATION, ASSOCIATION_REJECTED
from dicom_node.scu import ASSOCIATION_FAILED, echo, send_files
from tests.support.node_helpers import Node, dcmtk, dcmtk_env, fresh_uids, pydicom_file, start_node, stop_node


def echoscu(node: Node, calling: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("echoscu"), "-aet", calling, "-aec", node.ae, "127.0.0.1", str(node.port)],
                          capture_output=True, text=True, timeout=30, env=dcmtk_env())


def records(node: Node, event: str, count: int = 1) -> list[dict]:
    end = time.monotonic() + 5
    found: list[dict] = []
    while time.monotonic() < end:
        found = [r for r in node.scp.audit.records() if r["event"] == event]
        if len(found) >= count:
            break
        time.sleep(0.05)
    return found


def test_echoscu_from_a_refused_calling_ae_is_rejected(data_dir: Path) -> None:
    n = start_node(data_dir, allow_ae=["CT01"])
    try:
        done = echoscu(n, "STRANGER")
        assert done.returncode != 0
        assert "Association Rejected" in done.stderr + done.stdout
        assert "Calling AE Title Not Recognized" in done.stderr + done.stdout
        (rejected,) = records(n, ASSOCIATION_REJECTED)
        assert (rejected["ae"], rejected["ip"]) == ("STRANGER", "127.0.0.1")
        assert "allow_ae" in rejected["reason"]
        assert echoscu(n, "CT01").returncode == 0
        (accepted,) = records(n, ASSOCIATION)
        assert (accepted["ae"], accepted["c_echo"], accepted["c_store"], accepted["outcome"]) == ("CT01", 1, 0, "released")
    finally:
        stop_node(n)


def test_echoscu_from_a_refused_address_gets_an_association_reject(data_dir: Path, tmp_path: Path) -> None:
    """Node on 127.0.0.1, only 127.0.0.2 allowed; echoscu connects from 127.0.0.1."""
    n = start_node(data_dir, bind="127.0.0.1", allow_ip=["127.0.0.2"])
    try:
        done = echoscu(n, "CT01")
        out = done.stdout + done.stderr
        assert done.returncode != 0
        assert "Association Rejected" in out and "Rejected Permanent" in out and "Service User" in out, out
        (rejected,) = records(n, ASSOCIATION_REJECTED)
        assert (rejected["ae"], rejected["ip"], rejected["reason"]) == ("CT01", "127.0.0.1", "address not in allow_ip")

        # pynetdicom sees the same: rejected (not aborted), permanent, service-user, no reason given
        ae = AE(ae_title="CT01")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", n.port, ae_title=n.ae)
        assert assoc.is_rejected and not assoc.is_established
        rj = assoc.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x01)

        # every service is behind the same gate: C-STORE from the refused address stores nothing
        path = fresh_uids(pydicom_file("CT_small.dcm"), tmp_path)
        assert send_files("127.0.0.1", n.port, n.ae, [path]) == [ASSOCIATION_FAILED]
        assert n.store.instance_rows() == []

        # the allowed address (the loopback answers on all of 127.0.0.0/8) gets in, for both services
        ae = AE(ae_title="CT01")
        ae.add_requested_context(Verification)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", n.port, ae_title=n.ae, bind_address=("127.0.0.2", 0))
        assert assoc.is_established
        try:
            assert int(assoc.send_c_echo().Status) == 0
            assert int(assoc.send_c_store(path).Status) == 0
        finally:
            assoc.release()
        assert len(n.store.instance_rows()) == 1
        accepted = records(n, ASSOCIATION)
        assert accepted and accepted[-1]["ip"] == "127.0.0.2" and accepted[-1]["statuses"] == {"0x0000": 1}
    finally:
        stop_node(n)


def test_both_lists_must_match(data_dir: Path) -> None:
    n = start_node(data_dir, allow_ae=["CT01"], allow_ip=["127.0.0.1/32"])
    try:
        assert echo("127.0.0.1", n.port, n.ae, calling_ae="CT01") == 0
        assert echo("127.0.0.1", n.port, n.ae, calling_ae="CR01") == ASSOCIATION_FAILED
        ae = AE(ae_title="CT01")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", n.port, ae_title=n.ae, bind_address=("127.0.0.3", 0))
        assert assoc.is_rejected
    finally:
        stop_node(n)
