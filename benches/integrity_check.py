"""The cost of the inbox's start-up check (`PRAGMA quick_check`) as its SQLite file grows.

Builds inbox files of 100 000 and 400 000 handled deliveries of 2 KiB with the inbox's own
migrations, then times the check twice on each, dropping the page cache first where that is
allowed (as root). Python's own SQLite runs the check, the same code as the crate's bundled one.

    python3 benches/integrity_check.py [DIR]    # DIR defaults to a temporary directory
"""

import os
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = os.path.join(HERE, "..", "src", "inbox", "migrations", "sqlite")
PAYLOAD = b"x" * 2048


def build(path, rows):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")  # building only: the check reads what is there
    for name in sorted(os.listdir(MIGRATIONS)):
        with open(os.path.join(MIGRATIONS, name)) as migration:
            db.executescript(migration.read())
    db.execute("BEGIN")
    for _ in range(rows):
        db.execute(
            "INSERT INTO ringyo_inbox (delivery_id, event, event_at, received_at, payload, "
            "state, attempts, available_at) VALUES (?, 'call.completed', 0, 0, ?, 'done', 1, 0)",
            (os.urandom(32).hex(), PAYLOAD),
        )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def drop_page_cache():
    try:
        with open("/proc/sys/vm/drop_caches", "w") as caches:
            caches.write("3\n")
        return "cold"
    except OSError:
        return "warm"


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    for rows in (100_000, 400_000):
        path = os.path.join(directory, f"inbox_{rows}.db")
        build(path, rows)
        megabytes = os.path.getsize(path) / 1e6
        for _ in range(2):
            cache = drop_page_cache()
            db = sqlite3.connect(path)
            start = time.perf_counter()
            verdict = db.execute("PRAGMA quick_check(1)").fetchall()
            took = time.perf_counter() - start
            db.close()
            print(
                f"{rows} deliveries, {megabytes:.0f} MB: quick_check {took * 1000:.0f} ms "
                f"({cache} page cache, {took / megabytes * 1000:.2f} ms per MB): {verdict}",
                flush=True,
            )
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)


if __name__ == "__main__":
    main()
