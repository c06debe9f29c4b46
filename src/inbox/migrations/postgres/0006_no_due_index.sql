-- `ringyo_inbox_due` (every pending and running delivery, by due time) served the first claim.
-- Since then each statement has an index of its own: `ringyo_inbox_unordered` for the claim
-- outside lanes, `ringyo_inbox_suspect` for suspects, `ringyo_inbox_head` and the lanes' table
-- for ordered deliveries. Kept, it cost a write per change of state, and with deliveries
-- waiting behind their subjects it drew Postgres's planner into reading the whole backlog to
-- claim a few lanes' heads (benches/README.md, "Ordering by subject").
DROP INDEX IF EXISTS ringyo_inbox_due;
