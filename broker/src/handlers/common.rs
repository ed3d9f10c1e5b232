//! What every handler shares: the shape of an answer, and how a partition's failure becomes an
//! error code. Its own file, so that handlers and their dispatcher import it and not each other.

use bytes::Bytes;
use quiver_proto::api::{AnyResponse, ApiKey};
use quiver_proto::ErrorCode;

use crate::runtime::PartError;

/// The APIs this broker serves today; ApiVersions lists exactly these, and the others are
/// refused with a message saying so.
pub const SERVED: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::AlterPartitionReassignments,
    ApiKey::FindCoordinator,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::DeleteGroups,
    ApiKey::InitProducerId,
    ApiKey::DescribeCluster,
    ApiKey::BrokerRegistration,
    ApiKey::RaftMessage,
    ApiKey::ReplicaFetch,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::CreateAcls,
    ApiKey::DescribeAcls,
    ApiKey::DeleteAcls,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterClientQuotas,
];

/// What a handler produces: the response body, the payload chunks, and whether it failed
/// (for the error counter).
pub(crate) struct Answer {
    pub(crate) body: AnyResponse,
    pub(crate) payload: Vec<Bytes>,
    pub(crate) failed: bool,
}

impl Answer {
    pub(crate) fn ok(body: impl Into<AnyResponse>) -> Answer {
        Answer {
            body: body.into(),
            payload: Vec::new(),
            failed: false,
        }
    }
}

/// The protocol's error code for a failed partition operation, with a message.
pub(crate) fn part_error(e: &PartError) -> (ErrorCode, String) {
    use quiver_engine::{Error as E, SequenceError};
    let code = match e {
        // The topic and partition exist (handlers check first) but no log of it is here: in a
        // cluster another broker leads it, and the client refreshes metadata and moves on.
        PartError::NotHosted => ErrorCode::NotLeaderOrFollower,
        PartError::Failed(_) => ErrorCode::StorageError,
        PartError::ShuttingDown => ErrorCode::BrokerShuttingDown,
        PartError::Engine(e) => match e {
            E::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            E::DiskFull { .. } => ErrorCode::DiskFull,
            E::AppendTooLarge { .. } => ErrorCode::RecordListTooLarge,
            E::InvalidConfig(_) => ErrorCode::InvalidConfig,
            E::Closed => ErrorCode::NotLeaderOrFollower,
            E::Corrupt { .. } | E::Io { .. } | E::Discarded(_) => ErrorCode::StorageError,
            E::Sequence { kind, .. } => match kind {
                SequenceError::OutOfOrder => ErrorCode::OutOfOrderSequence,
                SequenceError::Duplicate => ErrorCode::DuplicateSequence,
                SequenceError::InvalidEpoch => ErrorCode::InvalidProducerEpoch,
                SequenceError::TooManyProducers => ErrorCode::PolicyViolation,
            },
            #[allow(unreachable_patterns)]
            _ => ErrorCode::StorageError,
        },
    };
    (code, e.to_string())
}
