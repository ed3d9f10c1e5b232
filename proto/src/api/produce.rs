//! Writing (`proto/schema/produce.fbs`): Produce and InitProducerId.
//!
//! Produce carries record batches in the frame's payload, not in the body: each partition's
//! entry holds a `PayloadRef`. Build the payload with `PayloadBuilder`, and on the broker take
//! the batches with `records.slice(&frame.payload)`.

use super::codec::{tables, wire_enum};
use super::{LeaderHint, PayloadRef};
use crate::{ErrorCode, Offset, PartitionId, TimestampMs};

wire_enum! {
    /// How many replicas must have a batch before Produce answers.
    pub enum Acks(Acks) default All {
        /// acks=all: every in-sync replica (at least min.insync.replicas).
        All,
        /// acks=0: no response.
        None,
        /// acks=1: the leader, durably.
        Leader,
    }
}

tables! {
    /// Record batches for one partition.
    pub struct PartitionProduceData(PartitionProduceData, PartitionProduceDataArgs) {
        partition: PartitionId = scalar,
        /// One or more batches, back to back, in the payload.
        records: PayloadRef = payload,
    }

    /// Record batches for one topic.
    pub struct TopicProduceData(TopicProduceData, TopicProduceDataArgs) {
        name: String = string,
        partitions: Vec<PartitionProduceData> = tables,
    }

    /// Produce request.
    pub struct ProduceRequest(ProduceRequest, ProduceRequestArgs) {
        /// Reserved for transactions.
        transactional_id: Option<String> = opt_string,
        acks: Acks = scalar,
        timeout_ms: u32 = scalar,
        topics: Vec<TopicProduceData> = tables,
    }

    /// Why one batch was refused.
    pub struct BatchIndexAndErrorMessage(BatchIndexAndErrorMessage, BatchIndexAndErrorMessageArgs) {
        batch_index: u32 = scalar,
        message: Option<String> = opt_string,
    }

    /// Result for one partition.
    pub struct PartitionProduceResponse(PartitionProduceResponse, PartitionProduceResponseArgs) {
        partition: PartitionId = scalar,
        error_code: ErrorCode = scalar,
        /// Offset of the first record written.
        base_offset: Offset = scalar,
        /// Set when the topic uses LogAppendTime.
        log_append_time_ms: Option<TimestampMs> = opt,
        log_start_offset: Offset = scalar,
        record_errors: Vec<BatchIndexAndErrorMessage> = tables,
        error_message: Option<String> = opt_string,
        /// The new leader, with `NotLeaderOrFollower`.
        current_leader: Option<LeaderHint> = opt_table,
    }

    pub struct TopicProduceResponse(TopicProduceResponse, TopicProduceResponseArgs) {
        name: String = string,
        partitions: Vec<PartitionProduceResponse> = tables,
    }

    /// Produce response (none for acks=0).
    pub struct ProduceResponse(ProduceResponse, ProduceResponseArgs) {
        topics: Vec<TopicProduceResponse> = tables,
        throttle_time_ms: u32 = scalar,
    }

    /// InitProducerId request.
    pub struct InitProducerIdRequest(InitProducerIdRequest, InitProducerIdRequestArgs) {
        transactional_id: Option<String> = opt_string,
        transaction_timeout_ms: u32 = scalar,
        /// The id held before, to bump its epoch; `None` for a new producer.
        producer_id: Option<u64> = opt,
        producer_epoch: Option<u16> = opt,
    }

    /// InitProducerId response.
    pub struct InitProducerIdResponse(InitProducerIdResponse, InitProducerIdResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        producer_id: u64 = scalar,
        producer_epoch: u16 = scalar,
    }
}
