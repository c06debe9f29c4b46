//! [`ServerLimits`]: how [`serve`](super::serve) treats connections.

use std::time::Duration;

/// How [`serve`](super::serve) treats connections: the header-read time-out, the connection cap
/// and the shutdown deadline.
///
/// [`Default`] gives the documented defaults; each method sets one limit and leaves the others.
/// The fields are private, so that a limit added later (a keep-alive cap, say) is no breaking
/// change for code that builds limits this way.
///
/// - [`header_read_timeout`](Self::header_read_timeout), default 10 s: a connection that has
///   not sent a request's headers this long after it began waiting for them is closed. hyper's
///   timer runs whenever it waits for headers, so this closes a silent client, one that
///   trickles header lines, and an idle keep-alive connection alike.
/// - [`max_connections`](Self::max_connections), default 1 024: more connections than this
///   wait in the kernel's accept queue until one closes.
/// - [`shutdown_deadline`](Self::shutdown_deadline), default 20 s, inside the usual 30 s
///   between SIGTERM and SIGKILL: once the shutdown signal resolves, requests in flight finish
///   for up to this long, then the connections still open are closed.
///
/// ```
/// use std::time::Duration;
/// use ringyo_webhook::serve::ServerLimits;
///
/// let limits = ServerLimits::default()
///     .header_read_timeout(Duration::from_secs(5))
///     .max_connections(256);
/// assert_eq!(
///     format!("{limits:?}"),
///     "ServerLimits { header_read_timeout: 5s, max_connections: 256, shutdown_deadline: 20s }"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub(super) header_read_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) shutdown_deadline: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_deadline: Duration::from_secs(20),
        }
    }
}

impl ServerLimits {
    /// Closes a connection that has not sent a request's headers within `timeout` (default
    /// 10 s): silent, trickling, or idle between requests.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Serves at most `max` connections at once (default 1 024; 0 counts as 1); more wait in
    /// the kernel's accept queue.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Gives open connections `deadline` (default 20 s) after the shutdown signal to finish
    /// their requests, then closes them.
    #[must_use]
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }
}
