//! The handshake (ApiVersions) and SASL authentication (`proto/schema/handshake.fbs`).

use super::codec::tables;
use super::ApiVersionRange;
use crate::{BrokerId, ErrorCode};

tables! {
    /// ApiVersions request: the first call on a connection.
    pub struct ApiVersionsRequest(ApiVersionsRequest, ApiVersionsRequestArgs) {
        client_software_name: String = string,
        client_software_version: String = string,
        /// The application's client id, kept for the connection (quotas, logs).
        client_id: Option<String> = opt_string,
    }

    /// ApiVersions response: every supported API and its versions.
    pub struct ApiVersionsResponse(ApiVersionsResponse, ApiVersionsResponseArgs) {
        error_code: ErrorCode = scalar,
        api_keys: Vec<ApiVersionRange> = tables,
        throttle_time_ms: u32 = scalar,
        broker_id: BrokerId = scalar,
        cluster_id: Option<String> = opt_string,
        /// Non-empty: authenticate with one of these before other calls.
        sasl_mechanisms: Vec<String> = strings,
    }

    /// SaslHandshake request: "PLAIN", "SCRAM-SHA-256", ...
    pub struct SaslHandshakeRequest(SaslHandshakeRequest, SaslHandshakeRequestArgs) {
        mechanism: String = string,
    }

    pub struct SaslHandshakeResponse(SaslHandshakeResponse, SaslHandshakeResponseArgs) {
        error_code: ErrorCode = scalar,
        mechanisms: Vec<String> = strings,
    }

    /// SaslAuthenticate request: one round of the mechanism.
    pub struct SaslAuthenticateRequest(SaslAuthenticateRequest, SaslAuthenticateRequestArgs) {
        auth_bytes: Vec<u8> = bytes,
    }

    pub struct SaslAuthenticateResponse(SaslAuthenticateResponse, SaslAuthenticateResponseArgs) {
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        auth_bytes: Vec<u8> = bytes,
        /// 0: no expiry.
        session_lifetime_ms: u64 = scalar,
    }
}
