-- `ringyo_inbox_lanes_holder` found the lanes a claim had marked with its token. A claim now
-- reads its lanes back from the statement that takes them and marks none, so nothing reads
-- the index, and each of the lanes' writes (a store, a claim and a release per ordered
-- delivery) no longer updates it.
DROP INDEX IF EXISTS ringyo_inbox_lanes_holder;
