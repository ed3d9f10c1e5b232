//! Reading (`proto/schema/fetch.fbs`): Fetch and ListOffsets.
//!
//! A fetch response's records are not in the body: each partition's `records` is a
//! `PayloadRef` into the frame's payload, so the broker sends stored bytes without copying.

use super::codec::{tables, wire_enum, Scalar};
use super::{LeaderHint, PayloadRef};
use crate::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId, TimestampMs};

wire_enum! {
    /// Which records a fetch may see.
    pub enum IsolationLevel(IsolationLevel) default ReadUncommitted {
        /// Up to the high watermark.
        ReadUncommitted,
        /// Up to the last stable offset.
        ReadCommitted,
    }
}

/// What ListOffsets looks up; on the wire a timestamp with sentinels (-1 latest, -2 earliest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The high watermark (or the last stable offset for ReadCommitted).
    #[default]
    Latest,
    /// The log start offset.
    Earliest,
    /// The first offset whose record timestamp is at or after this time.
    Timestamp(TimestampMs),
}

impl OffsetSpec {
    /// Wire value of `Latest`.
    pub const LATEST_TIMESTAMP: i64 = -1;
    /// Wire value of `Earliest`.
    pub const EARLIEST_TIMESTAMP: i64 = -2;
}

impl Scalar for OffsetSpec {
    type Raw = i64;
    fn to_raw(&self) -> i64 {
        match self {
            OffsetSpec::Latest => Self::LATEST_TIMESTAMP,
            OffsetSpec::Earliest => Self::EARLIEST_TIMESTAMP,
            OffsetSpec::Timestamp(t) => t.0,
        }
    }
    fn from_raw(raw: i64) -> Result<Self, i64> {
        match raw {
            Self::LATEST_TIMESTAMP => Ok(OffsetSpec::Latest),
            Self::EARLIEST_TIMESTAMP => Ok(OffsetSpec::Earliest),
            t if t >= 0 => Ok(OffsetSpec::Timestamp(TimestampMs(t))),
            other => Err(other),
        }
    }
}

#[cfg(test)]
impl super::codec::testing::Gen for OffsetSpec {
    fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
        use proptest::prelude::*;
        prop_oneof![
            Just(OffsetSpec::Latest),
            Just(OffsetSpec::Earliest),
            (0..=i64::MAX).prop_map(|t| OffsetSpec::Timestamp(TimestampMs(t))),
        ]
        .boxed()
    }
}

tables! {
    /// One partition to fetch from.
    pub struct FetchPartition(FetchPartition, FetchPartitionArgs) {
        partition: PartitionId = scalar,
        fetch_offset: Offset = scalar,
        partition_max_bytes: u32 = scalar,
        /// For fencing (KIP-320); `None` if unknown.
        current_leader_epoch: Option<LeaderEpoch> = opt,
    }

    pub struct FetchTopic(FetchTopic, FetchTopicArgs) {
        name: String = string,
        partitions: Vec<FetchPartition> = tables,
    }

    /// Fetch request (consumers).
    pub struct FetchRequest(FetchRequest, FetchRequestArgs) {
        max_wait_ms: u32 = scalar,
        min_bytes: u32 = scalar,
        max_bytes: u32 = scalar,
        isolation_level: IsolationLevel = scalar,
        topics: Vec<FetchTopic> = tables,
        rack_id: Option<String> = opt_string,
    }

    pub struct AbortedTransaction(AbortedTransaction, AbortedTransactionArgs) {
        producer_id: u64 = scalar,
        first_offset: Offset = scalar,
    }

    /// Result for one partition.
    pub struct FetchPartitionResponse(FetchPartitionResponse, FetchPartitionResponseArgs) {
        partition: PartitionId = scalar,
        error_code: ErrorCode = scalar,
        high_watermark: Offset = scalar,
        last_stable_offset: Option<Offset> = opt,
        log_start_offset: Offset = scalar,
        aborted_transactions: Vec<AbortedTransaction> = tables,
        /// Fetch from this replica instead (KIP-392).
        preferred_read_replica: Option<BrokerId> = opt,
        /// Batches as stored, in the payload; the last may be partial.
        records: PayloadRef = payload,
        current_leader: Option<LeaderHint> = opt_table,
    }

    pub struct FetchTopicResponse(FetchTopicResponse, FetchTopicResponseArgs) {
        name: String = string,
        partitions: Vec<FetchPartitionResponse> = tables,
    }

    /// Fetch response.
    pub struct FetchResponse(FetchResponse, FetchResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        topics: Vec<FetchTopicResponse> = tables,
    }

    pub struct ListOffsetsPartition(ListOffsetsPartition, ListOffsetsPartitionArgs) {
        partition: PartitionId = scalar,
        current_leader_epoch: Option<LeaderEpoch> = opt,
        /// Latest, earliest, or by time (the wire field is `timestamp`).
        timestamp: OffsetSpec = scalar,
    }

    pub struct ListOffsetsTopic(ListOffsetsTopic, ListOffsetsTopicArgs) {
        name: String = string,
        partitions: Vec<ListOffsetsPartition> = tables,
    }

    /// ListOffsets request.
    pub struct ListOffsetsRequest(ListOffsetsRequest, ListOffsetsRequestArgs) {
        isolation_level: IsolationLevel = scalar,
        topics: Vec<ListOffsetsTopic> = tables,
        /// Also say how far each follower is behind.
        follower_progress: bool = scalar,
    }

    /// One follower of a partition as its leader sees it.
    pub struct FollowerProgress(FollowerProgress, FollowerProgressArgs) {
        broker_id: BrokerId = scalar,
        /// Its durable end: the offset of its last fetch.
        fetch_offset: Offset = scalar,
        lag_records: u64 = scalar,
        /// About how many bytes behind.
        lag_bytes: u64 = scalar,
        /// Since it was last caught up.
        lag_ms: u64 = scalar,
        last_fetch_ms: u64 = scalar,
        /// Fetches over the last rate window, and its length.
        window_fetches: u32 = scalar,
        window_ms: u32 = scalar,
    }

    pub struct ListOffsetsPartitionResponse(
        ListOffsetsPartitionResponse,
        ListOffsetsPartitionResponseArgs
    ) {
        partition: PartitionId = scalar,
        error_code: ErrorCode = scalar,
        /// Timestamp of the record found; `None` for latest/earliest or when none was found.
        timestamp: Option<TimestampMs> = opt,
        /// `None` when no record has a timestamp at or after the one asked for.
        offset: Option<Offset> = opt,
        leader_epoch: Option<LeaderEpoch> = opt,
        /// When asked: each follower's progress.
        followers: Vec<FollowerProgress> = tables,
    }

    pub struct ListOffsetsTopicResponse(ListOffsetsTopicResponse, ListOffsetsTopicResponseArgs) {
        name: String = string,
        partitions: Vec<ListOffsetsPartitionResponse> = tables,
    }

    /// ListOffsets response.
    pub struct ListOffsetsResponse(ListOffsetsResponse, ListOffsetsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        topics: Vec<ListOffsetsTopicResponse> = tables,
    }
}
