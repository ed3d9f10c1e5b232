//! Cluster metadata and topic administration (`proto/schema/metadata.fbs`): Metadata,
//! CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, IncrementalAlterConfigs,
//! AlterPartitionReassignments.

use super::codec::{tables, wire_enum};
use super::{ConfigEntry, TopicResult, Uuid};
use crate::{BrokerId, ErrorCode, LeaderEpoch, PartitionId};

tables! {
    /// Metadata request.
    pub struct MetadataRequest(MetadataRequest, MetadataRequestArgs) {
        /// `None`: every topic. `Some(vec![])`: no topics (brokers and controller only).
        topics: Option<Vec<String>> = opt_strings,
        allow_auto_topic_creation: bool = scalar,
    }

    /// A broker as clients see it.
    pub struct MetadataBroker(MetadataBroker, MetadataBrokerArgs) {
        broker_id: BrokerId = scalar,
        host: String = string,
        port: u16 = scalar,
        rack: Option<String> = opt_string,
        /// Shards of the broker, for source-port steering; 0: the broker does not steer.
        shard_count: u16 = scalar,
    }

    /// One partition: leader, replicas, ISR.
    pub struct MetadataPartition(MetadataPartition, MetadataPartitionArgs) {
        error_code: ErrorCode = scalar,
        partition: PartitionId = scalar,
        /// `None` when the partition has no leader.
        leader: Option<BrokerId> = opt,
        leader_epoch: LeaderEpoch = scalar,
        replicas: Vec<BrokerId> = scalars,
        isr: Vec<BrokerId> = scalars,
        offline_replicas: Vec<BrokerId> = scalars,
        /// The leader's shard owning the partition, when known.
        leader_shard: Option<u16> = opt,
        /// While a reassignment runs: replicas being added.
        adding_replicas: Vec<BrokerId> = scalars,
        /// While a reassignment runs: replicas removed once the new ones are in sync.
        removing_replicas: Vec<BrokerId> = scalars,
    }

    /// One topic.
    pub struct MetadataTopic(MetadataTopic, MetadataTopicArgs) {
        error_code: ErrorCode = scalar,
        name: String = string,
        topic_id: Uuid = uuid,
        is_internal: bool = scalar,
        partitions: Vec<MetadataPartition> = tables,
    }

    /// Metadata response.
    pub struct MetadataResponse(MetadataResponse, MetadataResponseArgs) {
        throttle_time_ms: u32 = scalar,
        brokers: Vec<MetadataBroker> = tables,
        cluster_id: Option<String> = opt_string,
        controller_id: Option<BrokerId> = opt,
        topics: Vec<MetadataTopic> = tables,
    }

    /// Replicas of one partition, the preferred leader first.
    pub struct ReplicaAssignment(ReplicaAssignment, ReplicaAssignmentArgs) {
        partition: PartitionId = scalar,
        broker_ids: Vec<BrokerId> = scalars,
    }

    /// One topic to create.
    pub struct CreatableTopic(CreatableTopic, CreatableTopicArgs) {
        name: String = string,
        /// `None`: the broker's default.
        num_partitions: Option<u32> = opt,
        /// `None`: the broker's default.
        replication_factor: Option<u16> = opt,
        assignments: Vec<ReplicaAssignment> = tables,
        configs: Vec<ConfigEntry> = tables,
    }

    /// CreateTopics request.
    pub struct CreateTopicsRequest(CreateTopicsRequest, CreateTopicsRequestArgs) {
        topics: Vec<CreatableTopic> = tables,
        timeout_ms: u32 = scalar,
        validate_only: bool = scalar,
    }

    pub struct CreatableTopicResult(CreatableTopicResult, CreatableTopicResultArgs) {
        name: String = string,
        topic_id: Uuid = uuid,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        num_partitions: u32 = scalar,
        replication_factor: u16 = scalar,
        configs: Vec<ConfigEntry> = tables,
    }

    /// CreateTopics response.
    pub struct CreateTopicsResponse(CreateTopicsResponse, CreateTopicsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        topics: Vec<CreatableTopicResult> = tables,
    }

    /// DeleteTopics request.
    pub struct DeleteTopicsRequest(DeleteTopicsRequest, DeleteTopicsRequestArgs) {
        topic_names: Vec<String> = strings,
        timeout_ms: u32 = scalar,
    }

    /// DeleteTopics response.
    pub struct DeleteTopicsResponse(DeleteTopicsResponse, DeleteTopicsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        responses: Vec<TopicResult> = tables,
    }

    /// New partitions for one topic.
    pub struct CreatePartitionsTopic(CreatePartitionsTopic, CreatePartitionsTopicArgs) {
        name: String = string,
        /// The new total number of partitions.
        count: u32 = scalar,
        assignments: Vec<ReplicaAssignment> = tables,
    }

    /// One partition to move to other brokers.
    pub struct ReassignPartition(ReassignPartition, ReassignPartitionArgs) {
        topic: String = string,
        partition: PartitionId = scalar,
        /// The new replicas, the preferred leader first.
        replicas: Vec<BrokerId> = scalars,
    }

    /// AlterPartitionReassignments request.
    pub struct AlterPartitionReassignmentsRequest(AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsRequestArgs) {
        timeout_ms: u32 = scalar,
        partitions: Vec<ReassignPartition> = tables,
    }

    /// The outcome for one partition.
    pub struct ReassignPartitionResult(ReassignPartitionResult, ReassignPartitionResultArgs) {
        topic: String = string,
        partition: PartitionId = scalar,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
    }

    /// AlterPartitionReassignments response.
    pub struct AlterPartitionReassignmentsResponse(AlterPartitionReassignmentsResponse, AlterPartitionReassignmentsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        results: Vec<ReassignPartitionResult> = tables,
    }

    /// CreatePartitions request.
    pub struct CreatePartitionsRequest(CreatePartitionsRequest, CreatePartitionsRequestArgs) {
        topics: Vec<CreatePartitionsTopic> = tables,
        timeout_ms: u32 = scalar,
        validate_only: bool = scalar,
    }

    /// CreatePartitions response.
    pub struct CreatePartitionsResponse(CreatePartitionsResponse, CreatePartitionsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        results: Vec<TopicResult> = tables,
    }

    pub struct DescribeConfigsResource(DescribeConfigsResource, DescribeConfigsResourceArgs) {
        resource_type: ConfigResourceType = scalar,
        resource_name: String = string,
        /// Empty: all configurations.
        configuration_keys: Vec<String> = strings,
    }

    /// DescribeConfigs request.
    pub struct DescribeConfigsRequest(DescribeConfigsRequest, DescribeConfigsRequestArgs) {
        resources: Vec<DescribeConfigsResource> = tables,
        include_documentation: bool = scalar,
    }

    pub struct DescribeConfigsEntry(DescribeConfigsEntry, DescribeConfigsEntryArgs) {
        name: String = string,
        value: Option<String> = opt_string,
        read_only: bool = scalar,
        config_source: ConfigSource = scalar,
        is_sensitive: bool = scalar,
        config_type: ConfigType = scalar,
        documentation: Option<String> = opt_string,
    }

    pub struct DescribeConfigsResult(DescribeConfigsResult, DescribeConfigsResultArgs) {
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        resource_type: ConfigResourceType = scalar,
        resource_name: String = string,
        configs: Vec<DescribeConfigsEntry> = tables,
    }

    /// DescribeConfigs response.
    pub struct DescribeConfigsResponse(DescribeConfigsResponse, DescribeConfigsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        results: Vec<DescribeConfigsResult> = tables,
    }

    pub struct AlterableConfig(AlterableConfig, AlterableConfigArgs) {
        name: String = string,
        op: AlterConfigOp = scalar,
        /// `None` for `Delete`.
        value: Option<String> = opt_string,
    }

    pub struct AlterConfigsResource(AlterConfigsResource, AlterConfigsResourceArgs) {
        resource_type: ConfigResourceType = scalar,
        resource_name: String = string,
        configs: Vec<AlterableConfig> = tables,
    }

    /// IncrementalAlterConfigs request.
    pub struct IncrementalAlterConfigsRequest(
        IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsRequestArgs
    ) {
        resources: Vec<AlterConfigsResource> = tables,
        validate_only: bool = scalar,
    }

    pub struct AlterConfigsResult(AlterConfigsResult, AlterConfigsResultArgs) {
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        resource_type: ConfigResourceType = scalar,
        resource_name: String = string,
    }

    /// IncrementalAlterConfigs response.
    pub struct IncrementalAlterConfigsResponse(
        IncrementalAlterConfigsResponse,
        IncrementalAlterConfigsResponseArgs
    ) {
        throttle_time_ms: u32 = scalar,
        responses: Vec<AlterConfigsResult> = tables,
    }
}

wire_enum! {
    /// The kind of resource a configuration belongs to.
    pub enum ConfigResourceType(ConfigResourceType) default Topic {
        Unknown,
        Topic,
        Broker,
        Group,
    }
}

wire_enum! {
    /// Where a configuration value comes from.
    pub enum ConfigSource(ConfigSource) default Unknown {
        Unknown,
        TopicOverride,
        DynamicBroker,
        DynamicDefaultBroker,
        StaticBroker,
        Default,
    }
}

wire_enum! {
    /// The type of a configuration value.
    pub enum ConfigType(ConfigType) default Unknown {
        Unknown,
        Boolean,
        String,
        Int,
        Short,
        Long,
        Double,
        List,
        Password,
    }
}

wire_enum! {
    /// How IncrementalAlterConfigs changes a value.
    pub enum AlterConfigOp(AlterConfigOp) default Set {
        Set,
        Delete,
        Append,
        Subtract,
    }
}
