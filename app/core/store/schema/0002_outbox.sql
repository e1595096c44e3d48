-- Schema 2: the outbox (results sent to PACS as DICOM objects, issue 11).
-- outbox_objects: every object FirstLook built for a result, written as a Part 10 file before
-- the result was committed; one row per object, in the result's transaction. A re-analysis
-- builds a new version (new series) and lists the SOP Instance UIDs it supersedes.
CREATE TABLE outbox_objects (
    sop_uid TEXT PRIMARY KEY,
    source_series_uid TEXT NOT NULL,      -- the analysed series
    study_uid TEXT NOT NULL,
    kind TEXT NOT NULL,                   -- sr, seg, sc
    sop_class_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,             -- the object's own series
    version INTEGER NOT NULL,
    supersedes TEXT NOT NULL DEFAULT '[]',  -- JSON list of SOP Instance UIDs of the version before
    path TEXT NOT NULL,                   -- relative to the data dir
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX outbox_objects_source ON outbox_objects(source_series_uid, version);
CREATE INDEX outbox_objects_study ON outbox_objects(study_uid);
-- outbox: one row per (object, destination). queued -> sending -> sent; failed (retried at
-- next_attempt_at); stopped (destination no longer configured); superseded (a newer version
-- replaced it before it was sent).
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_uid TEXT NOT NULL REFERENCES outbox_objects(sop_uid),
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    queued_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL,
    UNIQUE (sop_uid, destination)
);
CREATE INDEX outbox_due ON outbox(destination, state, next_attempt_at);
