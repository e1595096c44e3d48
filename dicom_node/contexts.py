"""What the node negotiates: presentation contexts, transfer syntaxes, PDU size and timeouts."""

from __future__ import annotations

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

# Accepted as sent and stored without transcoding. Explicit VR Big Endian is retired but
# old modalities still propose it; storing it costs nothing.
TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

# Biggest P-DATA-TF PDU we advertise. Bigger PDUs mean fewer Python-level PDU decodes per
# instance (pynetdicom's default, 16 KiB, cost ~3 ms per 512 KiB slice); DCMTK storescu
# then sends 128 KiB PDUs, its own ceiling.
DEFAULT_MAX_PDU = 1 << 20

# How long an idle pynetdicom DUL reactor sleeps between polls (None: library default, 1 ms).
# Shorter polls measured no faster here and cost CPU on every open association.
DEFAULT_POLL_S: float | None = None


def storage_ae(ae_title: str, max_pdu: int = DEFAULT_MAX_PDU) -> AE:
    """Storage SCP for every storage SOP class pynetdicom knows, plus Verification (C-ECHO)."""
    ae = AE(ae_title=ae_title)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.maximum_pdu_size = max_pdu
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    return ae
