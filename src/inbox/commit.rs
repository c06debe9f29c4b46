//! Group commit: writes that arrive together share one transaction, and so one fsync.
//!
//! The inbox queues the deliveries it accepts here, and a worker the outcomes of its handlers:
//! on a disk that must flush each commit, a transaction per write would cap both at the
//! disk's flush rate.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};

use super::store::InboxError;

/// How many writes may wait for the committer before a caller waits to queue one.
const QUEUE: usize = 4096;

/// A write waiting for its commit, and where to say how it went.
struct Pending<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O, Arc<InboxError>>>,
}

/// The sending side of a committer task: cheap to clone; the task ends with the last clone.
pub(super) struct Batcher<I, O> {
    queue: mpsc::Sender<Pending<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Spawns the committer: it takes what is queued, up to `max_batch` at a time, passes it
    /// to `commit` (one transaction, returning one outcome per item, in order), shows the
    /// result to `after` (for logging and wake-ups), and answers each caller.
    ///
    /// While one transaction commits, the next writes queue; the next batch takes them all.
    /// Each caller hears back only after the transaction holding its own write committed, so
    /// under load the cost of a durable commit is shared, and alone a write waits for no one.
    pub(super) fn spawn<C, F, A>(max_batch: usize, mut commit: C, mut after: A) -> Self
    where
        C: FnMut(Vec<I>) -> F + Send + 'static,
        F: Future<Output = Result<Vec<O>, InboxError>> + Send + 'static,
        A: FnMut(&Result<Vec<O>, InboxError>) + Send + 'static,
    {
        let (queue, mut pending) = mpsc::channel::<Pending<I, O>>(QUEUE);
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while pending.recv_many(&mut batch, max_batch).await > 0 {
                let (items, replies): (Vec<_>, Vec<_>) = batch
                    .drain(..)
                    .map(|pending| (pending.item, pending.reply))
                    .unzip();
                // A task of its own: a store that panics fails this batch, not the committer.
                let result = match tokio::spawn(commit(items)).await {
                    Ok(result) => result,
                    Err(err) => Err(InboxError::database(format!("the store failed: {err}"))),
                };
                after(&result);
                // A caller may have timed out and gone; the write stands either way.
                match result {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(err) => {
                        let err = Arc::new(err);
                        for reply in replies {
                            let _ = reply.send(Err(Arc::clone(&err)));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues `item` and waits for the commit that holds it.
    ///
    /// # Errors
    ///
    /// The commit's error, or [`InboxError::Closed`] if the committer is gone (its runtime
    /// shut down).
    pub(super) async fn submit(&self, item: I) -> Result<O, InboxError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { item, reply })
            .await
            .map_err(|_| InboxError::Closed)?;
        match outcome.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(err)) => Err(InboxError::database(err)),
            Err(_) => Err(InboxError::Closed),
        }
    }
}
