//! Broker-to-broker calls (`proto/schema/cluster.fbs`): replication, the controller's Raft
//! messages, broker registration and heartbeats, and ISR changes.

use super::codec::tables;
use super::{LeaderHint, PayloadRef, Uuid};
use crate::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId};

tables! {
    /// One partition a follower replicates.
    pub struct ReplicaFetchPartition(ReplicaFetchPartition, ReplicaFetchPartitionArgs) {
        partition: PartitionId = scalar,
        current_leader_epoch: LeaderEpoch = scalar,
        /// The follower's log end offset.
        fetch_offset: Offset = scalar,
        /// Epoch of the follower's last record (KIP-101); `None` if its log is empty.
        last_fetched_epoch: Option<LeaderEpoch> = opt,
        log_start_offset: Offset = scalar,
        partition_max_bytes: u32 = scalar,
    }

    pub struct ReplicaFetchTopic(ReplicaFetchTopic, ReplicaFetchTopicArgs) {
        name: String = string,
        partitions: Vec<ReplicaFetchPartition> = tables,
    }

    /// ReplicaFetch request: a follower fetches from the leader.
    pub struct ReplicaFetchRequest(ReplicaFetchRequest, ReplicaFetchRequestArgs) {
        replica_id: BrokerId = scalar,
        broker_epoch: u64 = scalar,
        max_wait_ms: u32 = scalar,
        min_bytes: u32 = scalar,
        max_bytes: u32 = scalar,
        topics: Vec<ReplicaFetchTopic> = tables,
    }

    /// Where the follower's log diverges: truncate to `end_offset`.
    pub struct EpochEndOffset(EpochEndOffset, EpochEndOffsetArgs) {
        epoch: LeaderEpoch = scalar,
        end_offset: Offset = scalar,
    }

    pub struct ReplicaFetchPartitionResponse(
        ReplicaFetchPartitionResponse,
        ReplicaFetchPartitionResponseArgs
    ) {
        partition: PartitionId = scalar,
        error_code: ErrorCode = scalar,
        high_watermark: Offset = scalar,
        log_start_offset: Offset = scalar,
        /// Set when the follower must truncate first.
        diverging_epoch: Option<EpochEndOffset> = opt_table,
        current_leader: Option<LeaderHint> = opt_table,
        /// Batches as stored, in the payload.
        records: PayloadRef = payload,
    }

    pub struct ReplicaFetchTopicResponse(ReplicaFetchTopicResponse, ReplicaFetchTopicResponseArgs) {
        name: String = string,
        partitions: Vec<ReplicaFetchPartitionResponse> = tables,
    }

    /// ReplicaFetch response.
    pub struct ReplicaFetchResponse(ReplicaFetchResponse, ReplicaFetchResponseArgs) {
        error_code: ErrorCode = scalar,
        topics: Vec<ReplicaFetchTopicResponse> = tables,
    }

    /// RaftMessage request: opaque Raft messages of the controller quorum, in the payload.
    pub struct RaftMessageRequest(RaftMessageRequest, RaftMessageRequestArgs) {
        cluster_id: String = string,
        from: BrokerId = scalar,
        messages: Vec<PayloadRef> = payloads,
    }

    /// RaftMessage response: the messages were handed to Raft.
    pub struct RaftMessageResponse(RaftMessageResponse, RaftMessageResponseArgs) {
        error_code: ErrorCode = scalar,
    }

    pub struct Listener(Listener, ListenerArgs) {
        name: String = string,
        host: String = string,
        port: u16 = scalar,
    }

    /// BrokerRegistration request.
    pub struct BrokerRegistrationRequest(BrokerRegistrationRequest, BrokerRegistrationRequestArgs) {
        broker_id: BrokerId = scalar,
        cluster_id: String = string,
        incarnation_id: Uuid = uuid,
        listeners: Vec<Listener> = tables,
        rack: Option<String> = opt_string,
        shard_count: u32 = scalar,
    }

    /// BrokerRegistration response.
    pub struct BrokerRegistrationResponse(
        BrokerRegistrationResponse,
        BrokerRegistrationResponseArgs
    ) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        broker_epoch: u64 = scalar,
    }

    /// BrokerHeartbeat request.
    pub struct BrokerHeartbeatRequest(BrokerHeartbeatRequest, BrokerHeartbeatRequestArgs) {
        broker_id: BrokerId = scalar,
        broker_epoch: u64 = scalar,
        current_metadata_offset: Offset = scalar,
        want_fence: bool = scalar,
        want_shut_down: bool = scalar,
    }

    /// BrokerHeartbeat response.
    pub struct BrokerHeartbeatResponse(BrokerHeartbeatResponse, BrokerHeartbeatResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        is_caught_up: bool = scalar,
        is_fenced: bool = scalar,
        should_shut_down: bool = scalar,
    }

    pub struct AlterPartitionPartition(AlterPartitionPartition, AlterPartitionPartitionArgs) {
        partition: PartitionId = scalar,
        leader_epoch: LeaderEpoch = scalar,
        new_isr: Vec<BrokerId> = scalars,
        partition_epoch: u32 = scalar,
    }

    pub struct AlterPartitionTopic(AlterPartitionTopic, AlterPartitionTopicArgs) {
        name: String = string,
        partitions: Vec<AlterPartitionPartition> = tables,
    }

    /// AlterPartition request: a leader proposes ISR changes to the controller.
    pub struct AlterPartitionRequest(AlterPartitionRequest, AlterPartitionRequestArgs) {
        broker_id: BrokerId = scalar,
        broker_epoch: u64 = scalar,
        topics: Vec<AlterPartitionTopic> = tables,
    }

    pub struct AlterPartitionPartitionResponse(
        AlterPartitionPartitionResponse,
        AlterPartitionPartitionResponseArgs
    ) {
        partition: PartitionId = scalar,
        error_code: ErrorCode = scalar,
        leader_id: BrokerId = scalar,
        leader_epoch: LeaderEpoch = scalar,
        isr: Vec<BrokerId> = scalars,
        partition_epoch: u32 = scalar,
    }

    pub struct AlterPartitionTopicResponse(
        AlterPartitionTopicResponse,
        AlterPartitionTopicResponseArgs
    ) {
        name: String = string,
        partitions: Vec<AlterPartitionPartitionResponse> = tables,
    }

    /// AlterPartition response.
    pub struct AlterPartitionResponse(AlterPartitionResponse, AlterPartitionResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        topics: Vec<AlterPartitionTopicResponse> = tables,
    }

    /// DescribeCluster request.
    pub struct DescribeClusterRequest(DescribeClusterRequest, DescribeClusterRequestArgs) {
        include_fenced_brokers: bool = scalar,
    }

    /// A broker as the cluster's metadata knows it.
    pub struct DescribeClusterBroker(DescribeClusterBroker, DescribeClusterBrokerArgs) {
        broker_id: BrokerId = scalar,
        host: String = string,
        port: u16 = scalar,
        rack: Option<String> = opt_string,
        shard_count: u16 = scalar,
        fenced: bool = scalar,
        broker_epoch: u64 = scalar,
        controller_only: bool = scalar,
    }

    /// One voter of the controller quorum, as its leader sees it.
    pub struct QuorumVoter(QuorumVoter, QuorumVoterArgs) {
        broker_id: BrokerId = scalar,
        log_end_offset: Option<u64> = opt,
        lag: Option<u64> = opt,
        last_heard_ms: Option<u64> = opt,
    }

    /// DescribeCluster response.
    pub struct DescribeClusterResponse(DescribeClusterResponse, DescribeClusterResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        cluster_id: Option<String> = opt_string,
        controller_id: Option<BrokerId> = opt,
        brokers: Vec<DescribeClusterBroker> = tables,
        quorum_term: u64 = scalar,
        quorum_commit: u64 = scalar,
        voters: Vec<QuorumVoter> = tables,
    }
}
