//! [`MemoryDeliveryStore`]: a bounded delivery store in this process's memory.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use chrono::{DateTime, Utc};

use super::store::{Claim, ClaimToken, DeliveryStore, StoreError, StoreFuture};
use crate::verify::DeliveryId;

/// A [`DeliveryStore`] in this process's memory, bounded in size.
///
/// Entries live only as long as they must: a handled delivery until its timestamp leaves the
/// layer's tolerance window (a replay after that is refused as stale), a claim until its lease
/// ends. Expired entries are dropped as new ones arrive: each claim purges its own shard and
/// the next in turn.
///
/// **Shards.** The entries are split by delivery id into up to 64 shards of at least 1,024
/// entries each (one below a cap of 2,048), each with its share of the cap, its own table and
/// its own lock. No call ever waits on work over the whole store: what a table does now and
/// then over all its entries (clearing the marks removed entries leave) takes time in
/// proportion to its size while its lock is held, and one table of 100,000 entries, growing
/// to clear them, stopped every request for 4 to 16 ms (`benches/README.md`). Ids are
/// digests, so the shards fill evenly; requests on other shards never wait for one another's
/// lock.
///
/// **At the cap** ([`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) entries unless set), room in a
/// shard is made by forgetting its handled delivery that would expire soonest; a copy of a
/// forgotten delivery is handled again. The cap bounds memory under any flood of distinct
/// valid deliveries, at the price of exactly-once for the oldest handled entries. A claim in
/// flight is never forgotten (its retry would run beside it): when every entry of its shard
/// is one, a new claim fails, and the layer answers 503 with `Retry-After`, so Ringyo retries
/// once a handler finishes. Size the cap above your peak number of events per tolerance
/// window (each entry takes about 300 bytes: 30 MB at the default cap, once full).
///
/// Each shard's table is allocated when the store is made with room for twice its share of
/// the cap (about 21 MB in all at the default cap), and never grows: growing copies every
/// entry under the lock, and under load each doubling of a single table stopped every request
/// for tens of milliseconds (a p99 of 27.8 ms against 1.3 ms without a store,
/// `benches/README.md`). Filled to just its share, a table grew to twice its size anyway
/// once entries came and went: the room is what a full store takes in any case. The system
/// backs those pages only as entries first land in them, so while a table sized far above
/// what it holds fills, most inserts fault a page in (with a cap of 2,000,000, about 0.8
/// faults per delivery stored while it filled, `benches/README.md`). Size the cap to your
/// traffic rather than far above it.
///
/// It is per process: replicas behind a load balancer each have their own, so use a shared
/// store there.
///
/// ```
/// use std::sync::Arc;
///
/// use ringyo_webhook::{MemoryDeliveryStore, RingyoWebhookLayer};
///
/// # std::env::set_var("RINGYO_WEBHOOK_SECRET", "whsec_doctest_current");
/// // Above the peak of events in one tolerance window; an `Arc` keeps a handle for a gauge.
/// let store = Arc::new(MemoryDeliveryStore::with_capacity(50_000));
/// let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?
///     .delivery_store(Arc::clone(&store));
/// assert!(store.is_empty());
/// # let _ = layer;
/// # Ok::<(), ringyo_webhook::SecretError>(())
/// ```
pub struct MemoryDeliveryStore {
    shards: Box<[Shard]>,
    /// The next shard a claim purges besides its own, in turn.
    sweep: AtomicUsize,
}

/// A share of the store: its entries, its share of the cap, and the lock over them.
struct Shard {
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

/// A shard's table has room for this many times its share of the cap. Full to its share, it
/// is then at most half full, where a removed entry leaves an empty slot rather than a
/// tombstone (the standard table marks a slot so when the slots around it are full); filled
/// to its share, tombstones would pile up until the table, to clear them, grew to twice its
/// size, as the old single table did under load.
const TABLE_ROOM: usize = 2;

/// The fewest entries a shard holds, unless the whole cap is smaller: a delivery's shard
/// must still have room for the claims in flight beside it.
const MIN_SHARD: usize = 1024;

/// The most shards: each lock and table is then a sixty-fourth of the store.
const MAX_SHARDS: usize = 64;

/// How many shards a store of `capacity` entries has: a power of two, each of at least
/// [`MIN_SHARD`] entries, at most [`MAX_SHARDS`], one for a cap below two shards' worth.
fn shard_count(capacity: usize) -> usize {
    let fit = (capacity / MIN_SHARD).clamp(1, MAX_SHARDS);
    // The largest power of two not above `fit`, so no shard falls below MIN_SHARD.
    1 << fit.ilog2()
}

impl MemoryDeliveryStore {
    /// The default cap on entries: 100 000 (about 30 MB once full).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A store holding at most [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) entries.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A store holding at most `capacity` entries (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let count = shard_count(capacity);
        let shards = (0..count)
            .map(|index| {
                // The cap split as evenly as it goes: the first shards take the remainder.
                let capacity = capacity / count + usize::from(index < capacity % count);
                Shard {
                    capacity,
                    state: Mutex::new(State {
                        entries: HashMap::with_capacity(capacity * TABLE_ROOM),
                        ..State::default()
                    }),
                }
            })
            .collect();
        Self {
            shards,
            sweep: AtomicUsize::new(0),
        }
    }

    /// How many deliveries it remembers now, expired ones included until they are purged.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().entries.len())
            .sum()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims `id` in its shard, then purges the next shard in turn unless that is the same
    /// one, so every shard is purged within as many claims as there are shards, whether
    /// deliveries land in it or not.
    fn claim_now(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let entry = Entry {
            handled: false,
            until: lease_until,
            token: Some(token),
        };
        let own = self.shard_index(&id);
        let claim = self.shards[own].claim(id, entry, now);
        let next = self.sweep.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        if next != own {
            self.shards[next].lock().purge(now);
        }
        claim
    }

    /// The shard of `id`.
    fn shard(&self, id: &DeliveryId) -> &Shard {
        &self.shards[self.shard_index(id)]
    }

    /// Where the shard of `id` is: by its first byte, a digest's, so the shards fill evenly
    /// (their count is a power of two no larger than 64, so the mask keeps it in range).
    fn shard_index(&self, id: &DeliveryId) -> usize {
        usize::from(id.as_bytes()[0]) & (self.shards.len() - 1)
    }
}

impl Shard {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every method leaves it whole
        // before it could panic, so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `id` as `claim` says (in flight, until its lease ends) unless it is there.
    fn claim(&self, id: DeliveryId, claim: Entry, now: DateTime<Utc>) -> Result<Claim, StoreError> {
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
        state.insert(id, claim);
        Ok(Claim::Claimed)
    }

    fn complete(&self, id: DeliveryId, token: ClaimToken, keep_until: DateTime<Utc>) {
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
    }

    fn release(&self, id: DeliveryId, token: ClaimToken) {
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
        Box::pin(std::future::ready(self.claim_now(
            id,
            token,
            now,
            lease_until,
        )))
    }

    fn complete(
        &self,
        id: DeliveryId,
        token: ClaimToken,
        keep_until: DateTime<Utc>,
    ) -> StoreFuture<Result<(), StoreError>> {
        self.shard(&id).complete(id, token, keep_until);
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, id: DeliveryId, token: ClaimToken) -> StoreFuture<Result<(), StoreError>> {
        self.shard(&id).release(id, token);
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
            .field(
                "capacity",
                &self
                    .shards
                    .iter()
                    .map(|shard| shard.capacity)
                    .sum::<usize>(),
            )
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

    impl MemoryDeliveryStore {
        /// Each shard's table's room.
        fn allocated(&self) -> Vec<usize> {
            let tables = self.shards.iter();
            tables
                .map(|shard| shard.lock().entries.capacity())
                .collect()
        }
    }

    /// Growing a table would hold its lock while it copies every entry.
    #[test]
    fn the_tables_never_grow_while_they_fill_to_the_cap() {
        let store = MemoryDeliveryStore::with_capacity(5_000);
        let allocated = store.allocated();
        assert_eq!(allocated.len(), 4);
        // Far past the cap: each shard fills to its share, then forgets its oldest handled.
        for n in 0..40_000 {
            let claim = store.claim_now(id(n), TOKEN, t(0), t(5));
            assert!(matches!(claim, Ok(Claim::Claimed)));
            drop(store.complete(id(n), TOKEN, t(60)));
        }
        assert_eq!(store.len(), 5_000);
        // Growing doubles a table's room; a tombstone only takes one slot of it.
        for (after, before) in store.allocated().into_iter().zip(allocated) {
            assert!(after <= before, "a table grew from {before} to {after}");
        }
    }

    /// Whatever a call costs in proportion to its table, a table is at most a sixty-fourth of
    /// a large store, and no shard is so small that the claims in flight beside a delivery
    /// fill it.
    #[test]
    fn shards_split_the_cap_evenly_in_powers_of_two() {
        for (capacity, shards) in [
            (1, 1),
            (2_047, 1),
            (2_048, 2),
            (5_000, 4),
            (100_000, 64),
            (10_000_000, 64),
        ] {
            let store = MemoryDeliveryStore::with_capacity(capacity);
            let caps: Vec<usize> = store.shards.iter().map(|shard| shard.capacity).collect();
            assert_eq!(caps.len(), shards, "cap {capacity}");
            assert_eq!(caps.iter().sum::<usize>(), capacity);
            let (least, most) = (caps.iter().min().unwrap(), caps.iter().max().unwrap());
            assert!(most - least <= 1, "cap {capacity}: {caps:?}");
            assert!(
                *least >= MIN_SHARD.min(capacity),
                "cap {capacity}: {caps:?}"
            );
        }
    }

    /// Under a flood far past the cap, across every shard, the store stays within it and
    /// never forgets a claim in flight.
    #[test]
    fn a_sharded_store_holds_its_cap_and_its_claims_in_flight() {
        let store = MemoryDeliveryStore::with_capacity(4_096);
        let in_flight: Vec<DeliveryId> = (0..64).map(id).collect();
        for &delivery in &in_flight {
            assert_eq!(
                store.claim_now(delivery, TOKEN, t(0), t(9)).unwrap(),
                Claim::Claimed
            );
        }
        for n in 64..20_000 {
            assert_eq!(
                store.claim_now(id(n), TOKEN, t(0), t(9)).unwrap(),
                Claim::Claimed
            );
            drop(store.complete(id(n), TOKEN, t(60) + TimeDelta::seconds(n.into())));
        }
        assert_eq!(store.len(), 4_096);
        for delivery in in_flight {
            assert_eq!(
                store.claim_now(delivery, TOKEN, t(1), t(9)).unwrap(),
                Claim::InFlight
            );
        }
        assert_eq!(
            store.claim_now(id(19_999), TOKEN, t(1), t(9)).unwrap(),
            Claim::Handled
        );
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
