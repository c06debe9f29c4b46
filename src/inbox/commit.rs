//! Group commit: deliveries that arrive together share one transaction, and so one fsync.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::store::{InboxError, InboxStore, NewDelivery, Stored};

/// A delivery waiting for its commit, and where to say how it went.
pub(super) struct Pending {
    pub(super) delivery: NewDelivery,
    pub(super) reply: oneshot::Sender<Result<Stored, Arc<InboxError>>>,
}

/// How many deliveries may wait for the committer before `accept` waits to queue one.
pub(super) const QUEUE: usize = 4096;

/// Commits what is queued, in batches of up to `max_batch`, one transaction at a time, until
/// every sender is gone.
///
/// While one transaction commits, the next deliveries queue; the next batch takes them all.
/// Each caller hears back only after the transaction holding its own row committed, so under
/// load the cost of a durable commit is shared, and alone a delivery waits for no one.
pub(super) async fn run(
    store: Arc<dyn InboxStore>,
    mut queue: mpsc::Receiver<Pending>,
    stored: watch::Sender<u64>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut failing = false;
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let (deliveries, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|pending| (pending.delivery, pending.reply))
            .unzip();
        match store.store(&deliveries).await {
            Ok(outcomes) => {
                if failing {
                    tracing::info!("the inbox commits again");
                    failing = false;
                }
                if outcomes.contains(&Stored::New) {
                    // Wake this process's workers; other processes hear the database's NOTIFY.
                    super::handle::wake(&stored);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The caller may have timed out and gone; the row stands either way.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                // Once per outage, not once per delivery.
                if !failing {
                    tracing::error!(
                        "the inbox cannot commit deliveries ({err}); answering 503 until it can"
                    );
                    failing = true;
                }
                let err = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(Arc::clone(&err)));
                }
            }
        }
    }
}
