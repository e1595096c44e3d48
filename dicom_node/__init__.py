"""FirstLook's DICOM node: Storage SCP (scp.py) and a small SCU helper (scu.py)."""
