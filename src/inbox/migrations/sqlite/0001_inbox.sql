-- The inbox: one row per delivery, keyed by its id, so a retry is never stored twice.
-- Times are Unix milliseconds. `available_at` is when the row is next due: for a pending row
-- its first run or its retry; for a running row the end of its lease, so a row whose worker
-- died becomes due again by itself and one index serves the claim.
CREATE TABLE ringyo_inbox (
    delivery_id  TEXT    NOT NULL PRIMARY KEY,
    event        TEXT    NOT NULL,
    event_at     INTEGER,
    received_at  INTEGER NOT NULL,
    payload      BLOB    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    lease_token  TEXT,
    finished_at  INTEGER,
    last_error   TEXT
);
CREATE INDEX ringyo_inbox_due ON ringyo_inbox (available_at) WHERE state IN ('pending', 'running');
CREATE INDEX ringyo_inbox_finished ON ringyo_inbox (state, finished_at) WHERE state IN ('done', 'dead');
