//! Error codes: one enum for the whole protocol, each with a retriable flag.
//!
//! The numbers are wire values: the flatbuffers schema declares the same enum
//! (`enum ErrorCode : ushort` in `proto/schema/common.fbs`) and a test checks that both agree,
//! name for name and number for number. Numbers are never reused or renumbered; a new code is
//! appended at the end, in both places.
//!
//! `is_retriable()` tells the SDK whether the same request may succeed if sent again after a
//! backoff (possibly after refreshing metadata, e.g. `NotLeaderOrFollower`). Non-retriable codes
//! need a change by the caller (a different request, a new member id, a fix of configuration).

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$m:meta])* $name:ident = $n:literal, $retriable:literal, $desc:literal; )*) => {
        /// Every error the protocol can report. `#[repr(u16)]`: the discriminant is the wire value.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ErrorCode {
            $( $(#[$m])* $name = $n, )*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code for a wire value. Numbers this build does not know (sent by a newer peer)
            /// map to `Unknown`; this never panics.
            pub fn from_u16(n: u16) -> ErrorCode {
                match n {
                    $( $n => ErrorCode::$name, )*
                    _ => ErrorCode::Unknown,
                }
            }

            /// The wire value.
            pub fn as_u16(self) -> u16 {
                self as u16
            }

            /// Whether the same request may succeed when retried after a backoff.
            pub fn is_retriable(self) -> bool {
                match self {
                    $( ErrorCode::$name => $retriable, )*
                }
            }

            /// The variant's name, as in the schema (e.g. `"NotLeaderOrFollower"`).
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => stringify!($name), )*
                }
            }

            /// One sentence for humans.
            pub fn description(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $desc, )*
                }
            }
        }
    };
}

error_codes! {
    #[default]
    None = 0, false, "No error.";
    Unknown = 1, false, "An unexpected server error, or an error code this build does not know.";
    CorruptMessage = 2, true, "A record batch failed its CRC or structural check.";
    UnknownTopicOrPartition = 3, true, "This broker does not host this topic or partition.";
    InvalidTopic = 4, false, "The topic name is not valid, or the operation is not allowed on it.";
    TopicAlreadyExists = 5, false, "A topic with this name already exists.";
    OffsetOutOfRange = 6, false, "The requested offset is outside the partition's retained range.";
    MessageTooLarge = 7, false, "A record batch is larger than the topic's max.message.bytes.";
    RecordListTooLarge = 8, false, "The records of one partition exceed the per-request limit.";
    InvalidRecord = 9, false, "A record failed validation and the batch was refused.";
    NotLeaderOrFollower = 10, true, "This broker is not the leader (or a follower) of the partition.";
    LeaderNotAvailable = 11, true, "The partition has no leader right now (election in progress).";
    RequestTimedOut = 12, true, "The request did not complete within its timeout.";
    NotEnoughReplicas = 13, true, "Fewer in-sync replicas than min.insync.replicas; nothing was written.";
    NotEnoughReplicasAfterAppend = 14, true,
        "Written to the leader, but fewer in-sync replicas than required acknowledged it.";
    UnsupportedVersion = 15, false, "The broker does not support this version of the API.";
    UnknownApi = 16, false, "The broker does not know this API key.";
    InvalidRequest = 17, false, "The request is malformed or violates the protocol.";
    InvalidPartitions = 18, false, "The partition count is not valid (zero, or fewer than before).";
    InvalidReplicationFactor = 19, false,
        "The replication factor is not valid or exceeds the number of brokers.";
    InvalidConfig = 20, false, "A configuration name or value is not valid.";
    PolicyViolation = 21, false, "The request violates a policy configured on the broker.";
    CoordinatorNotAvailable = 22, true, "The group coordinator is not available.";
    NotCoordinator = 23, true, "This broker is not the coordinator of this group.";
    CoordinatorLoadInProgress = 24, true, "The coordinator is still loading the group's state.";
    IllegalGeneration = 25, false, "The generation id is not the group's current one.";
    UnknownMemberId = 26, false, "The member id is not known to the group.";
    RebalanceInProgress = 27, false, "The group is rebalancing; rejoin.";
    FencedMemberEpoch = 28, false, "The member epoch is fenced; rejoin with epoch 0.";
    StaleMemberEpoch = 29, false, "The member epoch is older than the current one.";
    GroupIdNotFound = 30, false, "The group does not exist.";
    NonEmptyGroup = 31, false, "The group still has members.";
    InvalidGroupId = 32, false, "The group id is empty or not valid.";
    InvalidSessionTimeout = 33, false, "The session timeout is outside the broker's allowed range.";
    OffsetMetadataTooLarge = 34, false, "The offset commit's metadata string is too large.";
    StorageError = 35, true, "The broker hit a storage error for this partition.";
    DiskFull = 36, true, "The broker's disk is full; retry after retention frees space.";
    SaslAuthenticationFailed = 37, false, "SASL authentication failed.";
    UnsupportedSaslMechanism = 38, false, "The broker does not enable this SASL mechanism.";
    IllegalSaslState = 39, false, "The request is not valid in the current SASL state.";
    TopicAuthorizationFailed = 40, false, "Not authorized to access this topic.";
    GroupAuthorizationFailed = 41, false, "Not authorized to access this group.";
    ClusterAuthorizationFailed = 42, false, "Not authorized for this cluster operation.";
    DuplicateSequence = 43, false, "The batch's sequence was already written (a duplicate).";
    OutOfOrderSequence = 44, false, "The batch's sequence is not the next one expected.";
    ProducerFenced = 45, false, "A newer producer with the same transactional id fenced this one.";
    ThrottlingQuotaExceeded = 46, true, "A quota was exceeded; retry after the throttle time.";
    BrokerShuttingDown = 47, true, "The broker is shutting down.";
    FrameTooLarge = 48, false, "The frame exceeds the maximum frame size.";
    MalformedFrame = 49, false, "The frame header is malformed.";
    BrokerNotAvailable = 50, true, "The broker is not available.";
    UnknownLeaderEpoch = 51, true, "The leader epoch is newer than the broker's (its metadata lags).";
    FencedLeaderEpoch = 52, true, "The leader epoch is older than the current one; refresh metadata.";
    OffsetNotAvailable = 53, true, "The offset is not available yet (high watermark catching up).";
    InvalidTimestamp = 54, false, "A timestamp is outside the accepted range.";
    InvalidRequiredAcks = 55, false, "The acks value is not one of 0, 1, all.";
    UnknownProducerId = 56, false, "The broker has no state for this producer id.";
    InvalidProducerEpoch = 57, false, "The producer epoch is not the current one.";
    GroupMaxSizeReached = 58, false, "The group has reached its maximum size.";
    MemberIdRequired = 59, false, "Rejoin with the member id given in this response.";
    FencedInstanceId = 60, false, "Another member with the same group.instance.id fenced this one.";
    UnsupportedAssignor = 61, false, "The broker does not know the requested server-side assignor.";
    InconsistentGroupProtocol = 62, false, "The member's protocol does not match the group's.";
    NotController = 63, true, "This broker is not the active controller.";
    StaleBrokerEpoch = 64, false, "The broker epoch is not the current one; re-register.";
    InconsistentClusterId = 65, false, "The cluster id does not match this cluster's.";
    InvalidReplicaAssignment = 66, false, "The replica assignment is not valid.";
    ReplicaNotAvailable = 67, true, "The replica is not available on this broker.";
    TopicDeletionDisabled = 68, false, "Topic deletion is disabled on this cluster.";
    ResourceNotFound = 69, false, "The resource (broker, topic, group) does not exist.";
    SecurityDisabled = 70, false, "Security features (ACLs, SASL) are disabled on this broker.";
    AuthenticationRequired = 71, false, "This connection must authenticate before this request.";
    UnacceptableCredential = 72, false, "The credential is not acceptable (mechanism, iterations or salt).";
}

// Rationale: `from_u16` maps by the listed numbers; a gap or a duplicate would make one code
// unreachable. Numbers are dense from 0, so the last code's number is the count minus one.
const _: () = {
    let mut i = 0;
    while i < ErrorCode::ALL.len() {
        assert!(ErrorCode::ALL[i] as usize == i);
        i += 1;
    }
};

impl ErrorCode {
    /// `true` for `None`.
    pub fn is_ok(self) -> bool {
        self == ErrorCode::None
    }

    /// The code to answer a frame that could not be decoded with.
    pub fn for_frame_error(e: &crate::frame::FrameError) -> ErrorCode {
        match e {
            crate::frame::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::MalformedFrame,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.name(),
            self.as_u16(),
            self.description()
        )
    }
}

impl From<u16> for ErrorCode {
    fn from(n: u16) -> Self {
        ErrorCode::from_u16(n)
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> Self {
        c.as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips_and_unknown_numbers_map_to_unknown() {
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(c.as_u16()), c);
        }
        let past_end = ErrorCode::ALL.len() as u16;
        assert_eq!(ErrorCode::from_u16(past_end), ErrorCode::Unknown);
        assert_eq!(ErrorCode::from_u16(u16::MAX), ErrorCode::Unknown);
    }

    #[test]
    fn retriable_flags_follow_kafka_for_the_common_cases() {
        // Reference: Kafka's `Errors` table, where these exceptions extend RetriableException.
        let retriable = [
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::RequestTimedOut,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::NotCoordinator,
            ErrorCode::CoordinatorLoadInProgress,
            ErrorCode::UnknownTopicOrPartition,
        ];
        let fatal = [
            ErrorCode::None,
            ErrorCode::TopicAuthorizationFailed,
            ErrorCode::UnsupportedVersion,
            ErrorCode::InvalidRequest,
            ErrorCode::ProducerFenced,
            ErrorCode::FencedMemberEpoch,
        ];
        for c in retriable {
            assert!(c.is_retriable(), "{c} should be retriable");
        }
        for c in fatal {
            assert!(!c.is_retriable(), "{c} should not be retriable");
        }
    }

    #[test]
    fn display_names_the_code_and_number() {
        assert_eq!(
            ErrorCode::UnknownApi.to_string(),
            "UnknownApi (16): The broker does not know this API key."
        );
    }
}
