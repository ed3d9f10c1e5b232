//! The API layer: which APIs exist and at which versions, how a request frame is checked and
//! its body verified, and owned Rust types for every request and response body.
//!
//! # Receiving a request (broker)
//! ```
//! # use quiver_proto::{api, frame};
//! # let req = api::handshake::ApiVersionsRequest {
//! #     client_software_name: "doc".into(), client_software_version: "0".into(),
//! #     client_id: None };
//! # let bytes = api::request_frame(&req, 0, 7, &[]);
//! let frame = frame::decode(bytes, frame::FRAME_BYTES_MAX_DEFAULT).unwrap();
//! match api::decode_request(&frame.header, &frame.body) {
//!     Ok(api::AnyRequest::ApiVersions(r)) => assert_eq!(r.client_software_name, "doc"),
//!     Ok(_other) => { /* dispatch */ }
//!     // Unknown API, unsupported version, bad body: answer with an ErrorResponse frame.
//!     Err(e) => { let _reply = api::error_frame(&frame.header, &e.to_error_response()); }
//! }
//! ```
//!
//! # Calling (SDK)
//! `request_frame(&req, version, correlation_id, payload_chunks)` builds the frame;
//! `decode_response::<R>(&response_frame)` checks the header and decodes `R::Response`, or
//! returns the broker's `ErrorResponse`.
//!
//! # Versions
//! Every frame names its API and version. All APIs are at version 0. Flatbuffers tables evolve
//! by appending fields, so one decoder reads every version of a message: a newer version may give
//! new fields meaning, which the handler checks against `header.api_version`. A broker refuses a
//! version outside `ApiKey::versions()` with `UnsupportedVersion` and the range it supports.

pub mod acl;
pub mod cluster;
pub(crate) mod codec;
pub mod common;
pub mod fetch;
pub mod group;
pub mod handshake;
pub mod limits;
pub mod metadata;
pub mod produce;
pub mod quota;
pub mod user;

use std::fmt;

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, VerifierOptions};

use crate::frame::{self, Frame, FrameHeader, FLAG_ERROR_RESPONSE};
use crate::ErrorCode;

pub use codec::{
    verifier_options, DecodeError, Identifier, APPARENT_SIZE_FACTOR, TABLE_BYTES_MIN,
    VERIFY_DEPTH_MAX,
};
pub use common::{
    ApiVersionRange, ConfigEntry, ErrorResponse, LeaderHint, PayloadBuilder, PayloadError,
    PayloadRef, TopicPartitions, TopicResult, Uuid, VersionRange,
};

/// A body type: one flatbuffer root, named by its identifier.
pub trait Message:
    Sized + Clone + Default + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The file identifier written at bytes 4..8 of the body.
    const IDENTIFIER: Identifier;

    /// The body, as a new vector.
    fn encode(&self) -> Vec<u8>;

    /// The body, as `Bytes`, without copying it out of the builder.
    fn encode_bytes(&self) -> Bytes;

    /// The body, built in `fbb` (reset first) so its buffer is reused across messages.
    fn encode_with<'a>(&self, fbb: &'a mut FlatBufferBuilder<'_>) -> &'a [u8];

    /// Checks the identifier, verifies the flatbuffer, and converts it to owned values.
    fn decode(body: &[u8]) -> Result<Self, DecodeError>;

    /// Checks the identifier and verifies the flatbuffer, without converting it.
    fn verify(body: &[u8]) -> Result<(), DecodeError> {
        Self::verify_with(body, &verifier_options(body.len()))
    }

    /// Like `verify`, with explicit verifier bounds (e.g. tighter ones for an untrusted peer).
    fn verify_with(body: &[u8], opts: &VerifierOptions) -> Result<(), DecodeError>;
}

/// A request body, tied to its API and its response type, so a caller can write
/// `call::<ProduceRequest>(req)` and get a `ProduceResponse` back.
pub trait Request: Message {
    const API: ApiKey;
    type Response: Response;
}

/// A response body, tied to its API.
pub trait Response: Message {
    const API: ApiKey;
}

macro_rules! impl_message {
    ($($t:ty => $ident:expr;)*) => {$(
        impl Message for $t {
            const IDENTIFIER: Identifier = $ident;

            fn encode(&self) -> Vec<u8> {
                Vec::from(codec::encode_root_bytes(self, Self::IDENTIFIER))
            }

            fn encode_bytes(&self) -> Bytes {
                codec::encode_root_bytes(self, Self::IDENTIFIER)
            }

            fn encode_with<'a>(&self, fbb: &'a mut FlatBufferBuilder<'_>) -> &'a [u8] {
                codec::encode_root_with(self, Self::IDENTIFIER, fbb)
            }

            fn decode(body: &[u8]) -> Result<Self, DecodeError> {
                codec::decode_root::<Self>(body, Self::IDENTIFIER)
            }

            fn verify_with(body: &[u8], opts: &VerifierOptions) -> Result<(), DecodeError> {
                codec::verify_root_with::<Self>(body, Self::IDENTIFIER, opts).map(|_| ())
            }
        }
    )*};
}

impl_message! {
    ErrorResponse => Identifier::ERROR_RESPONSE;
    group::ConsumerSubscription => Identifier::CONSUMER_SUBSCRIPTION;
    group::ConsumerAssignment => Identifier::CONSUMER_ASSIGNMENT;
}

/// A generic operation over every request type (see `visit_apis`).
#[cfg(test)]
pub(crate) trait ApiVisitor {
    fn visit<R>(&mut self)
    where
        R: Request + codec::testing::Gen,
        R::Response: codec::testing::Gen;
}

/// Declares every API once: its key, versions, request and response types.
macro_rules! apis {
    ($(
        $(#[$meta:meta])*
        $name:ident = $key:literal, $min:literal..=$max:literal,
            $req:ident :: $reqty:ident, $resp:ident :: $respty:ident;
    )*) => {
        /// An API's key: stable numbers on the wire, Kafka's where Kafka has the API, 1000 and up
        /// for Quiver's own.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ApiKey {
            $( $(#[$meta])* $name = $key, )*
        }

        impl ApiKey {
            /// Every API, in key order.
            pub const ALL: &'static [ApiKey] = &[$(ApiKey::$name),*];

            /// The API for a key; `None` for keys this build does not know.
            pub fn from_u16(key: u16) -> Option<ApiKey> {
                match key {
                    $( $key => Some(ApiKey::$name), )*
                    _ => None,
                }
            }

            pub fn as_u16(self) -> u16 {
                self as u16
            }

            pub fn name(self) -> &'static str {
                match self {
                    $( ApiKey::$name => stringify!($name), )*
                }
            }

            /// The versions this build supports.
            pub fn versions(self) -> VersionRange {
                match self {
                    $( ApiKey::$name => VersionRange::new($min, $max), )*
                }
            }

            /// Verifies `body` as this API's request (identifier and flatbuffer), without
            /// converting it.
            pub fn verify_request_body(self, body: &[u8]) -> Result<(), DecodeError> {
                match self {
                    $( ApiKey::$name => <$req::$reqty as Message>::verify(body), )*
                }
            }

            /// Verifies `body` as this API's response, without converting it.
            pub fn verify_response_body(self, body: &[u8]) -> Result<(), DecodeError> {
                match self {
                    $( ApiKey::$name => <$resp::$respty as Message>::verify(body), )*
                }
            }
        }

        // Rationale: identifiers carry the key in three hex digits.
        const _: () = { $( assert!($key <= 0xFFF); )* };

        $(
            impl_message! {
                $req::$reqty => Identifier::request($key);
                $resp::$respty => Identifier::response($key);
            }

            impl Request for $req::$reqty {
                const API: ApiKey = ApiKey::$name;
                type Response = $resp::$respty;
            }

            impl Response for $resp::$respty {
                const API: ApiKey = ApiKey::$name;
            }

            impl From<$req::$reqty> for AnyRequest {
                fn from(r: $req::$reqty) -> Self {
                    AnyRequest::$name(r)
                }
            }

            impl From<$resp::$respty> for AnyResponse {
                fn from(r: $resp::$respty) -> Self {
                    AnyResponse::$name(r)
                }
            }
        )*

        /// Calls `v.visit::<R>()` for every request type, so tests cover every API by
        /// construction.
        #[cfg(test)]
        pub(crate) fn visit_apis<V: ApiVisitor>(v: &mut V) {
            $( v.visit::<$req::$reqty>(); )*
        }

        /// Any request, decoded: what a broker's dispatcher matches on.
        #[derive(Clone, Debug, PartialEq)]
        pub enum AnyRequest {
            $( $name($req::$reqty), )*
        }

        impl AnyRequest {
            pub fn api(&self) -> ApiKey {
                match self {
                    $( AnyRequest::$name(_) => ApiKey::$name, )*
                }
            }

            /// Decodes `body` as the request of `api`.
            pub fn decode(api: ApiKey, body: &[u8]) -> Result<AnyRequest, DecodeError> {
                Ok(match api {
                    $( ApiKey::$name => AnyRequest::$name(<$req::$reqty>::decode(body)?), )*
                })
            }

            pub fn encode(&self) -> Vec<u8> {
                match self {
                    $( AnyRequest::$name(r) => r.encode(), )*
                }
            }
        }

        /// Any response, decoded.
        #[derive(Clone, Debug, PartialEq)]
        pub enum AnyResponse {
            $( $name($resp::$respty), )*
        }

        impl AnyResponse {
            pub fn api(&self) -> ApiKey {
                match self {
                    $( AnyResponse::$name(_) => ApiKey::$name, )*
                }
            }

            /// Decodes `body` as the response of `api`.
            pub fn decode(api: ApiKey, body: &[u8]) -> Result<AnyResponse, DecodeError> {
                Ok(match api {
                    $( ApiKey::$name => AnyResponse::$name(<$resp::$respty>::decode(body)?), )*
                })
            }

            pub fn encode(&self) -> Vec<u8> {
                match self {
                    $( AnyResponse::$name(r) => r.encode(), )*
                }
            }
        }
    };
}

apis! {
    /// Append record batches to partitions.
    Produce = 0, 0..=0, produce::ProduceRequest, produce::ProduceResponse;
    /// Read record batches (consumers; long poll).
    Fetch = 1, 0..=0, fetch::FetchRequest, fetch::FetchResponse;
    /// Offsets by time, earliest, latest.
    ListOffsets = 2, 0..=0, fetch::ListOffsetsRequest, fetch::ListOffsetsResponse;
    /// Brokers, controller, topics, partitions, leaders, replicas, ISR.
    Metadata = 3, 0..=0, metadata::MetadataRequest, metadata::MetadataResponse;
    /// Commit a group's offsets.
    OffsetCommit = 8, 0..=0, group::OffsetCommitRequest, group::OffsetCommitResponse;
    /// Read a group's committed offsets.
    OffsetFetch = 9, 0..=0, group::OffsetFetchRequest, group::OffsetFetchResponse;
    /// Find a group's coordinator.
    FindCoordinator = 10, 0..=0, group::FindCoordinatorRequest, group::FindCoordinatorResponse;
    /// Classic group protocol: join.
    JoinGroup = 11, 0..=0, group::JoinGroupRequest, group::JoinGroupResponse;
    /// Classic group protocol: heartbeat.
    Heartbeat = 12, 0..=0, group::HeartbeatRequest, group::HeartbeatResponse;
    /// Classic group protocol: leave.
    LeaveGroup = 13, 0..=0, group::LeaveGroupRequest, group::LeaveGroupResponse;
    /// Classic group protocol: distribute the leader's assignment.
    SyncGroup = 14, 0..=0, group::SyncGroupRequest, group::SyncGroupResponse;
    /// Describe groups (classic and consumer).
    DescribeGroups = 15, 0..=0, group::DescribeGroupsRequest, group::DescribeGroupsResponse;
    /// List groups.
    ListGroups = 16, 0..=0, group::ListGroupsRequest, group::ListGroupsResponse;
    /// Choose a SASL mechanism.
    SaslHandshake = 17, 0..=0, handshake::SaslHandshakeRequest, handshake::SaslHandshakeResponse;
    /// The handshake: client software, and every API's supported versions.
    ApiVersions = 18, 0..=0, handshake::ApiVersionsRequest, handshake::ApiVersionsResponse;
    /// Create topics.
    CreateTopics = 19, 0..=0, metadata::CreateTopicsRequest, metadata::CreateTopicsResponse;
    /// Delete topics.
    DeleteTopics = 20, 0..=0, metadata::DeleteTopicsRequest, metadata::DeleteTopicsResponse;
    /// Get a producer id and epoch (idempotence).
    InitProducerId = 22, 0..=0, produce::InitProducerIdRequest, produce::InitProducerIdResponse;
    /// List ACLs.
    DescribeAcls = 29, 0..=0, acl::DescribeAclsRequest, acl::DescribeAclsResponse;
    /// Create ACLs.
    CreateAcls = 30, 0..=0, acl::CreateAclsRequest, acl::CreateAclsResponse;
    /// Delete ACLs.
    DeleteAcls = 31, 0..=0, acl::DeleteAclsRequest, acl::DeleteAclsResponse;
    /// Describe topic or broker configurations.
    DescribeConfigs = 32, 0..=0, metadata::DescribeConfigsRequest, metadata::DescribeConfigsResponse;
    /// One SASL authentication round.
    SaslAuthenticate = 36, 0..=0,
        handshake::SaslAuthenticateRequest, handshake::SaslAuthenticateResponse;
    /// Add partitions to topics.
    CreatePartitions = 37, 0..=0,
        metadata::CreatePartitionsRequest, metadata::CreatePartitionsResponse;
    /// Delete empty groups.
    DeleteGroups = 42, 0..=0, group::DeleteGroupsRequest, group::DeleteGroupsResponse;
    /// Change some configurations.
    IncrementalAlterConfigs = 44, 0..=0,
        metadata::IncrementalAlterConfigsRequest, metadata::IncrementalAlterConfigsResponse;
    /// Move partitions' replicas to other brokers.
    AlterPartitionReassignments = 45, 0..=0,
        metadata::AlterPartitionReassignmentsRequest,
        metadata::AlterPartitionReassignmentsResponse;
    /// Describe client quotas.
    DescribeClientQuotas = 48, 0..=0,
        quota::DescribeClientQuotasRequest, quota::DescribeClientQuotasResponse;
    /// Set or remove client quotas.
    AlterClientQuotas = 49, 0..=0,
        quota::AlterClientQuotasRequest, quota::AlterClientQuotasResponse;
    /// List users' SCRAM credentials (mechanisms and iterations).
    DescribeUserScramCredentials = 50, 0..=0,
        user::DescribeUserScramCredentialsRequest, user::DescribeUserScramCredentialsResponse;
    /// Create, replace or delete users' SCRAM credentials.
    AlterUserScramCredentials = 51, 0..=0,
        user::AlterUserScramCredentialsRequest, user::AlterUserScramCredentialsResponse;
    /// Broker to controller: change a partition's ISR.
    AlterPartition = 56, 0..=0, cluster::AlterPartitionRequest, cluster::AlterPartitionResponse;
    /// The cluster's brokers (fenced ones too) and its controller quorum.
    DescribeCluster = 60, 0..=0,
        cluster::DescribeClusterRequest, cluster::DescribeClusterResponse;
    /// Broker to controller: register at startup.
    BrokerRegistration = 62, 0..=0,
        cluster::BrokerRegistrationRequest, cluster::BrokerRegistrationResponse;
    /// Broker to controller: liveness.
    BrokerHeartbeat = 63, 0..=0,
        cluster::BrokerHeartbeatRequest, cluster::BrokerHeartbeatResponse;
    /// Consumer group protocol (KIP-848 style): join, heartbeat, assignment, leave.
    ConsumerGroupHeartbeat = 68, 0..=0,
        group::ConsumerGroupHeartbeatRequest, group::ConsumerGroupHeartbeatResponse;
    /// Broker to broker: a follower fetches from the leader.
    ReplicaFetch = 1000, 0..=0, cluster::ReplicaFetchRequest, cluster::ReplicaFetchResponse;
    /// Broker to broker: Raft messages of the controller quorum (opaque bytes).
    RaftMessage = 1001, 0..=0, cluster::RaftMessageRequest, cluster::RaftMessageResponse;
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.as_u16())
    }
}

/// Every API this build supports, with its versions: the list ApiVersions answers with.
pub fn supported_apis() -> Vec<ApiVersionRange> {
    ApiKey::ALL
        .iter()
        .map(|&api| {
            let v = api.versions();
            ApiVersionRange {
                api_key: api.as_u16(),
                min_version: v.min,
                max_version: v.max,
            }
        })
        .collect()
}

/// Why a request frame is refused before (or while) its body is decoded. Each is answered with
/// an `ErrorResponse` (see `to_error_response`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("unknown API key {api_key}")]
    UnknownApi { api_key: u16 },
    #[error("{api} does not support version {version} (supported: {})", api.versions())]
    UnsupportedVersion { api: ApiKey, version: u16 },
    #[error("{api} request has flags {flags:#06x}; requests define no flags")]
    UnexpectedFlags { api: ApiKey, flags: u16 },
    #[error("{api} request body: {error}")]
    Decode { api: ApiKey, error: DecodeError },
    /// The body decoded but breaks a rule of [`limits`] (too many entries, a repeated entry,
    /// overlapping payload references, an absurd name).
    #[error("{api} request refused: {reason}")]
    Limits { api: ApiKey, reason: String },
}

impl RequestError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RequestError::UnknownApi { .. } => ErrorCode::UnknownApi,
            RequestError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            RequestError::UnexpectedFlags { .. } => ErrorCode::InvalidRequest,
            RequestError::Decode { error, .. } => error.error_code(),
            RequestError::Limits { .. } => ErrorCode::InvalidRequest,
        }
    }

    /// The raw API key of the refused request.
    pub fn api_key(&self) -> u16 {
        match self {
            RequestError::UnknownApi { api_key } => *api_key,
            RequestError::UnsupportedVersion { api, .. }
            | RequestError::UnexpectedFlags { api, .. }
            | RequestError::Decode { api, .. }
            | RequestError::Limits { api, .. } => api.as_u16(),
        }
    }

    /// The body to answer with: the code, this error as the message, and what is supported.
    pub fn to_error_response(&self) -> ErrorResponse {
        error_response(self.api_key(), self.error_code(), &self.to_string())
    }
}

/// An `ErrorResponse` for a request of `api_key`: the supported version range of that API if
/// it is known, and the full list of supported APIs if it is not (or if it is ApiVersions, so a
/// client whose handshake version is refused still learns everything).
pub fn error_response(api_key: u16, code: ErrorCode, message: &str) -> ErrorResponse {
    let api = ApiKey::from_u16(api_key);
    let versions = api.map(ApiKey::versions);
    let list_all = matches!(api, None | Some(ApiKey::ApiVersions));
    ErrorResponse {
        error_code: code,
        message: (!message.is_empty()).then(|| message.to_owned()),
        api_key,
        min_version: versions.map(|v| v.min),
        max_version: versions.map(|v| v.max),
        supported_apis: if list_all {
            supported_apis()
        } else {
            Vec::new()
        },
    }
}

/// Checks a request frame's header: a known API, a supported version, no flags. Returns the API.
pub fn check_request(header: &FrameHeader) -> Result<ApiKey, RequestError> {
    let api = ApiKey::from_u16(header.api_key).ok_or(RequestError::UnknownApi {
        api_key: header.api_key,
    })?;
    if !api.versions().contains(header.api_version) {
        return Err(RequestError::UnsupportedVersion {
            api,
            version: header.api_version,
        });
    }
    if header.flags != 0 {
        return Err(RequestError::UnexpectedFlags {
            api,
            flags: header.flags,
        });
    }
    Ok(api)
}

/// Verifies a request body for `api_key` at `version`: known API, supported version, the body's
/// identifier, and the flatbuffers verifier with bounds tied to its length.
pub fn verify_request(api_key: u16, version: u16, body: &[u8]) -> Result<ApiKey, RequestError> {
    let api = check_request(&FrameHeader {
        api_key,
        api_version: version,
        correlation_id: 0,
        flags: 0,
    })?;
    api.verify_request_body(body)
        .map_err(|error| RequestError::Decode { api, error })?;
    Ok(api)
}

/// Why a response body is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("unknown API key {api_key} in a response")]
    UnknownApi { api_key: u16 },
    #[error("response is for API key {found}, expected {expected}")]
    ApiMismatch { expected: ApiKey, found: u16 },
    #[error("response body for API key {api_key}: {error}")]
    Decode { api_key: u16, error: DecodeError },
    #[error("broker refused the request: {0}")]
    Refused(ErrorResponse),
}

/// Verifies a response body for `api_key`: the API's response type, or an `ErrorResponse`
/// when `flags` has `FLAG_ERROR_RESPONSE`.
pub fn verify_response(api_key: u16, flags: u16, body: &[u8]) -> Result<(), ResponseError> {
    let api = ApiKey::from_u16(api_key);
    let result = if flags & FLAG_ERROR_RESPONSE != 0 {
        ErrorResponse::verify(body)
    } else {
        let Some(api) = api else {
            return Err(ResponseError::UnknownApi { api_key });
        };
        api.verify_response_body(body)
    };
    result.map_err(|error| ResponseError::Decode { api_key, error })
}

/// Checks the header, decodes the request body and holds it to the rules of [`limits`]: what a
/// broker does with each request frame. A request that passes names no more than
/// [`limits::REQUEST_ENTRIES_MAX`] entries and repeats none that matter.
pub fn decode_request(header: &FrameHeader, body: &[u8]) -> Result<AnyRequest, RequestError> {
    let api = check_request(header)?;
    let req = AnyRequest::decode(api, body).map_err(|error| RequestError::Decode { api, error })?;
    limits::check(&req).map_err(|reason| RequestError::Limits { api, reason })?;
    Ok(req)
}

/// Decodes a response frame to a call of `R`: `R::Response`, or `Refused` with the broker's
/// `ErrorResponse`.
pub fn decode_response<R: Request>(frame: &Frame) -> Result<R::Response, ResponseError> {
    if frame.header.api_key != R::API.as_u16() {
        return Err(ResponseError::ApiMismatch {
            expected: R::API,
            found: frame.header.api_key,
        });
    }
    let decode_err = |error| ResponseError::Decode {
        api_key: R::API.as_u16(),
        error,
    };
    if frame.header.is_error_response() {
        let e = ErrorResponse::decode(&frame.body).map_err(decode_err)?;
        return Err(ResponseError::Refused(e));
    }
    <R::Response as Message>::decode(&frame.body).map_err(decode_err)
}

/// The header of a request frame.
pub fn request_header(api: ApiKey, version: u16, correlation_id: u32) -> FrameHeader {
    FrameHeader {
        api_key: api.as_u16(),
        api_version: version,
        correlation_id,
        flags: 0,
    }
}

/// The header of the response to `request`: same API, version and correlation id.
pub fn response_header(request: &FrameHeader, is_error: bool) -> FrameHeader {
    FrameHeader {
        api_key: request.api_key,
        api_version: request.api_version,
        correlation_id: request.correlation_id,
        flags: if is_error { FLAG_ERROR_RESPONSE } else { 0 },
    }
}

/// A whole request frame in one buffer (small requests, tests). For large payloads write
/// `frame::encode_header`, the body and the `PayloadBuilder` chunks separately.
pub fn request_frame<R: Request>(
    req: &R,
    version: u16,
    correlation_id: u32,
    payload: &[Bytes],
) -> Bytes {
    let body = req.encode_bytes();
    let chunks: Vec<&[u8]> = payload.iter().map(|c| &c[..]).collect();
    frame::encode(
        &request_header(R::API, version, correlation_id),
        &body,
        &chunks,
    )
}

/// A whole response frame in one buffer, answering `request`.
pub fn response_frame<T: Response>(resp: &T, request: &FrameHeader, payload: &[Bytes]) -> Bytes {
    let body = resp.encode_bytes();
    let chunks: Vec<&[u8]> = payload.iter().map(|c| &c[..]).collect();
    frame::encode(&response_header(request, false), &body, &chunks)
}

/// A whole error response frame answering `request`.
pub fn error_frame(request: &FrameHeader, error: &ErrorResponse) -> Bytes {
    frame::encode(&response_header(request, true), &error.encode_bytes(), &[])
}

#[cfg(test)]
mod tests;
