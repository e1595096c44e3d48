-- Schema 4: progressive results (issue 14). An ensemble model (BLAST-CT) stores a preliminary
-- result after its first members and replaces it, in the same row, with the final one.
-- preliminary: 1 while the row holds a partial ensemble (never sent outside FirstLook);
-- members_done / members_total: how much of the ensemble the row reflects (NULL: not an ensemble);
-- priority_note: "priority changed: critical in preliminary (1/12) -> routine (final)" when the final
-- result's priority differs from the preliminary one it replaced.
ALTER TABLE results ADD COLUMN preliminary INTEGER NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN members_done INTEGER;
ALTER TABLE results ADD COLUMN members_total INTEGER;
ALTER TABLE results ADD COLUMN priority_note TEXT;
