//! Client quotas, Kafka's way: byte rates per user, per client id, or per both, with defaults,
//! resolved in Kafka's order of precedence; enforced by holding a request back for as long as
//! its bytes take at the quota's rate (a leaky bucket per quota holder, shared by all the
//! broker's cores), and saying so in `throttle_time_ms`. A client that ignores the throttle
//! gains nothing: its next request waits the longer.
//!
//! Pure but for the shared map of buckets: times are given, not read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
/// Percent of one core's time the requests may take (Kafka's request_percentage): 100 is
/// one second of running time per second. A request's time is what its own task runs on the
/// shard that received it (decoding, checks, building the answer; work it hands to another
/// shard, and waits for the disk or the network, are not counted).
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
/// The keys a quota may set.
pub const KEYS: &[&str] = &[PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];
/// Microseconds of running time per second that 1 of `request_percentage` allows.
pub const MICROS_PER_PERCENT: u64 = 10_000;

/// One part of an entity: a name, or the default for every name without a quota of its own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Name(String),
}

/// Whom a quota is for: a user, a client id, or both (at least one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

/// One entity's quotas, as the metadata keeps them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaConfig {
    pub entity: QuotaEntity,
    /// Key (`KEYS`) to value (bytes per second).
    pub values: BTreeMap<String, u64>,
}

/// Most quota entities the metadata holds.
pub const QUOTAS_MAX: usize = 10_000;

/// Checks a change of `entity`'s quotas: an entity of a user, a client id or both, names of
/// at most 255 bytes, known keys, rates of at least 1 byte/s.
pub fn check_change(
    entity: &QuotaEntity,
    set: &BTreeMap<String, u64>,
    remove: &[String],
) -> Result<(), String> {
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("a quota entity names a user, a client id, or both".into());
    }
    for part in [&entity.user, &entity.client_id].into_iter().flatten() {
        if let EntityName::Name(n) = part {
            if n.is_empty() || n.len() > 255 {
                return Err("an entity name has 1 to 255 bytes".into());
            }
        }
    }
    for k in set.keys().chain(remove) {
        if !KEYS.contains(&k.as_str()) {
            return Err(format!("quota '{k}' is not one of {}", KEYS.join(", ")));
        }
    }
    if let Some((k, _)) = set.iter().find(|(_, v)| **v == 0) {
        return Err(format!("quota '{k}' must be at least 1 byte per second"));
    }
    Ok(())
}

/// An entity from the wire's parts: `user` and `client-id` at most once each (`None` name: the
/// default).
pub fn entity_from_parts(
    parts: &[quiver_proto::api::quota::QuotaEntityPart],
) -> Result<QuotaEntity, String> {
    let mut entity = QuotaEntity {
        user: None,
        client_id: None,
    };
    for p in parts {
        let slot = match p.entity_type.as_str() {
            "user" => &mut entity.user,
            "client-id" => &mut entity.client_id,
            other => return Err(format!("entity type '{other}' is not user or client-id")),
        };
        if slot.is_some() {
            return Err(format!("entity type '{}' is given twice", p.entity_type));
        }
        *slot = Some(match &p.entity_name {
            Some(n) => EntityName::Name(n.clone()),
            None => EntityName::Default,
        });
    }
    Ok(entity)
}

/// The wire's parts of an entity.
pub fn entity_parts(e: &QuotaEntity) -> Vec<quiver_proto::api::quota::QuotaEntityPart> {
    let part = |kind: &str, n: &EntityName| quiver_proto::api::quota::QuotaEntityPart {
        entity_type: kind.to_string(),
        entity_name: match n {
            EntityName::Default => None,
            EntityName::Name(s) => Some(s.clone()),
        },
    };
    e.user
        .iter()
        .map(|n| part("user", n))
        .chain(e.client_id.iter().map(|n| part("client-id", n)))
        .collect()
}

/// Who shares one bucket: the names of the matched entity's parts (`None`: the part is not in
/// the matched entity).
pub type HolderKey = (Option<String>, Option<String>);

/// The quota for `key` of a request by `user` (the principal's name, without `User:`) with
/// `client_id`, in Kafka's order: user and client, user and default client, user alone,
/// default user and client, default user and default client, default user alone, client
/// alone, default client alone. Returns the rate and who shares it: every user matched by a
/// default has a bucket of its own, as in Kafka.
pub fn resolve(
    quotas: &[QuotaConfig],
    user: &str,
    client_id: &str,
    key: &str,
) -> Option<(u64, HolderKey)> {
    if quotas.is_empty() {
        return None;
    }
    let name = |n: &str| Some(EntityName::Name(n.to_string()));
    let default = || Some(EntityName::Default);
    let order = [
        (name(user), name(client_id)),
        (name(user), default()),
        (name(user), None),
        (default(), name(client_id)),
        (default(), default()),
        (default(), None),
        (None, name(client_id)),
        (None, default()),
    ];
    for (u, c) in order {
        let found = quotas
            .iter()
            .find(|q| q.entity.user == u && q.entity.client_id == c)
            .and_then(|q| q.values.get(key));
        if let Some(&rate) = found {
            let holder = (
                u.map(|_| user.to_string()),
                c.map(|_| client_id.to_string()),
            );
            return Some((rate, holder));
        }
    }
    None
}

/// A leaky bucket: when the bytes charged so far will have drained at the rate.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    free_at: Instant,
}

/// The longest one request is held back. Past it the bucket still remembers the debt, so
/// a client keeps its rate over time, but no single request waits longer.
pub const THROTTLE_MAX: Duration = Duration::from_secs(30);
/// Buckets kept before idle ones (drained for a minute) are dropped.
const BUCKETS_MAX: usize = 100_000;
/// The holder every new holder shares a bucket with while the map is full of busy ones.
const OVERFLOW: &str = "\u{0}overflow";

impl Bucket {
    /// Charges `bytes` at `rate` bytes/s; returns how long the request must wait.
    fn charge(&mut self, now: Instant, bytes: u64, rate: u64) -> Throttle {
        let start = self.free_at.max(now);
        let wait = start - now;
        let cost =
            Duration::try_from_secs_f64(bytes as f64 / rate.max(1) as f64).unwrap_or(Duration::MAX);
        self.free_at = start + cost.min(Duration::from_secs(3600));
        Throttle {
            wait: wait.min(THROTTLE_MAX),
            free_at: self.free_at,
        }
    }
}

/// A charged request's throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// How long the request is held back before it is served.
    pub wait: Duration,
    /// When the holder's bucket has drained what it was charged, this request included: the
    /// `throttle_time_ms` to answer with is the time from the answer until then, so that a
    /// client waiting that long before its next request is not held back again (and one that
    /// waited only for the answer, as the hold already made it, is not penalised twice).
    pub free_at: Instant,
}

impl Throttle {
    pub const NONE: Option<Throttle> = None;

    /// The throttle time to answer with at `now`, capped at [`THROTTLE_MAX`].
    pub fn time_at(&self, now: Instant) -> Duration {
        self.free_at
            .saturating_duration_since(now)
            .min(THROTTLE_MAX)
    }
}

/// What a request is charged for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Charge {
    Produce,
    Fetch,
    /// Microseconds of a request's running time.
    RequestTime,
}

/// Every quota holder's bucket, shared by the broker's cores.
#[derive(Debug, Default)]
pub struct Buckets {
    map: Mutex<HashMap<(Charge, HolderKey), Bucket>>,
}

impl Buckets {
    /// Charges `bytes` to `holder`'s bucket for `what` at `rate`.
    pub fn charge(
        &self,
        what: Charge,
        holder: HolderKey,
        now: Instant,
        bytes: u64,
        rate: u64,
    ) -> Throttle {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (what, holder);
        if !map.contains_key(&key) && map.len() >= BUCKETS_MAX {
            let idle = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
            map.retain(|_, b| b.free_at > idle);
            if map.len() >= BUCKETS_MAX {
                // Still full of busy holders (a client id per request, say): a new holder
                // shares one bucket with every other newcomer rather than grow the map.
                key = (what, (None, Some(OVERFLOW.to_string())));
            }
        }
        map.entry(key)
            .or_insert(Bucket { free_at: now })
            .charge(now, bytes, rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(user: Option<EntityName>, client: Option<EntityName>, rate: u64) -> QuotaConfig {
        QuotaConfig {
            entity: QuotaEntity {
                user,
                client_id: client,
            },
            values: [(PRODUCER_BYTE_RATE.to_string(), rate)].into(),
        }
    }

    #[test]
    fn the_most_specific_quota_wins_in_kafkas_order() {
        use EntityName::{Default as D, Name as N};
        let n = |s: &str| Some(N(s.into()));
        let all = vec![
            q(None, Some(D), 8),
            q(None, n("app"), 7),
            q(Some(D), None, 6),
            q(Some(D), Some(D), 5),
            q(Some(D), n("app"), 4),
            q(n("alice"), None, 3),
            q(n("alice"), Some(D), 2),
            q(n("alice"), n("app"), 1),
        ];
        // Remove the most specific one at a time: each step exposes the next in the order.
        for (i, (rate, holder)) in [
            (1, (Some("alice"), Some("app"))),
            (2, (Some("alice"), Some("app"))),
            (3, (Some("alice"), None)),
            (4, (Some("alice"), Some("app"))),
            (5, (Some("alice"), Some("app"))),
            (6, (Some("alice"), None)),
            (7, (None, Some("app"))),
            (8, (None, Some("app"))),
        ]
        .into_iter()
        .enumerate()
        {
            let quotas = &all[..all.len() - i];
            let holder = (holder.0.map(String::from), holder.1.map(String::from));
            assert_eq!(
                resolve(quotas, "alice", "app", PRODUCER_BYTE_RATE),
                Some((rate, holder)),
                "step {i}"
            );
        }
        assert_eq!(resolve(&all, "alice", "app", CONSUMER_BYTE_RATE), None);
        assert_eq!(resolve(&[], "alice", "app", PRODUCER_BYTE_RATE), None);
        // Another user under the default user quota has a bucket of its own.
        let only_default = [q(Some(D), None, 6)];
        assert_eq!(
            resolve(&only_default, "bob", "x", PRODUCER_BYTE_RATE),
            Some((6, (Some("bob".into()), None)))
        );
    }

    /// A client that names itself anew for every request cannot grow the broker's memory: past
    /// `BUCKETS_MAX` busy holders, newcomers share one bucket (and are held together).
    #[test]
    fn holders_past_the_bound_share_one_bucket() {
        let buckets = Buckets::default();
        let t0 = Instant::now();
        let id = |i: usize| (None, Some(format!("client-{i}")));
        for i in 0..BUCKETS_MAX {
            buckets.charge(Charge::Produce, id(i), t0, 1_000, 1_000);
        }
        let first = buckets.charge(Charge::Produce, id(BUCKETS_MAX), t0, 1_000, 1_000);
        let second = buckets.charge(Charge::Produce, id(BUCKETS_MAX + 1), t0, 1_000, 1_000);
        assert_eq!(first.wait, Duration::ZERO);
        assert_eq!(
            second.wait,
            Duration::from_secs(1),
            "the second newcomer waits for the first"
        );
        assert_eq!(buckets.map.lock().unwrap().len(), BUCKETS_MAX + 1);
        // Once the others are idle for a minute, a newcomer has a bucket of its own again.
        let later = t0 + Duration::from_secs(120);
        let own = buckets.charge(Charge::Produce, id(BUCKETS_MAX + 2), later, 1_000, 1_000);
        assert_eq!(own.wait, Duration::ZERO);
        assert!(buckets.map.lock().unwrap().len() < 10);
    }

    #[test]
    fn a_bucket_holds_requests_to_the_rate_whoever_ignores_it() {
        let buckets = Buckets::default();
        let t0 = Instant::now();
        let holder = (Some("u".to_string()), None);
        // 10 requests of 100 KB sent at once at 100 KB/s: the k-th waits k seconds.
        for k in 0..10u64 {
            let t = buckets.charge(Charge::Produce, holder.clone(), t0, 100_000, 100_000);
            assert_eq!(t.wait, Duration::from_secs(k));
            // Answered once held: the client is asked to wait for its own bytes' second.
            assert_eq!(t.time_at(t0 + t.wait), Duration::from_secs(1));
        }
        // Waiting them out, a request at the rate waits nothing.
        let later = t0 + Duration::from_secs(10);
        let t = buckets.charge(Charge::Produce, holder.clone(), later, 100_000, 100_000);
        assert_eq!(t.wait, Duration::ZERO);
        // Fetch is another bucket; the wait and the throttle time are capped.
        let t = buckets.charge(Charge::Fetch, holder.clone(), t0, u64::MAX, 1);
        assert_eq!((t.wait, t.time_at(t0)), (Duration::ZERO, THROTTLE_MAX));
        assert_eq!(
            buckets.charge(Charge::Fetch, holder, t0, 1, 1).wait,
            THROTTLE_MAX
        );
    }
}
