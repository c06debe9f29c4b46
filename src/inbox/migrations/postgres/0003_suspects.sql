-- The suspects of a crash. A claim that finds a row still 'running' (its lease ran out: its
-- process died, or its worker lost the lease) counts the attempt that never finished in
-- `orphaned` and marks the row `suspect`; a worker runs suspects one at a time, alone in its
-- process, so a crash while one runs is that delivery's own, counted in `crashes_alone`. An
-- attempt that finishes clears `suspect` and `crashes_alone`; `orphaned` keeps counting, so
-- crashes are told apart from the handler's failures (`attempts - orphaned`).
ALTER TABLE ringyo_inbox ADD COLUMN orphaned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ringyo_inbox ADD COLUMN crashes_alone BIGINT NOT NULL DEFAULT 0;
-- Which inbox (one per process) holds the lease: a suspect taken again by its own holder was
-- not killed by its process, which is still alive, so that is not counted as a crash.
ALTER TABLE ringyo_inbox ADD COLUMN lease_holder TEXT;
ALTER TABLE ringyo_inbox ADD COLUMN suspect BOOLEAN NOT NULL DEFAULT FALSE;
-- Workers look for due suspects before each claim: this index holds only the running rows and
-- the suspects, so the look costs the same with a backlog of pending deliveries.
CREATE INDEX ringyo_inbox_suspect ON ringyo_inbox (available_at) WHERE state = 'running' OR suspect;
