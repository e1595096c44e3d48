"""The domain: store, routing, analysis, triage, worklist, events. Imports no wiring,
no DICOM network code, no Qt and no torch (see the import-linter contracts in pyproject.toml)."""
