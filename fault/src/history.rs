//! What a run records: every operation a workload invoked, with its outcome, and what every
//! replica holds at the end. The checker (`checker.rs`) reads only these, so a history can be
//! written to disk, replayed and checked again without brokers.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Microseconds since the run started.
pub type Micros = u64;

/// A topic partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tp {
    /// The topic's name.
    pub topic: String,
    /// The partition's index.
    pub partition: u32,
}

impl Tp {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Tp {
        Tp {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for Tp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Who wrote a record and where it stands in that writer's sequence: every value a workload
/// produces is unique, so the checker can find each one in the final logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Written {
    /// The workload's producer (not the broker's producer id, which changes with epochs).
    pub producer: u32,
    /// Its n-th record to this partition, from 0.
    pub seq: u64,
}

impl Written {
    const PREFIX: &'static str = "quiver-fault:";

    /// The record value that carries this identity (`quiver-fault:<producer>:<seq>`).
    pub fn encode(&self) -> String {
        format!("{}{}:{}", Self::PREFIX, self.producer, self.seq)
    }

    /// The identity in a record value, if the value is one of the workload's.
    pub fn decode(value: &[u8]) -> Option<Written> {
        let s = std::str::from_utf8(value)
            .ok()?
            .strip_prefix(Self::PREFIX)?;
        let (p, q) = s.split_once(':')?;
        Some(Written {
            producer: p.parse().ok()?,
            seq: q.parse().ok()?,
        })
    }
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.seq)
    }
}

/// The acknowledgement a produce asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// acks=0: nothing is promised.
    None,
    /// acks=1: durable on the leader; may be lost when leadership moves.
    Leader,
    /// acks=all: durable on every in-sync replica.
    All,
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// One record produced.
    Produce {
        /// Where to.
        tp: Tp,
        /// What (unique in the run).
        written: Written,
        /// With which acknowledgement.
        acks: Acks,
    },
    /// A consumer group's offset commit for one partition.
    Commit {
        /// The group.
        group: String,
        /// The partition.
        tp: Tp,
        /// The committed offset (the next record to read).
        offset: i64,
    },
    /// A read of a group's committed offset (OffsetFetch).
    FetchCommitted {
        /// The group.
        group: String,
        /// The partition.
        tp: Tp,
    },
    /// A record a consumer received.
    Read {
        /// From where.
        tp: Tp,
        /// At which offset.
        offset: i64,
        /// The record's identity; `None` when the value is not the workload's.
        written: Option<Written>,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done. `offset`: where a produce was written, or the committed offset a FetchCommitted
    /// returned (`None`: nothing committed).
    Ok {
        /// See above.
        offset: Option<i64>,
    },
    /// Definitely not done (the broker refused it).
    Fail(String),
    /// Maybe done: a timeout, a lost connection, still in flight when the run ended.
    Unknown(String),
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Its number in the history, from 0.
    pub id: u64,
    /// The workload process (client) that ran it.
    pub process: u32,
    /// When it was invoked.
    pub invoked: Micros,
    /// When its outcome was known (`None`: never; its outcome is then `Unknown`).
    pub completed: Option<Micros>,
    /// What it did.
    pub op: Op,
    /// How it ended.
    pub outcome: Outcome,
}

impl Operation {
    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    /// The offset of an `Ok` outcome.
    pub fn ok_offset(&self) -> Option<i64> {
        match self.outcome {
            Outcome::Ok { offset } => offset,
            _ => None,
        }
    }
}

/// A record as a replica holds it at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Its offset.
    pub offset: i64,
    /// Its identity; `None` when the value is not the workload's.
    pub written: Option<Written>,
}

/// One replica of a partition at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLog {
    /// The broker that holds it.
    pub broker: u32,
    /// Its first offset (records below were deleted by retention).
    pub log_start: i64,
    /// Its high watermark: records below it were visible to consumers.
    pub high_watermark: i64,
    /// Every record from `log_start`, in offset order (to the end of the log, which may go past
    /// the high watermark on a follower or a leader with writes not yet committed).
    pub records: Vec<Stored>,
}

/// What every replica of every partition holds at the end of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// Replicas by partition (in JSON, a list of `[partition, replicas]` pairs: JSON keys are
    /// strings only).
    #[serde(with = "as_pairs")]
    pub partitions: BTreeMap<Tp, Vec<ReplicaLog>>,
}

mod as_pairs {
    use super::{BTreeMap, ReplicaLog, Tp};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<Tp, Vec<ReplicaLog>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Tp, Vec<ReplicaLog>>, D::Error> {
        Ok(Vec::<(Tp, Vec<ReplicaLog>)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// The recorded run: operations in the order they were invoked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Every operation.
    pub ops: Vec<Operation>,
}

impl History {
    /// The operations invoked within `window` of any of `ids` (the history around an anomaly).
    pub fn around(&self, ids: &[u64], window: Micros) -> Vec<&Operation> {
        let times: Vec<Micros> = ids
            .iter()
            .filter_map(|id| self.ops.get(*id as usize))
            .map(|o| o.invoked)
            .collect();
        self.ops
            .iter()
            .filter(|o| times.iter().any(|t| o.invoked.abs_diff(*t) <= window))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_round_trips_through_a_record_value_and_rejects_others() {
        let w = Written {
            producer: 7,
            seq: 123_456_789_012,
        };
        assert_eq!(Written::decode(w.encode().as_bytes()), Some(w));
        for bad in [
            &b""[..],
            b"quiver-fault:",
            b"quiver-fault:1",
            b"quiver-fault:x:1",
            b"quiver-fault:1:-1",
            b"other:1:2",
            b"\xff\xfe",
        ] {
            assert_eq!(Written::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_final_state_round_trips_through_json() {
        let mut s = FinalState::default();
        s.partitions.insert(
            Tp::new("t", 3),
            vec![ReplicaLog {
                broker: 1,
                log_start: 0,
                high_watermark: 1,
                records: vec![Stored {
                    offset: 0,
                    written: Some(Written {
                        producer: 1,
                        seq: 2,
                    }),
                }],
            }],
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<FinalState>(&json).unwrap(), s);
    }

    #[test]
    fn around_finds_the_operations_near_an_anomaly() {
        let op = |id, invoked| Operation {
            id,
            process: 0,
            invoked,
            completed: Some(invoked + 1),
            op: Op::FetchCommitted {
                group: "g".into(),
                tp: Tp::new("t", 0),
            },
            outcome: Outcome::Ok { offset: None },
        };
        let h = History {
            ops: vec![
                op(0, 0),
                op(1, 100),
                op(2, 1_000),
                op(3, 1_050),
                op(4, 5_000),
            ],
        };
        let ids: Vec<u64> = h.around(&[2], 100).iter().map(|o| o.id).collect();
        assert_eq!(ids, vec![2, 3]);
        let ids: Vec<u64> = h.around(&[0, 4], 100).iter().map(|o| o.id).collect();
        assert_eq!(ids, vec![0, 1, 4]);
    }
}
