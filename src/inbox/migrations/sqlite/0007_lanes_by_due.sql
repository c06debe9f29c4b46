-- A lane's row is written three times per ordered delivery (stored, claimed, settled), and
-- each write changed a column of both indexes below, so each updated them. Now:
-- `ringyo_inbox_lanes_holder` found the lanes a claim had marked with its token; a claim reads
-- its lanes back from the statement that takes them and marks none, so nothing reads it.
DROP INDEX IF EXISTS ringyo_inbox_lanes_holder;
-- `ringyo_inbox_lanes_due` held free lanes only (`WHERE holder IS NULL`), so a lane left it
-- when claimed and came back when released. Indexed whole, a lane's entry moves only when its
-- due time does: a claim leaves a held lane's `due_at` as it was (nothing reads it until the
-- release sets it afresh) and a store only ever lowers it, so claiming and most stores write
-- no index (on Postgres a heap-only update, which leaves no dead entry behind). Free lanes are
-- found by scanning it from the earliest and skipping the held ones: at most one per running
-- delivery.
DROP INDEX IF EXISTS ringyo_inbox_lanes_due;
CREATE INDEX ringyo_inbox_lanes_by_due ON ringyo_inbox_lanes (due_at);
