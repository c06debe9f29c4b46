-- What the health check writes and commits to learn whether the inbox can commit now (a full
-- disk, a read-only file system): one row at a time, each probe replacing the last.
CREATE TABLE ringyo_inbox_probe (
    id     BIGINT NOT NULL PRIMARY KEY,
    filler BYTEA  NOT NULL
);
