//! [`ChaosFault`]: what can happen to a delivery between Ringyo and a handler, and the plan of
//! one run of the events under it.

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};

use super::events::Planned;
use crate::verify::{after, DeliveryId};

/// A fault [`Chaos`](super::Chaos) plays the events under, each in a run of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChaosFault {
    /// Each delivery is sent twice, the second a second after the first (Ringyo's first
    /// retry, for an answer it never saw): the first has been handled by then.
    SentTwice,
    /// Each delivery is sent twice at once, both requests in flight together (a retry while
    /// the first attempt is still being answered).
    SentTwiceAtOnce,
    /// Deliveries arrive out of timestamp order, as Ringyo's retries would make them: the
    /// newest on time, each older one a step later on the retry schedule (1 s, 5 s, 30 s,
    /// 2 min, 10 min after the attempt before), so that, within the schedule's reach, the
    /// events arrive newest first.
    Reordered,
    /// The handler runs, then its process dies before the delivery's outcome is committed:
    /// the effects the handler made outside the inbox's transaction stay, the inbox's "done"
    /// does not, and the delivery runs again once its lease runs out. A transactional
    /// handler's transaction is rolled back instead of committed. Inbox handlers only: for a
    /// route it is an answer Ringyo never saw, which is [`SentTwice`](Self::SentTwice).
    CrashBeforeCommit,
    /// The lease runs out while the handler runs (a stalled process, a database away):
    /// another worker takes the delivery and handles it, and then the first attempt's handler
    /// goes on and ends, and its outcome is refused. Inbox handlers only: a route has no lease.
    LeaseLost,
}

impl ChaosFault {
    /// Every fault, in the order [`Chaos`](super::Chaos) plays them.
    pub const ALL: [ChaosFault; 5] = [
        Self::SentTwice,
        Self::SentTwiceAtOnce,
        Self::Reordered,
        Self::CrashBeforeCommit,
        Self::LeaseLost,
    ];

    /// Whether it happens while the inbox runs the handler, rather than on the way in.
    pub(super) fn in_the_worker(self) -> bool {
        matches!(self, Self::CrashBeforeCommit | Self::LeaseLost)
    }
}

impl fmt::Display for ChaosFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SentTwice => "sent twice, the second a second after the first",
            Self::SentTwiceAtOnce => "sent twice at once",
            Self::Reordered => "delivered out of order by Ringyo's retries",
            Self::CrashBeforeCommit => {
                "the process crashed after the handler ran, before the outcome was committed"
            }
            Self::LeaseLost => {
                "the lease ran out while the handler ran, and another worker handled it too"
            }
        })
    }
}

/// Ringyo's retry schedule, as the time of each attempt after the first: 1 s, 5 s, 30 s,
/// 2 min and 10 min after the attempt before (Ringyo's webhook documentation).
const ATTEMPTS_AT: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(6),
    Duration::from_secs(36),
    Duration::from_secs(156),
    Duration::from_secs(756),
];

/// One arrival of a delivery at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Arrival {
    /// Which delivery, by its place in timestamp order.
    pub(super) index: usize,
    pub(super) at: DateTime<Utc>,
    /// Sent twice at once.
    pub(super) twice: bool,
}

/// One run: the arrivals in the order they come, and the deliveries whose first attempt
/// suffers the fault in the worker.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) fault: Option<ChaosFault>,
    pub(super) arrivals: Vec<Arrival>,
    pub(super) in_worker: Vec<DeliveryId>,
    /// What happened to the one delivery singled out, when it is not all of the fault.
    pub(super) note: Option<String>,
}

impl Plan {
    /// Each delivery once, in timestamp order.
    pub(super) fn clean(deliveries: &[Planned]) -> Self {
        Self::build(
            None,
            deliveries,
            |index| vec![(deliveries[index].at, false)],
            None,
        )
    }

    /// `fault` on every delivery, or on `only` that one; `None` if the fault does nothing to
    /// it (the newest of a reordering arrives on time).
    pub(super) fn new(
        fault: ChaosFault,
        deliveries: &[Planned],
        only: Option<usize>,
    ) -> Option<Self> {
        let hit = |index: usize| only.is_none_or(|only| only == index);
        let newest = deliveries.len().saturating_sub(1);
        let late = |index: usize| ATTEMPTS_AT[(newest - index) % ATTEMPTS_AT.len()];
        if fault == ChaosFault::Reordered && only.is_some_and(|only| late(only).is_zero()) {
            return None;
        }
        let note = only.map(|index| match fault {
            ChaosFault::Reordered => format!(
                "it arrived {} s late, after newer events",
                late(index).as_secs()
            ),
            _ => format!("only it was {fault}"),
        });
        let arrivals = |planned: &Planned, index: usize| {
            let at = planned.at;
            match fault {
                ChaosFault::SentTwice if hit(index) => {
                    vec![(at, false), (after(at, ATTEMPTS_AT[1]), false)]
                }
                ChaosFault::SentTwiceAtOnce if hit(index) => vec![(at, true)],
                ChaosFault::Reordered if hit(index) => vec![(after(at, late(index)), false)],
                _ => vec![(at, false)],
            }
        };
        let mut plan = Self::build(
            Some(fault),
            deliveries,
            |index| arrivals(&deliveries[index], index),
            note,
        );
        if fault.in_the_worker() {
            plan.in_worker = (0..deliveries.len())
                .filter(|&index| hit(index))
                .map(|index| deliveries[index].described.id)
                .collect();
        }
        Some(plan)
    }

    fn build(
        fault: Option<ChaosFault>,
        deliveries: &[Planned],
        arrivals: impl Fn(usize) -> Vec<(DateTime<Utc>, bool)>,
        note: Option<String>,
    ) -> Self {
        let mut all: Vec<Arrival> = (0..deliveries.len())
            .flat_map(|index| {
                arrivals(index)
                    .into_iter()
                    .map(move |(at, twice)| Arrival { index, at, twice })
            })
            .collect();
        all.sort_by_key(|arrival| (arrival.at, arrival.index));
        Self {
            fault,
            arrivals: all,
            in_worker: Vec::new(),
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDelivery;

    fn three() -> Vec<Planned> {
        let at: DateTime<Utc> = "2024-01-15T10:30:00Z".parse().unwrap();
        (0..3)
            .map(|n| {
                let ms = chrono::TimeDelta::milliseconds(200 * n);
                Planned::new(TestDelivery::new("call.ringing").timestamp(at + ms))
            })
            .collect()
    }

    fn order(plan: &Plan) -> Vec<usize> {
        plan.arrivals.iter().map(|arrival| arrival.index).collect()
    }

    #[test]
    fn reordering_within_the_retry_schedule_brings_the_newest_first() {
        let deliveries = three();
        assert_eq!(order(&Plan::clean(&deliveries)), [0, 1, 2]);
        let plan = Plan::new(ChaosFault::Reordered, &deliveries, None).unwrap();
        assert_eq!(order(&plan), [2, 1, 0]);
        let late = plan.arrivals[2].at - deliveries[0].at;
        assert_eq!(
            late.num_seconds(),
            6,
            "the oldest comes on Ringyo's second retry"
        );
        assert!(Plan::new(ChaosFault::Reordered, &deliveries, Some(2)).is_none());
        let alone = Plan::new(ChaosFault::Reordered, &deliveries, Some(1)).unwrap();
        assert_eq!(order(&alone), [0, 2, 1]);
    }

    #[test]
    fn a_delivery_sent_twice_comes_again_on_ringyos_first_retry() {
        let deliveries = three();
        let plan = Plan::new(ChaosFault::SentTwice, &deliveries, Some(0)).unwrap();
        assert_eq!(order(&plan), [0, 1, 2, 0]);
        assert_eq!((plan.arrivals[3].at - plan.arrivals[0].at).num_seconds(), 1);
        let at_once = Plan::new(ChaosFault::SentTwiceAtOnce, &deliveries, None).unwrap();
        assert!(at_once.arrivals.iter().all(|arrival| arrival.twice));
        let crash = Plan::new(ChaosFault::CrashBeforeCommit, &deliveries, Some(1)).unwrap();
        assert_eq!(order(&crash), [0, 1, 2]);
        assert_eq!(crash.in_worker, [deliveries[1].described.id]);
    }
}
