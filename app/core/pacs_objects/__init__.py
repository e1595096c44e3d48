"""DICOM objects that carry FirstLook's results back to the PACS: TID 1500 SR, SEG, key-image SC.

Pure domain code (highdicom, pydicom, numpy): it builds datasets and never sends them.
"""

from app.core.pacs_objects.build import build_result_objects
from app.core.pacs_objects.identity import AlgorithmIdentity, pack_hash
from app.core.pacs_objects.outgoing import KINDS, OutgoingObject

__all__ = ["KINDS", "AlgorithmIdentity", "OutgoingObject", "build_result_objects", "pack_hash"]
