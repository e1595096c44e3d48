-- Schema 5: the Priority a modality put in its C-STORE requests (issue 13), kept with the job so an
-- emergency series queued before a restart is still dispatched first after it. "high" or "low"
-- (PS3.7 9.1.1; medium, the default, is NULL); cleared when the job is done.
ALTER TABLE jobs ADD COLUMN requested_priority TEXT;
