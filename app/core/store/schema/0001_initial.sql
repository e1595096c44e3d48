-- Schema 1: the index as the releases before schema versions (up to 4c3338c) created it at
-- every open. Shipped: never edit this file; add the next one (see migrations.py).
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT, patient_name TEXT, patient_birth_date TEXT, patient_sex TEXT,
    study_date TEXT, study_time TEXT, accession TEXT, description TEXT,
    modalities TEXT,
    first_received REAL NOT NULL, last_received REAL NOT NULL,
    calling_ae TEXT, peer TEXT,
    reviewed_at REAL
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT, body_part TEXT, description TEXT, series_number INTEGER,
    first_received REAL NOT NULL, last_received REAL NOT NULL,
    ready_at REAL
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT, transfer_syntax TEXT, instance_number INTEGER,
    path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    received_at REAL NOT NULL, calling_ae TEXT, peer TEXT
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS replacements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_uid TEXT NOT NULL, old_sha256 TEXT NOT NULL, new_sha256 TEXT NOT NULL,
    superseded_path TEXT NOT NULL, replaced_at REAL NOT NULL, calling_ae TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending, running, done
    attempts INTEGER NOT NULL DEFAULT 0,
    instance_count INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL, started_at REAL, finished_at REAL
);
CREATE TABLE IF NOT EXISTS results (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    status TEXT NOT NULL,           -- done, not_analysed, failed
    reason TEXT,
    model TEXT, model_version TEXT, device TEXT, device_note TEXT,
    validated INTEGER NOT NULL DEFAULT 0,
    priority TEXT NOT NULL,
    summary TEXT,
    findings TEXT NOT NULL DEFAULT '{}',
    timings TEXT NOT NULL DEFAULT '{}',
    overlay_path TEXT,
    arrival_at REAL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_study ON results(study_uid);
