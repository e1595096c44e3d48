"""Results back to PACS: objects built per result are written durably (``staging``), queued in
the result's transaction (``result_outbox``), and sent by a worker per destination (``worker``)
through a sender the wiring injects (the domain never imports the DICOM network code).

Nothing is re-exported here, so the node can import ``worker``'s records without the models."""
