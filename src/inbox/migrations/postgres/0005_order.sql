-- Per-subject ordering (`Inbox::order_by_subject`). `subject` names what the event is about
-- (`call:call_123`), for every delivery that has one. `lane` is that subject scoped by tenant,
-- set only on deliveries stored with ordering on: those run one at a time per lane, the lane's
-- pending delivery with the least (`order_at`, `received_at`, `delivery_id`) first, where
-- `order_at` is the signed timestamp (the time of receipt without one).
ALTER TABLE ringyo_inbox ADD COLUMN subject TEXT;
ALTER TABLE ringyo_inbox ADD COLUMN lane TEXT;
ALTER TABLE ringyo_inbox ADD COLUMN order_at BIGINT;
-- Recorded as handled without running the handler: older than the newest handled of its lane.
ALTER TABLE ringyo_inbox ADD COLUMN superseded BOOLEAN NOT NULL DEFAULT FALSE;
-- One row per lane: the delivery that holds it (running, or a suspect waiting to run alone),
-- when its first pending delivery is next due while no one holds it (a hint no later than
-- the truth, made exact by each claim), and the `order_at` of the newest delivery handled.
-- Claims lock a lane's row, so replicas never run two deliveries of one lane at once.
CREATE TABLE ringyo_inbox_lanes (
    lane        TEXT    NOT NULL PRIMARY KEY,
    holder      TEXT,
    due_at      BIGINT,
    newest_done BIGINT
);
CREATE INDEX ringyo_inbox_lanes_due ON ringyo_inbox_lanes (due_at) WHERE holder IS NULL;
-- The lanes a claim has marked, found without reading every lane kept for the retention.
CREATE INDEX ringyo_inbox_lanes_holder ON ringyo_inbox_lanes (holder) WHERE holder IS NOT NULL;
-- A lane's first pending delivery, and its running one, each found without reading the rest
-- of its backlog. Live rows only: a delivery leaves both once it is handled, so a commit does
-- not write a page of them for every delivery it settles.
CREATE INDEX ringyo_inbox_head ON ringyo_inbox (lane, order_at, received_at, delivery_id)
    WHERE state = 'pending' AND lane IS NOT NULL;
CREATE INDEX ringyo_inbox_lane_running ON ringyo_inbox (lane)
    WHERE state = 'running' AND lane IS NOT NULL;
-- Pending deliveries outside any lane, so their claim skips the lanes' backlogs.
CREATE INDEX ringyo_inbox_unordered ON ringyo_inbox (available_at)
    WHERE state = 'pending' AND lane IS NULL;
