//! [`Outage`]: a failure logged once when it starts and once when it ends, not at every try.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether something that is tried again and again is failing: a database, a delivery store,
/// a secret source.
///
/// A loop that retries every second, or a layer that asks a store on every request, would
/// otherwise log the same error each time. Each result goes through [`failed`](Self::failed)
/// or [`recovered`](Self::recovered), which say whether it is the one to log. Shared by
/// reference: the requests of one layer share one.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    failing: AtomicBool,
}

impl Outage {
    /// Notes a failure: `true` if it starts an outage (log it), `false` while one goes on.
    pub(crate) fn failed(&self) -> bool {
        !self.failing.swap(true, Ordering::Relaxed)
    }

    /// Notes a success: `true` if it ends an outage (say so), `false` otherwise. A load
    /// first, so the common case, no outage, writes nothing shared.
    pub(crate) fn recovered(&self) -> bool {
        self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_once_when_it_starts_and_once_when_it_ends() {
        let outage = Outage::default();
        assert!(!outage.recovered(), "nothing to end");
        assert!(outage.failed());
        assert!(!outage.failed());
        assert!(!outage.failed());
        assert!(outage.recovered());
        assert!(!outage.recovered());
        assert!(outage.failed(), "a new outage");
    }
}
