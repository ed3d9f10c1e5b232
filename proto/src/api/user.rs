//! SCRAM credentials (`proto/schema/scram.fbs`): DescribeUserScramCredentials and
//! AlterUserScramCredentials, as Kafka's KIP-554. The client salts the password itself
//! (`crate::scram::salted_password`): only the salted password travels, and the broker stores
//! what RFC 5802 says a server stores (StoredKey, ServerKey), never the password.

use super::codec::tables;
use crate::ErrorCode;

tables! {
    /// DescribeUserScramCredentials request.
    pub struct DescribeUserScramCredentialsRequest(DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsRequestArgs) {
        /// `None`: every user.
        users: Option<Vec<String>> = opt_strings,
    }

    /// One credential's mechanism and iterations.
    pub struct ScramCredentialInfo(ScramCredentialInfo, ScramCredentialInfoArgs) {
        mechanism: String = string,
        iterations: u32 = scalar,
    }

    /// One user's credentials.
    pub struct DescribeUserScramCredentialsResult(DescribeUserScramCredentialsResult, DescribeUserScramCredentialsResultArgs) {
        user: String = string,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        credential_infos: Vec<ScramCredentialInfo> = tables,
    }

    /// DescribeUserScramCredentials response.
    pub struct DescribeUserScramCredentialsResponse(DescribeUserScramCredentialsResponse, DescribeUserScramCredentialsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
        results: Vec<DescribeUserScramCredentialsResult> = tables,
    }

    /// Remove a user's credential for one mechanism.
    pub struct ScramCredentialDeletion(ScramCredentialDeletion, ScramCredentialDeletionArgs) {
        name: String = string,
        mechanism: String = string,
    }

    /// Create or replace a user's credential for one mechanism.
    pub struct ScramCredentialUpsertion(ScramCredentialUpsertion, ScramCredentialUpsertionArgs) {
        name: String = string,
        mechanism: String = string,
        iterations: u32 = scalar,
        salt: Vec<u8> = bytes,
        salted_password: Vec<u8> = bytes,
    }

    /// AlterUserScramCredentials request.
    pub struct AlterUserScramCredentialsRequest(AlterUserScramCredentialsRequest, AlterUserScramCredentialsRequestArgs) {
        deletions: Vec<ScramCredentialDeletion> = tables,
        upsertions: Vec<ScramCredentialUpsertion> = tables,
    }

    /// The outcome for one user.
    pub struct AlterUserScramCredentialsResult(AlterUserScramCredentialsResult, AlterUserScramCredentialsResultArgs) {
        user: String = string,
        error_code: ErrorCode = scalar,
        error_message: Option<String> = opt_string,
    }

    /// AlterUserScramCredentials response.
    pub struct AlterUserScramCredentialsResponse(AlterUserScramCredentialsResponse, AlterUserScramCredentialsResponseArgs) {
        throttle_time_ms: u32 = scalar,
        results: Vec<AlterUserScramCredentialsResult> = tables,
    }
}
