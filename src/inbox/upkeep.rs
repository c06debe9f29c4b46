//! [`Upkeep`]: keeping a SQLite inbox's files small, the WAL truncated once a burst is over
//! and after pruning, and the space of pruned rows given back to the file system.
//!
//! SQLite reuses its WAL from the start after a checkpoint rather than shrinking it, so after
//! a burst of large deliveries the `-wal` file stays at its high-water mark (144 MB was seen);
//! and rows deleted by pruning only go to the file's free list. Three things keep both in
//! check:
//!
//! - every connection sets `journal_size_limit`, so whenever SQLite restarts the WAL it cuts
//!   it back to [`JOURNAL_SIZE_LIMIT`];
//! - once [`BURST_BYTES`] of deliveries have been stored since the last truncation and none has
//!   then been stored for [`QUIET`], a `wal_checkpoint(TRUNCATE)` empties the WAL;
//! - after pruning, `incremental_vacuum` hands the freed pages back a few megabytes at a time
//!   (new files are created with `auto_vacuum = INCREMENTAL`) and the same checkpoint empties
//!   the WAL.
//!
//! And one keeps the single writer writing: a checkpoint copies the WAL's pages into the
//! database file and waits for the disk. SQLite runs one inside whichever commit finds the
//! WAL past `wal_autocheckpoint` pages, while that writer holds the process's turn to write:
//! at its default of 1,000 pages that was every few dozen commits under load, and a page
//! written again and again meanwhile (a delivery's row is written when stored, claimed and
//! settled; a lane's row and the indexes' pages more often) was copied at each. So
//! [`Upkeep::wrote`] checkpoints in the background, [`CHECKPOINT_AFTER`] after a write, on a
//! connection outside the turn (a `PASSIVE` checkpoint waits for no writer, and writers go
//! on while it copies), and every connection sets `wal_autocheckpoint = 10000`, 40 MiB of
//! pages, as a backstop: a commit that reaches it checkpoints what the background has not
//! copied yet. (With that backstop alone, each commit reaching it copied up to 40 MiB in the
//! writer's turn: a p99 of 90 ms at 1,000 deliveries a second, 6.6 ms with the background
//! checkpoint.)

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::{AnyPool, Row};

/// How long after a write the background checkpoint runs: the writes of that spell share it.
/// Each checkpoint also waits for the disk, beside the writers' own waits: every 200 ms cost
/// a sixth of SQLite's acknowledged rate at saturation, every second nothing measurable.
const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);

/// The size SQLite cuts the WAL back to whenever it restarts it.
pub(super) const JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// How much must be written since the last truncation for a quiet spell to truncate again:
/// below it the WAL is already within [`JOURNAL_SIZE_LIMIT`].
const BURST_BYTES: u64 = JOURNAL_SIZE_LIMIT;

/// How long without a commit counts as the end of a burst. A checkpoint that truncates waits
/// for writers, so it runs only once they have stopped.
const QUIET: Duration = Duration::from_secs(1);

/// What the inbox has stored since the WAL was last truncated, shared by its handles. Only
/// stored deliveries count: claims and outcomes are small, and go on while a backlog drains,
/// so counting them would keep a busy inbox from ever being quiet.
#[derive(Debug, Default)]
pub(super) struct Upkeep {
    /// Commits of deliveries so far: unchanged over [`QUIET`] means the inbox is quiet.
    commits: AtomicU64,
    /// Bytes committed since the last truncation.
    written: AtomicU64,
    /// A truncation is waiting for a quiet spell.
    pending: AtomicBool,
    /// A background checkpoint is on its way.
    checkpointing: AtomicBool,
}

impl Upkeep {
    /// Counts a commit of deliveries of about `bytes`; past a burst's worth, truncates the WAL
    /// once no delivery has been stored for [`QUIET`], on a task of its own.
    pub(super) fn committed(self: &Arc<Self>, bytes: u64, pool: &AnyPool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let written = self.written.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if written >= BURST_BYTES && !self.pending.swap(true, Ordering::AcqRel) {
            let upkeep = Arc::clone(self);
            let pool = pool.clone();
            tokio::spawn(async move {
                upkeep.until_quiet().await;
                if truncate_wal(&pool).await {
                    upkeep.written.store(0, Ordering::Relaxed);
                }
                upkeep.pending.store(false, Ordering::Release);
            });
        }
    }

    /// Before a write: makes sure a `PASSIVE` checkpoint runs [`CHECKPOINT_AFTER`] from now,
    /// on a task of its own, unless one is on its way.
    pub(super) fn wrote(self: &Arc<Self>, pool: &AnyPool) {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let upkeep = Arc::clone(self);
        let pool = pool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CHECKPOINT_AFTER).await;
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::debug!("could not checkpoint the inbox's WAL ({err})");
            }
            upkeep.checkpointing.store(false, Ordering::Release);
        });
    }

    async fn until_quiet(&self) {
        loop {
            let seen = self.commits.load(Ordering::Relaxed);
            tokio::time::sleep(QUIET).await;
            if self.commits.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    }

    /// After pruning: gives the pages of deleted rows back to the file system and empties the
    /// WAL. A file created before `auto_vacuum` was set keeps its size (see the inbox's docs
    /// for the one-off `VACUUM` that converts it).
    pub(super) async fn after_prune(&self, pool: &AnyPool) {
        give_pages_back(pool).await;
        if truncate_wal(pool).await {
            self.written.store(0, Ordering::Relaxed);
        }
    }
}

/// How many free pages one `incremental_vacuum` gives back: each call is one write transaction,
/// and SQLite has one writer, so deliveries wait at most for this much (8 MiB of 4 KiB pages)
/// rather than for all of a large pruning's pages at once.
const VACUUM_PAGES: u32 = 2048;

/// Gives the file's free pages back to the file system, [`VACUUM_PAGES`] at a time, letting
/// other writers in between. A file created without `auto_vacuum` has none to give.
async fn give_pages_back(pool: &AnyPool) {
    let step = format!("PRAGMA incremental_vacuum({VACUUM_PAGES})");
    loop {
        let free = sqlx::query("PRAGMA freelist_count")
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get::<i64, _>(0));
        match free {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!("could not count free pages ({err})");
                return;
            }
        }
        if let Err(err) = sqlx::query(&step).execute(pool).await {
            tracing::debug!("could not give pruned pages back ({err})");
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Moves the WAL into the database file and truncates it to nothing; whether it did. Upkeep
/// only: a checkpoint that could not finish (a reader holding an old snapshot) leaves it for
/// the next time.
async fn truncate_wal(pool: &AnyPool) -> bool {
    let busy = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get::<i64, _>(0));
    match busy {
        Ok(0) => {
            tracing::debug!("checkpointed and truncated the inbox's WAL");
            true
        }
        Ok(_) => {
            tracing::debug!("could not truncate the inbox's WAL: readers in the way");
            false
        }
        Err(err) => {
            tracing::debug!("could not truncate the inbox's WAL ({err})");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_size_limit_pragma_says_the_same_limit() {
        let pragma = format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}");
        assert!(super::super::dialect::Dialect::Sqlite
            .on_connect()
            .contains(&pragma.as_str()));
    }
}
