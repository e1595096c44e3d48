"""FirstLook's DICOM node: Storage SCP (scp.py, composing one module per concept: see its
docstring) and a small SCU helper (scu.py)."""
