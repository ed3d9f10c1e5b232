//! Consumer groups and committed offsets (`proto/schema/group.fbs`).
//!
//! Two membership protocols, chosen per group by the coordinator:
//! - classic: `JoinGroup` / `SyncGroup` / `Heartbeat` / `LeaveGroup`; the group leader (a
//!   client) computes the assignment; subscription and assignment bytes are
//!   `ConsumerSubscription` / `ConsumerAssignment` flatbuffers (both `Message`s) for consumers;
//! - consumer (KIP-848 style): `ConsumerGroupHeartbeat`; the broker computes the assignment and
//!   sends it with member epochs.

use super::codec::{tables, wire_enum};
use super::TopicPartitions;
use crate::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId};

wire_enum! {
    /// What a coordinator is looked up for.
    pub enum CoordinatorType(CoordinatorType) default Group {
        Group,
        Transaction,
    }
}

wire_enum! {
    /// Which membership protocol a group uses.
    pub enum GroupType(GroupType) default Classic {
        Classic,
        Consumer,
    }
}

wire_enum! {
    /// A group's state (classic and consumer states together).
    pub enum GroupState(GroupState) default Unknown {
        Unknown,
        Empty,
        PreparingRebalance,
        CompletingRebalance,
        Stable,
        Dead,
        Assigning,
        Reconciling,
    }
}

/// `generation_id_or_member_epoch` / `member_epoch` of a commit or fetch from outside a group.
pub const NO_GENERATION: i32 = -1;
/// ConsumerGroupHeartbeat `member_epoch` to join.
pub const JOIN_EPOCH: i32 = 0;
/// ConsumerGroupHeartbeat `member_epoch` to leave.
pub const LEAVE_EPOCH: i32 = -1;
/// ConsumerGroupHeartbeat `member_epoch` for a static member to leave temporarily.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

tables! {
    /// FindCoordinator request.
    pub struct FindCoordinatorRequest(FindCoordinatorRequest, FindCoordinatorRequestArgs) {
        key_type: CoordinatorType = scalar,
        keys: Vec<String> = strings,
    }

    /// The coordinator of one key.
    pub struct Coordinator(Coordinator, CoordinatorArgs) {
        key: String = string,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        node_id: BrokerId = scalar,
        host: String = string,
        port: u16 = scalar,
    }

    /// FindCoordinator response.
    pub struct FindCoordinatorResponse(FindCoordinatorResponse, FindCoordinatorResponseArgs) {
        throttle_time_ms: u32 = scalar,
        coordinators: Vec<Coordinator> = tables,
    }

    pub struct JoinGroupProtocol(JoinGroupProtocol, JoinGroupProtocolArgs) {
        name: String = string,
        /// For consumers: an encoded `ConsumerSubscription`.
        metadata: Vec<u8> = bytes,
    }

    /// JoinGroup request (classic).
    pub struct JoinGroupRequest(JoinGroupRequest, JoinGroupRequestArgs) {
        group_id: String = string,
        session_timeout_ms: u32 = scalar,
        rebalance_timeout_ms: u32 = scalar,
        /// Empty on the first join.
        member_id: String = string,
        group_instance_id: Option<String> = opt_string,
        protocol_type: String = string,
        protocols: Vec<JoinGroupProtocol> = tables,
        reason: Option<String> = opt_string,
    }

    pub struct JoinGroupMember(JoinGroupMember, JoinGroupMemberArgs) {
        member_id: String = string,
        group_instance_id: Option<String> = opt_string,
        metadata: Vec<u8> = bytes,
    }

    /// JoinGroup response.
    pub struct JoinGroupResponse(JoinGroupResponse, JoinGroupResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        generation_id: i32 = scalar,
        protocol_type: Option<String> = opt_string,
        protocol_name: Option<String> = opt_string,
        leader: String = string,
        skip_assignment: bool = scalar,
        member_id: String = string,
        /// Sent to the leader only.
        members: Vec<JoinGroupMember> = tables,
    }

    pub struct SyncGroupAssignment(SyncGroupAssignment, SyncGroupAssignmentArgs) {
        member_id: String = string,
        /// For consumers: an encoded `ConsumerAssignment`.
        assignment: Vec<u8> = bytes,
    }

    /// SyncGroup request (classic).
    pub struct SyncGroupRequest(SyncGroupRequest, SyncGroupRequestArgs) {
        group_id: String = string,
        generation_id: i32 = scalar,
        member_id: String = string,
        group_instance_id: Option<String> = opt_string,
        protocol_type: Option<String> = opt_string,
        protocol_name: Option<String> = opt_string,
        /// From the leader only.
        assignments: Vec<SyncGroupAssignment> = tables,
    }

    /// SyncGroup response.
    pub struct SyncGroupResponse(SyncGroupResponse, SyncGroupResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        protocol_type: Option<String> = opt_string,
        protocol_name: Option<String> = opt_string,
        assignment: Vec<u8> = bytes,
    }

    /// Heartbeat request (classic).
    pub struct HeartbeatRequest(HeartbeatRequest, HeartbeatRequestArgs) {
        group_id: String = string,
        generation_id: i32 = scalar,
        member_id: String = string,
        group_instance_id: Option<String> = opt_string,
    }

    /// Heartbeat response; `RebalanceInProgress` means rejoin.
    pub struct HeartbeatResponse(HeartbeatResponse, HeartbeatResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
    }

    pub struct MemberIdentity(MemberIdentity, MemberIdentityArgs) {
        member_id: String = string,
        group_instance_id: Option<String> = opt_string,
        reason: Option<String> = opt_string,
    }

    /// LeaveGroup request (classic).
    pub struct LeaveGroupRequest(LeaveGroupRequest, LeaveGroupRequestArgs) {
        group_id: String = string,
        members: Vec<MemberIdentity> = tables,
    }

    pub struct LeaveGroupMemberResponse(LeaveGroupMemberResponse, LeaveGroupMemberResponseArgs) {
        member_id: String = string,
        group_instance_id: Option<String> = opt_string,
        error_code: ErrorCode = scalar,
    }

    /// LeaveGroup response.
    pub struct LeaveGroupResponse(LeaveGroupResponse, LeaveGroupResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        members: Vec<LeaveGroupMemberResponse> = tables,
    }

    /// ConsumerGroupHeartbeat request (consumer protocol).
    pub struct ConsumerGroupHeartbeatRequest(
        ConsumerGroupHeartbeatRequest,
        ConsumerGroupHeartbeatRequestArgs
    ) {
        group_id: String = string,
        member_id: String = string,
        /// `JOIN_EPOCH`, `LEAVE_EPOCH`, `STATIC_LEAVE_EPOCH`, or the current epoch.
        member_epoch: i32 = scalar,
        instance_id: Option<String> = opt_string,
        rack_id: Option<String> = opt_string,
        /// Sent when joining.
        rebalance_timeout_ms: Option<u32> = opt,
        /// `None`: unchanged since the last heartbeat.
        subscribed_topic_names: Option<Vec<String>> = opt_strings,
        server_assignor: Option<String> = opt_string,
        /// Owned partitions; `None`: unchanged since the last heartbeat.
        topic_partitions: Option<Vec<TopicPartitions>> = opt_tables,
    }

    /// A consumer-protocol member's assignment.
    pub struct Assignment(Assignment, AssignmentArgs) {
        topic_partitions: Vec<TopicPartitions> = tables,
    }

    /// ConsumerGroupHeartbeat response.
    pub struct ConsumerGroupHeartbeatResponse(
        ConsumerGroupHeartbeatResponse,
        ConsumerGroupHeartbeatResponseArgs
    ) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        member_id: Option<String> = opt_string,
        member_epoch: i32 = scalar,
        heartbeat_interval_ms: u32 = scalar,
        /// `None`: unchanged.
        assignment: Option<Assignment> = opt_table,
    }

    pub struct OffsetCommitPartition(OffsetCommitPartition, OffsetCommitPartitionArgs) {
        partition: PartitionId = scalar,
        /// The next record to consume.
        committed_offset: Offset = scalar,
        committed_leader_epoch: Option<LeaderEpoch> = opt,
        committed_metadata: Option<String> = opt_string,
    }

    pub struct OffsetCommitTopic(OffsetCommitTopic, OffsetCommitTopicArgs) {
        name: String = string,
        partitions: Vec<OffsetCommitPartition> = tables,
    }

    /// OffsetCommit request.
    pub struct OffsetCommitRequest(OffsetCommitRequest, OffsetCommitRequestArgs) {
        group_id: String = string,
        /// Classic: generation id; consumer protocol: member epoch; `NO_GENERATION` outside a
        /// group.
        generation_id_or_member_epoch: i32 = scalar,
        /// Empty outside a group.
        member_id: String = string,
        group_instance_id: Option<String> = opt_string,
        topics: Vec<OffsetCommitTopic> = tables,
    }

    pub struct OffsetCommitPartitionResponse(
        OffsetCommitPartitionResponse,
        OffsetCommitPartitionResponseArgs
    ) {
        partition: PartitionId = scalar,
        error_code: ErrorCode = scalar,
    }

    pub struct OffsetCommitTopicResponse(OffsetCommitTopicResponse, OffsetCommitTopicResponseArgs) {
        name: String = string,
        partitions: Vec<OffsetCommitPartitionResponse> = tables,
    }

    /// OffsetCommit response.
    pub struct OffsetCommitResponse(OffsetCommitResponse, OffsetCommitResponseArgs) {
        throttle_time_ms: u32 = scalar,
        topics: Vec<OffsetCommitTopicResponse> = tables,
    }

    /// OffsetFetch request.
    pub struct OffsetFetchRequest(OffsetFetchRequest, OffsetFetchRequestArgs) {
        group_id: String = string,
        member_id: Option<String> = opt_string,
        member_epoch: i32 = scalar,
        /// `None`: every partition the group has committed.
        topics: Option<Vec<TopicPartitions>> = opt_tables,
        require_stable: bool = scalar,
    }

    pub struct OffsetFetchPartition(OffsetFetchPartition, OffsetFetchPartitionArgs) {
        partition: PartitionId = scalar,
        /// `None`: nothing committed.
        committed_offset: Option<Offset> = opt,
        committed_leader_epoch: Option<LeaderEpoch> = opt,
        metadata: Option<String> = opt_string,
        error_code: ErrorCode = scalar,
    }

    pub struct OffsetFetchTopic(OffsetFetchTopic, OffsetFetchTopicArgs) {
        name: String = string,
        partitions: Vec<OffsetFetchPartition> = tables,
    }

    /// OffsetFetch response.
    pub struct OffsetFetchResponse(OffsetFetchResponse, OffsetFetchResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        topics: Vec<OffsetFetchTopic> = tables,
    }

    /// ListGroups request; empty filters match everything.
    pub struct ListGroupsRequest(ListGroupsRequest, ListGroupsRequestArgs) {
        states_filter: Vec<GroupState> = scalars,
        types_filter: Vec<GroupType> = scalars,
    }

    pub struct ListedGroup(ListedGroup, ListedGroupArgs) {
        group_id: String = string,
        protocol_type: Option<String> = opt_string,
        group_state: GroupState = scalar,
        group_type: GroupType = scalar,
    }

    /// ListGroups response.
    pub struct ListGroupsResponse(ListGroupsResponse, ListGroupsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        groups: Vec<ListedGroup> = tables,
    }

    /// DescribeGroups request.
    pub struct DescribeGroupsRequest(DescribeGroupsRequest, DescribeGroupsRequestArgs) {
        groups: Vec<String> = strings,
    }

    /// A member of a described group; classic fields and consumer-protocol fields side by side.
    pub struct DescribedGroupMember(DescribedGroupMember, DescribedGroupMemberArgs) {
        member_id: String = string,
        group_instance_id: Option<String> = opt_string,
        client_id: Option<String> = opt_string,
        client_host: Option<String> = opt_string,
        rack_id: Option<String> = opt_string,
        member_epoch: i32 = scalar,
        metadata: Vec<u8> = bytes,
        assignment: Vec<u8> = bytes,
        subscribed_topic_names: Vec<String> = strings,
        assigned: Vec<TopicPartitions> = tables,
        target_assignment: Vec<TopicPartitions> = tables,
    }

    pub struct DescribedGroup(DescribedGroup, DescribedGroupArgs) {
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        group_id: String = string,
        group_type: GroupType = scalar,
        group_state: GroupState = scalar,
        protocol_type: Option<String> = opt_string,
        protocol_data: Option<String> = opt_string,
        group_epoch: i32 = scalar,
        assignment_epoch: i32 = scalar,
        members: Vec<DescribedGroupMember> = tables,
    }

    /// DescribeGroups response.
    pub struct DescribeGroupsResponse(DescribeGroupsResponse, DescribeGroupsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        groups: Vec<DescribedGroup> = tables,
    }

    /// DeleteGroups request.
    pub struct DeleteGroupsRequest(DeleteGroupsRequest, DeleteGroupsRequestArgs) {
        groups_names: Vec<String> = strings,
    }

    pub struct DeletableGroupResult(DeletableGroupResult, DeletableGroupResultArgs) {
        group_id: String = string,
        error_code: ErrorCode = scalar,
    }

    /// DeleteGroups response.
    pub struct DeleteGroupsResponse(DeleteGroupsResponse, DeleteGroupsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        results: Vec<DeletableGroupResult> = tables,
    }

    /// Classic consumer protocol: a member's subscription (JoinGroupProtocol.metadata).
    pub struct ConsumerSubscription(ConsumerSubscription, ConsumerSubscriptionArgs) {
        topics: Vec<String> = strings,
        user_data: Vec<u8> = bytes,
        owned_partitions: Vec<TopicPartitions> = tables,
        rack_id: Option<String> = opt_string,
        generation_id: i32 = scalar,
    }

    /// Classic consumer protocol: a member's assignment (SyncGroupAssignment.assignment).
    pub struct ConsumerAssignment(ConsumerAssignment, ConsumerAssignmentArgs) {
        assigned_partitions: Vec<TopicPartitions> = tables,
        user_data: Vec<u8> = bytes,
    }
}
