//! Authenticating a new connection with SASL SCRAM, before it carries any other request:
//!
//! ```text
//! SaslHandshake    { mechanism: "SCRAM-SHA-512" }   -> ok
//! SaslAuthenticate { client-first }                 -> server-first
//! SaslAuthenticate { client-final }                 -> server-final (checked: the broker
//!                                                      proves it holds the user's credential)
//! ```
//!
//! The messages are `quiver_proto::scram`'s; this module only carries them and turns every
//! refusal into [`Error::Authentication`], which is never retried: the same credentials fail
//! the same way on every connection. [`authenticate`] talks to the broker through
//! [`SaslBroker`], so its tests run it against a broker made of `scram`'s server side.

use quiver_proto::api::handshake::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use quiver_proto::scram::{self, ScramError};
use quiver_proto::ErrorCode;
use rand::distributions::Alphanumeric;
use rand::Rng;

use super::config::SaslCredentials;
use crate::error::{Error, Result};

/// Characters of the client's nonce: random, printable, new for every exchange.
const NONCE_CHARS: usize = 24;

/// The two calls an exchange makes, on the connection being authenticated.
pub(crate) trait SaslBroker {
    async fn handshake(&self, req: &SaslHandshakeRequest) -> Result<SaslHandshakeResponse>;
    async fn authenticate(&self, req: &SaslAuthenticateRequest)
        -> Result<SaslAuthenticateResponse>;
}

/// Runs the exchange for `credentials` with `broker`: `Ok` once the broker has accepted the
/// client's proof and proved its own.
pub(crate) async fn authenticate(
    broker: &impl SaslBroker,
    credentials: &SaslCredentials,
) -> Result<()> {
    let mechanism = credentials.mechanism;
    let handshake = broker
        .handshake(&SaslHandshakeRequest {
            mechanism: mechanism.name().to_string(),
        })
        .await
        .map_err(|e| unsupported_api(credentials, e))?;
    check_handshake(credentials, &handshake)?;

    let (exchange, client_first) = scram::client_first(mechanism, &credentials.user, &nonce())
        .map_err(|e| scram_failed(credentials, e))?;
    let server_first = round(broker, credentials, client_first).await?;
    // PBKDF2 with the broker's iteration count (up to `scram::ITERATIONS_MAX`, about a second)
    // runs off the runtime's workers, which carry other connections' traffic meanwhile.
    let password = credentials.password.clone();
    let (finish, client_final) =
        tokio::task::spawn_blocking(move || exchange.respond(&server_first, &password))
            .await
            .map_err(|e| Error::Protocol(format!("the SCRAM computation did not finish: {e}")))?
            .map_err(|e| scram_failed(credentials, e))?;
    let server_final = round(broker, credentials, client_final).await?;
    finish
        .verify(&server_final)
        .map_err(|e| scram_failed(credentials, e))
}

/// A fresh client nonce.
fn nonce() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(NONCE_CHARS)
        .map(char::from)
        .collect()
}

/// One SaslAuthenticate round: the broker's bytes, or its refusal.
async fn round(
    broker: &impl SaslBroker,
    credentials: &SaslCredentials,
    auth_bytes: Vec<u8>,
) -> Result<Vec<u8>> {
    let resp = broker
        .authenticate(&SaslAuthenticateRequest { auth_bytes })
        .await
        .map_err(|e| unsupported_api(credentials, e))?;
    if resp.error_code != ErrorCode::None {
        let said = resp
            .error_message
            .unwrap_or_else(|| resp.error_code.description().to_string());
        return Err(failed(credentials, Some(resp.error_code), &said));
    }
    Ok(resp.auth_bytes)
}

fn check_handshake(credentials: &SaslCredentials, resp: &SaslHandshakeResponse) -> Result<()> {
    let code = resp.error_code;
    if code == ErrorCode::None {
        return Ok(());
    }
    let said = match code {
        ErrorCode::UnsupportedSaslMechanism if resp.mechanisms.is_empty() => {
            "the broker enables no SASL mechanism".to_string()
        }
        ErrorCode::UnsupportedSaslMechanism => format!(
            "the broker does not enable {}; it enables {}",
            credentials.mechanism.name(),
            resp.mechanisms.join(", ")
        ),
        ErrorCode::SecurityDisabled => {
            "the broker has authentication turned off: connect without credentials".to_string()
        }
        other => other.description().to_string(),
    };
    Err(failed(credentials, Some(code), &said))
}

/// The broker refused the SASL requests themselves (an older broker, or one without
/// security): an authentication error that says so; transport errors stay what they are.
fn unsupported_api(credentials: &SaslCredentials, e: Error) -> Error {
    match e {
        Error::Refused(r) => failed(
            credentials,
            Some(r.error_code),
            &format!(
                "the broker refused SASL authentication ({}{}): it may not support it",
                r.error_code.name(),
                r.message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        ),
        other => other,
    }
}

fn scram_failed(credentials: &SaslCredentials, e: ScramError) -> Error {
    let code = match e {
        ScramError::Failed | ScramError::Refused(_) => Some(ErrorCode::SaslAuthenticationFailed),
        _ => None,
    };
    failed(credentials, code, &e.to_string())
}

fn failed(credentials: &SaslCredentials, code: Option<ErrorCode>, said: &str) -> Error {
    Error::Authentication {
        code,
        message: format!(
            "as '{}' with {}: {said}",
            credentials.user,
            credentials.mechanism.name()
        ),
    }
}

/// What a broker that requires authentication answers to a request made without it: a hint
/// at how to give credentials.
pub(crate) fn required(message: Option<&str>) -> Error {
    let code = ErrorCode::AuthenticationRequired;
    Error::Authentication {
        code: Some(code),
        message: format!(
            "{}; give a SASL user and password (ClientConfig::sasl, QUIVER_SASL_USERNAME and \
             QUIVER_SASL_PASSWORD, or the properties sasl.username and sasl.password)",
            message.unwrap_or(code.description())
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use quiver_proto::api::common::ErrorResponse;
    use quiver_proto::scram::{Credential, Mechanism, ServerExchange};

    use super::*;

    /// A broker made of `scram`'s server side, holding one user's credential, as streamd
    /// answers (broker/src/security/sasl.rs): a refusal is an error code and message.
    struct FakeBroker {
        enabled: Vec<Mechanism>,
        credential: Credential,
        user: &'static str,
        /// The server-final it sends instead of the real one (a broker that does not know the
        /// credential).
        forged_final: Option<Vec<u8>>,
        chosen: RefCell<Option<Mechanism>>,
        exchange: RefCell<Option<ServerExchange>>,
        rounds: RefCell<u32>,
    }

    impl FakeBroker {
        fn new(mechanism: Mechanism, user: &'static str, password: &str) -> FakeBroker {
            FakeBroker {
                enabled: Mechanism::ALL.to_vec(),
                credential: Credential::new(mechanism, password, &[7; 32], 4096).unwrap(),
                user,
                forged_final: None,
                chosen: RefCell::new(None),
                exchange: RefCell::new(None),
                rounds: RefCell::new(0),
            }
        }

        fn refuse(code: ErrorCode, message: String) -> SaslAuthenticateResponse {
            SaslAuthenticateResponse {
                error_code: code,
                error_message: Some(message),
                ..SaslAuthenticateResponse::default()
            }
        }
    }

    impl SaslBroker for FakeBroker {
        async fn handshake(&self, req: &SaslHandshakeRequest) -> Result<SaslHandshakeResponse> {
            let names = self.enabled.iter().map(|m| m.name().to_string()).collect();
            let chosen = Mechanism::from_name(&req.mechanism).filter(|m| self.enabled.contains(m));
            *self.chosen.borrow_mut() = chosen;
            Ok(SaslHandshakeResponse {
                error_code: match chosen {
                    Some(_) => ErrorCode::None,
                    None => ErrorCode::UnsupportedSaslMechanism,
                },
                mechanisms: names,
            })
        }

        async fn authenticate(
            &self,
            req: &SaslAuthenticateRequest,
        ) -> Result<SaslAuthenticateResponse> {
            *self.rounds.borrow_mut() += 1;
            let Some(mechanism) = *self.chosen.borrow() else {
                return Ok(Self::refuse(
                    ErrorCode::IllegalSaslState,
                    "no handshake".into(),
                ));
            };
            let pending = self.exchange.borrow_mut().take();
            let result = match pending {
                None => {
                    let cred = self.credential.clone();
                    let user = self.user;
                    scram::server_first(mechanism, &req.auth_bytes, "servernonce", |u| {
                        (u == user).then_some(cred)
                    })
                    .map(|(exchange, reply)| {
                        *self.exchange.borrow_mut() = Some(exchange);
                        reply
                    })
                }
                Some(exchange) => exchange
                    .finish(&req.auth_bytes)
                    .map(|(_, reply)| self.forged_final.clone().unwrap_or(reply)),
            };
            Ok(match result {
                Ok(auth_bytes) => SaslAuthenticateResponse {
                    auth_bytes,
                    ..SaslAuthenticateResponse::default()
                },
                Err(e) => Self::refuse(ErrorCode::SaslAuthenticationFailed, e.to_string()),
            })
        }
    }

    /// A broker that knows no SASL API.
    struct OldBroker;

    impl SaslBroker for OldBroker {
        async fn handshake(&self, _: &SaslHandshakeRequest) -> Result<SaslHandshakeResponse> {
            Err(Error::Refused(ErrorResponse {
                error_code: ErrorCode::UnsupportedVersion,
                message: Some("unknown API key 17".into()),
                api_key: 17,
                ..ErrorResponse::default()
            }))
        }
        async fn authenticate(
            &self,
            _: &SaslAuthenticateRequest,
        ) -> Result<SaslAuthenticateResponse> {
            unreachable!("no round after a refused handshake")
        }
    }

    fn creds(m: Mechanism, user: &str, password: &str) -> SaslCredentials {
        SaslCredentials::new(user, password).mechanism(m)
    }

    fn auth_error(r: Result<()>) -> (Option<ErrorCode>, String) {
        match r {
            Err(e @ Error::Authentication { code, .. }) => {
                assert!(!e.is_retriable(), "{e}");
                (code, e.to_string())
            }
            other => panic!("not an authentication error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn both_mechanisms_authenticate_with_the_right_password() {
        for m in Mechanism::ALL {
            let broker = FakeBroker::new(m, "alice", "s3cret, =x");
            authenticate(&broker, &creds(m, "alice", "s3cret, =x"))
                .await
                .unwrap();
            assert_eq!(*broker.rounds.borrow(), 2, "{m:?}");
        }
    }

    #[tokio::test]
    async fn refusals_are_authentication_errors_that_name_the_user() {
        let m = Mechanism::Sha512;
        // (credentials, the code, words the message must hold)
        let cases = [
            (
                creds(m, "alice", "wrong"),
                Some(ErrorCode::SaslAuthenticationFailed),
                "invalid user name or password",
            ),
            (
                creds(m, "mallory", "s3cret"),
                Some(ErrorCode::SaslAuthenticationFailed),
                "invalid user name or password",
            ),
        ];
        for (c, code, words) in cases {
            let broker = FakeBroker::new(m, "alice", "s3cret");
            let (got, message) = auth_error(authenticate(&broker, &c).await);
            assert_eq!(got, code, "{message}");
            assert!(message.contains(words), "{message}");
            assert!(
                message.contains(&format!("'{}' with SCRAM-SHA-512", c.user)),
                "{message}"
            );
            assert!(!message.contains(&c.password), "{message}");
        }
    }

    #[tokio::test]
    async fn a_mechanism_the_broker_does_not_enable_is_named_with_the_ones_it_does() {
        let mut broker = FakeBroker::new(Mechanism::Sha256, "alice", "pw");
        broker.enabled = vec![Mechanism::Sha256];
        let (code, message) =
            auth_error(authenticate(&broker, &creds(Mechanism::Sha512, "alice", "pw")).await);
        assert_eq!(code, Some(ErrorCode::UnsupportedSaslMechanism));
        assert!(
            message.contains("does not enable SCRAM-SHA-512; it enables SCRAM-SHA-256"),
            "{message}"
        );
        assert_eq!(*broker.rounds.borrow(), 0);
    }

    #[tokio::test]
    async fn a_broker_that_cannot_prove_the_credential_is_refused() {
        let mut broker = FakeBroker::new(Mechanism::Sha256, "alice", "pw");
        broker.forged_final = Some(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_vec());
        let (code, message) =
            auth_error(authenticate(&broker, &creds(Mechanism::Sha256, "alice", "pw")).await);
        assert_eq!(code, None);
        assert!(message.contains("server's signature is wrong"), "{message}");
    }

    #[tokio::test]
    async fn a_broker_without_sasl_says_so() {
        let (code, message) =
            auth_error(authenticate(&OldBroker, &creds(Mechanism::Sha512, "a", "b")).await);
        assert_eq!(code, Some(ErrorCode::UnsupportedVersion));
        assert!(message.contains("may not support it"), "{message}");
    }

    #[test]
    fn nonces_are_fresh_and_printable() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), NONCE_CHARS);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
    }

    #[test]
    fn a_request_without_authentication_says_how_to_give_credentials() {
        let e = required(None);
        assert_eq!(e.code(), Some(ErrorCode::AuthenticationRequired));
        assert!(!e.is_retriable());
        assert!(e.to_string().contains("QUIVER_SASL_USERNAME"), "{e}");
    }
}
