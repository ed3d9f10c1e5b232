//! SASL SCRAM users (Kafka's KIP-554): create or replace a user's credential, delete it, list
//! users. The password never leaves the client: it is salted here (a random salt, PBKDF2 with
//! the mechanism's hash, `scram::salted_password`) and only the salted password travels; the
//! broker keeps what RFC 5802 says a server keeps.

use quiver_proto::api::user::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, ScramCredentialDeletion, ScramCredentialUpsertion,
};
use quiver_proto::scram::{self, Mechanism};
use quiver_proto::ErrorCode;
use rand::RngCore;
use serde::Serialize;

use super::Admin;
use crate::error::{Error, Result};

/// Bytes of the random salt of a new credential (within `scram::SALT_BYTES_MIN..=MAX`).
/// The same as the decoy a broker answers a missing user with (`scram::Credential::decoy`), so
/// a user made here looks like any other.
const SALT_BYTES: usize = scram::SALT_BYTES_DEFAULT;
const _: () = assert!(SALT_BYTES >= scram::SALT_BYTES_MIN && SALT_BYTES <= scram::SALT_BYTES_MAX);

/// One user and the mechanisms it has a credential for ([`Admin::describe_users`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserDescription {
    /// The user name.
    pub user: String,
    /// Its credentials, one per mechanism, by mechanism.
    pub credentials: Vec<ScramCredential>,
}

/// One credential of a user: its mechanism and PBKDF2 iteration count (never the salt or
/// keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScramCredential {
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    #[serde(serialize_with = "ser_mechanism")]
    pub mechanism: Mechanism,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

fn ser_mechanism<S: serde::Serializer>(
    m: &Mechanism,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

impl Admin {
    /// The PBKDF2 iteration count [`Admin::create_user`] is usually given (twice RFC 7677's
    /// minimum, as Kafka's tools use).
    pub const DEFAULT_SCRAM_ITERATIONS: u32 = scram::ITERATIONS_DEFAULT;

    /// Creates `name`'s credential for `mechanism`, or replaces it (a new password): the
    /// user can then authenticate with that mechanism. `iterations` is PBKDF2's count
    /// (at least `4096`; [`Admin::DEFAULT_SCRAM_ITERATIONS`] is a good choice): more makes a
    /// stolen credential slower to attack and every login slower.
    ///
    /// ```no_run
    /// # async fn f(admin: quiver_client::Admin) -> quiver_client::Result<()> {
    /// use quiver_client::{Admin, ScramMechanism};
    /// admin.create_user("alice", "s3cret", ScramMechanism::Sha512, Admin::DEFAULT_SCRAM_ITERATIONS).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        mechanism: Mechanism,
        iterations: u32,
    ) -> Result<()> {
        if !(scram::ITERATIONS_MIN..=scram::ITERATIONS_MAX).contains(&iterations) {
            return Err(Error::Config(format!(
                "{iterations} iterations is outside [{}, {}]",
                scram::ITERATIONS_MIN,
                scram::ITERATIONS_MAX
            )));
        }
        if name.is_empty() || name.len() > scram::USER_BYTES_MAX {
            return Err(Error::Config(format!(
                "a user name has 1 to {} bytes",
                scram::USER_BYTES_MAX
            )));
        }
        let mut salt = vec![0u8; SALT_BYTES];
        rand::thread_rng().fill_bytes(&mut salt);
        let salted_password = {
            let (password, salt) = (password.to_string(), salt.clone());
            // PBKDF2 takes milliseconds to a second: off the runtime's workers.
            tokio::task::spawn_blocking(move || {
                scram::salted_password(mechanism, &password, &salt, iterations)
            })
            .await
            .map_err(|e| Error::Protocol(format!("salting the password did not finish: {e}")))?
        };
        let req = AlterUserScramCredentialsRequest {
            deletions: Vec::new(),
            upsertions: vec![ScramCredentialUpsertion {
                name: name.to_string(),
                mechanism: mechanism.name().to_string(),
                iterations,
                salt,
                salted_password,
            }],
        };
        let resp = self.client.call_controller(&req).await?;
        user_result(resp, name)
    }

    /// Deletes `name`'s credential for `mechanism` (its other one, if any, stays); fails with
    /// `ResourceNotFound` when there is no such credential.
    pub async fn delete_user(&self, name: &str, mechanism: Mechanism) -> Result<()> {
        let req = AlterUserScramCredentialsRequest {
            deletions: vec![ScramCredentialDeletion {
                name: name.to_string(),
                mechanism: mechanism.name().to_string(),
            }],
            upsertions: Vec::new(),
        };
        let resp = self.client.call_controller(&req).await?;
        user_result(resp, name)
    }

    /// The users with credentials, sorted by name: these (a name without any fails with
    /// `ResourceNotFound`), or every one when `None`.
    pub async fn describe_users(&self, users: Option<Vec<String>>) -> Result<Vec<UserDescription>> {
        let req = DescribeUserScramCredentialsRequest { users };
        let resp = self.client.call_controller(&req).await?;
        if resp.error_code != ErrorCode::None {
            return Err(Error::broker(resp.error_code, resp.error_message));
        }
        let mut out = Vec::with_capacity(resp.results.len());
        for r in resp.results {
            if r.error_code != ErrorCode::None {
                let message = r.error_message.unwrap_or_else(|| {
                    format!("user '{}': {}", r.user, r.error_code.description())
                });
                return Err(Error::broker(r.error_code, Some(message)));
            }
            let mut credentials = r
                .credential_infos
                .into_iter()
                .map(|c| {
                    let mechanism = Mechanism::from_name(&c.mechanism).ok_or_else(|| {
                        Error::Protocol(format!(
                            "user '{}' has a credential of an unknown mechanism '{}'",
                            r.user, c.mechanism
                        ))
                    })?;
                    Ok(ScramCredential {
                        mechanism,
                        iterations: c.iterations,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            credentials.sort_by_key(|c| c.mechanism);
            out.push(UserDescription {
                user: r.user,
                credentials,
            });
        }
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(out)
    }
}

/// The outcome for `name` of an AlterUserScramCredentials.
fn user_result(resp: AlterUserScramCredentialsResponse, name: &str) -> Result<()> {
    let r = resp
        .results
        .into_iter()
        .find(|r| r.user == name)
        .ok_or_else(|| {
            Error::Protocol(format!("no AlterUserScramCredentials result for '{name}'"))
        })?;
    if r.error_code != ErrorCode::None {
        return Err(Error::broker(r.error_code, r.error_message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use quiver_proto::api::user::AlterUserScramCredentialsResult;

    use super::*;

    #[test]
    fn an_alter_result_is_the_named_users_outcome() {
        let result =
            |user: &str, code: ErrorCode, message: Option<&str>| AlterUserScramCredentialsResult {
                user: user.into(),
                error_code: code,
                error_message: message.map(str::to_string),
            };
        let resp = AlterUserScramCredentialsResponse {
            throttle_time_ms: 0,
            results: vec![
                result("bob", ErrorCode::None, None),
                result(
                    "alice",
                    ErrorCode::UnacceptableCredential,
                    Some("iterations too low"),
                ),
            ],
        };
        assert!(user_result(resp.clone(), "bob").is_ok());
        let e = user_result(resp.clone(), "alice").unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnacceptableCredential));
        assert!(e.to_string().contains("iterations too low"), "{e}");
        assert!(matches!(
            user_result(resp, "carol").unwrap_err(),
            Error::Protocol(_)
        ));
    }

    #[test]
    fn a_credential_serializes_its_mechanism_by_name() {
        let c = ScramCredential {
            mechanism: Mechanism::Sha256,
            iterations: 8192,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"mechanism":"SCRAM-SHA-256","iterations":8192}"#
        );
    }
}
