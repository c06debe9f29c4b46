-- What the health check writes and commits to learn whether the inbox can commit now (a full
-- disk, a read-only file system): one row at a time, each probe replacing the last.
CREATE TABLE ringyo_inbox_probe (
    id     INTEGER NOT NULL PRIMARY KEY,
    filler BLOB    NOT NULL
);
