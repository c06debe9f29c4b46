//! [`MemoryDeliveryStore`]: a bounded delivery store in this process's memory.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::Mutex,
};

use chrono::{DateTime, Utc};

use super::store::{Claim, ClaimToken, DeliveryStore, StoreError, StoreFuture};
use crate::verify::DeliveryId;

/// A [`DeliveryStore`] in this process's memory, bounded in size.
///
/// Entries live only as long as they must: a handled delivery until its timestamp leaves the
/// layer's tolerance window (a replay after that is refused as stale), a claim until its lease
/// ends. Expired entries are dropped as new ones arrive.
///
/// **At the cap** ([`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) entries unless set), room is
/// made by forgetting the handled delivery that would expire soonest; a copy of a forgotten
/// delivery is handled again. The cap bounds memory under any flood of distinct valid
/// deliveries, at the price of exactly-once for the oldest handled entries. A claim in flight
/// is never forgotten (its retry would run beside it): when every entry is one, a new claim
/// fails, and the layer answers 503 with `Retry-After`, so Ringyo retries once a handler
/// finishes. Size the cap above your peak number of events per tolerance window (each entry
/// takes about 150 bytes).
///
/// The table of entries is allocated for the cap when the store is made (about 10 MB at the
/// default cap, the rest as entries arrive), not grown as it fills: growing copies every entry
/// under the store's lock, and under load each doubling stopped every request for tens of
/// milliseconds (a p99 of 27.8 ms against 1.3 ms without a store, `benches/README.md`).
/// The system backs those pages only as entries first land in them, so while a table sized
/// far above what it holds fills, most inserts fault a page in (with a cap of 2,000,000, about
/// 0.8 faults per delivery stored while it filled, `benches/README.md`). Size the cap to your
/// traffic rather than far above it.
///
/// It is per process: replicas behind a load balancer each have their own, so use a shared
/// store there.
pub struct MemoryDeliveryStore {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<DeliveryId, Entry>,
    // Ordered by expiry, for purging and for choosing what to forget at the cap.
    handled: BTreeSet<(DateTime<Utc>, DeliveryId)>,
    in_flight: BTreeSet<(DateTime<Utc>, DeliveryId)>,
}

#[derive(Clone, Copy)]
struct Entry {
    handled: bool,
    until: DateTime<Utc>,
    /// Who holds an in-flight claim.
    token: Option<ClaimToken>,
}

impl MemoryDeliveryStore {
    /// The default cap on entries: 100 000 (about 15 MB).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A store holding at most [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) entries.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A store holding at most `capacity` entries (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let state = State {
            entries: HashMap::with_capacity(capacity),
            ..State::default()
        };
        Self {
            capacity,
            state: Mutex::new(state),
        }
    }

    /// How many deliveries it remembers now, expired ones included until they are purged.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every method leaves it whole
        // before it could panic, so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claim_now(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let mut state = self.lock();
        state.purge(now);
        if let Some(entry) = state.entries.get(&id) {
            return Ok(if entry.handled {
                Claim::Handled
            } else {
                Claim::InFlight
            });
        }
        if !state.make_room(self.capacity) {
            return Err(StoreError::new(
                "the memory delivery store is full of deliveries being handled",
            ));
        }
        state.insert(
            id,
            Entry {
                handled: false,
                until: lease_until,
                token: Some(token),
            },
        );
        Ok(Claim::Claimed)
    }
}

impl State {
    fn insert(&mut self, id: DeliveryId, entry: Entry) {
        if let Some(old) = self.entries.insert(id, entry) {
            self.index(old.handled).remove(&(old.until, id));
        }
        self.index(entry.handled).insert((entry.until, id));
    }

    fn remove(&mut self, id: &DeliveryId) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.index(entry.handled).remove(&(entry.until, *id));
        Some(entry)
    }

    fn index(&mut self, handled: bool) -> &mut BTreeSet<(DateTime<Utc>, DeliveryId)> {
        if handled {
            &mut self.handled
        } else {
            &mut self.in_flight
        }
    }

    /// Drops every entry whose time is up.
    fn purge(&mut self, now: DateTime<Utc>) {
        for handled in [true, false] {
            while let Some(&(until, id)) = self.index(handled).first() {
                if until >= now {
                    break;
                }
                self.remove(&id);
            }
        }
    }

    /// Forgets handled entries, nearest expiry first, until one more fits; `false` if only
    /// claims in flight are left and none fits.
    fn make_room(&mut self, capacity: usize) -> bool {
        while self.entries.len() >= capacity {
            let Some(&(_, id)) = self.handled.first() else {
                return false;
            };
            self.remove(&id);
        }
        true
    }
}

impl DeliveryStore for MemoryDeliveryStore {
    fn claim(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreFuture<Result<Claim, StoreError>> {
        let claim = self.claim_now(id, token, now, lease_until);
        Box::pin(std::future::ready(claim))
    }

    fn complete(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        keep_until: DateTime<Utc>,
    ) -> StoreFuture<Result<(), StoreError>> {
        let mut state = self.lock();
        match state.entries.get(&id) {
            // Handled already, or claimed since by another request whose claim stands.
            Some(entry) if entry.handled || entry.token != Some(token) => {}
            held => {
                // The claim's lease may have run out and been purged meanwhile: then this is a
                // new entry, kept if there is room.
                if held.is_some() || state.make_room(self.capacity) {
                    let handled = Entry {
                        handled: true,
                        until: keep_until,
                        token: None,
                    };
                    state.insert(id, handled);
                }
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, id: DeliveryId, token: ClaimToken) -> StoreFuture<Result<(), StoreError>> {
        let mut state = self.lock();
        // Only this request's claim is released: a handled entry stays handled, and another
        // request's claim stays held.
        let held = state
            .entries
            .get(&id)
            .is_some_and(|entry| !entry.handled && entry.token == Some(token));
        if held {
            state.remove(&id);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Default for MemoryDeliveryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryDeliveryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDeliveryStore")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::verify::Verifier;

    fn id(n: u32) -> DeliveryId {
        let verifier = Verifier::new("whsec_test").unwrap();
        verifier
            .verify(&n.to_be_bytes(), &verifier.sign(&n.to_be_bytes()))
            .unwrap()
            .delivery_id()
    }

    /// The token of the request the tests play: one for all, since each test is one request
    /// at a time, except where it says otherwise.
    const TOKEN: ClaimToken = ClaimToken::from_raw(7);

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::minutes(minutes)
    }

    /// Growing the table would hold the lock while it copies every entry.
    #[test]
    fn the_table_never_grows_while_it_fills_to_the_cap() {
        let store = MemoryDeliveryStore::with_capacity(5_000);
        let allocated = store.lock().entries.capacity();
        assert!(allocated >= 5_000);
        for n in 0..5_000 {
            let claim = store.claim_now(id(n), ClaimToken::new(), t(0), t(5));
            assert!(matches!(claim, Ok(Claim::Claimed)));
        }
        assert_eq!(store.lock().entries.capacity(), allocated);
    }

    #[test]
    fn claim_then_complete_then_duplicate() {
        let store = MemoryDeliveryStore::new();
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(0), t(1)).unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(0), t(1)).unwrap(),
            Claim::InFlight
        );
        drop(store.complete(id(1), TOKEN, t(60)));
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(30), t(31)).unwrap(),
            Claim::Handled
        );
        // After keep_until the entry is gone (the timestamp check refuses such replays).
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(61), t(62)).unwrap(),
            Claim::Claimed
        );
    }

    #[test]
    fn released_claim_can_be_claimed_again_but_handled_stays() {
        let store = MemoryDeliveryStore::new();
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(0), t(1)).unwrap(),
            Claim::Claimed
        );
        drop(store.release(id(1), TOKEN));
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(0), t(1)).unwrap(),
            Claim::Claimed
        );
        drop(store.complete(id(1), TOKEN, t(60)));
        drop(store.release(id(1), TOKEN));
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(0), t(1)).unwrap(),
            Claim::Handled
        );
    }

    #[test]
    fn abandoned_claim_expires_with_its_lease() {
        let store = MemoryDeliveryStore::new();
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(0), t(1)).unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(1), t(2)).unwrap(),
            Claim::InFlight
        );
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(2), t(3)).unwrap(),
            Claim::Claimed
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn cap_holds_under_a_flood_and_forgets_oldest_handled_first() {
        let store = MemoryDeliveryStore::with_capacity(100);
        assert_eq!(
            store.claim_now(id(0), TOKEN, t(0), t(1)).unwrap(),
            Claim::Claimed
        ); // stays in flight
        for n in 1..1000 {
            assert_eq!(
                store.claim_now(id(n), TOKEN, t(0), t(1)).unwrap(),
                Claim::Claimed
            );
            drop(store.complete(id(n), TOKEN, t(60) + TimeDelta::seconds(n.into())));
            assert!(store.len() <= 100);
        }
        assert_eq!(store.len(), 100);
        // The in-flight claim survived; the newest handled ones are remembered.
        assert_eq!(
            store.claim_now(id(0), TOKEN, t(0), t(1)).unwrap(),
            Claim::InFlight
        );
        assert_eq!(
            store.claim_now(id(999), TOKEN, t(0), t(1)).unwrap(),
            Claim::Handled
        );
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(0), t(1)).unwrap(),
            Claim::Claimed
        );
    }

    #[test]
    fn at_the_cap_claims_in_flight_are_never_forgotten_and_a_new_one_is_refused() {
        let store = MemoryDeliveryStore::with_capacity(2);
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(0), t(9)).unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_now(id(2), TOKEN, t(0), t(9)).unwrap(),
            Claim::Claimed
        );
        assert!(store.claim_now(id(3), TOKEN, t(0), t(9)).is_err());
        // Both retries still see their delivery in flight: neither runs twice.
        assert_eq!(
            store.claim_now(id(1), TOKEN, t(1), t(9)).unwrap(),
            Claim::InFlight
        );
        assert_eq!(
            store.claim_now(id(2), TOKEN, t(1), t(9)).unwrap(),
            Claim::InFlight
        );
        // Once one is handled, it is what the next claim's room is made from.
        drop(store.complete(id(1), TOKEN, t(60)));
        assert_eq!(
            store.claim_now(id(3), TOKEN, t(1), t(9)).unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_now(id(2), TOKEN, t(1), t(9)).unwrap(),
            Claim::InFlight
        );
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_late_settle_does_not_touch_the_claim_that_replaced_it() {
        let store = MemoryDeliveryStore::new();
        let (first, second) = (ClaimToken::from_raw(1), ClaimToken::from_raw(2));
        assert_eq!(
            store.claim_now(id(1), first, t(0), t(1)).unwrap(),
            Claim::Claimed
        );
        // The first lease runs out; a retry claims the delivery.
        assert_eq!(
            store.claim_now(id(1), second, t(2), t(3)).unwrap(),
            Claim::Claimed
        );
        // The first request finishes late: neither its release nor its completion counts.
        drop(store.release(id(1), first));
        drop(store.complete(id(1), first, t(60)));
        assert_eq!(
            store.claim_now(id(1), first, t(2), t(3)).unwrap(),
            Claim::InFlight
        );
        drop(store.complete(id(1), second, t(60)));
        assert_eq!(
            store.claim_now(id(1), first, t(2), t(3)).unwrap(),
            Claim::Handled
        );
    }
}
