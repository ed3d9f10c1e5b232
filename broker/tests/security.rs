//! Security through the real streamd (ARCHITECTURE.md, "Security: who is asking, and what they
//! may do"): SASL SCRAM logins (RFC 5802, RFC 7677), SASL exchanges a hostile client forges,
//! the ACL authorizer API by API (Kafka's AclAuthorizer; prefixed bindings are KIP-290), a
//! group member owned by the principal that joined with it (KIP-848's heartbeat), and
//! principals from client certificates (KIP-371's ssl.principal.mapping.rules).
//!
//! Users are made as Kafka's documentation bootstraps SCRAM: before authentication is required.
//! [`secured`] starts streamd with anonymous access, creates the users, stops it and starts it
//! again on the same data directory with `allow_anonymous = false`.

use std::time::{Duration, Instant};

use quiver_client::transport::TransportError;
use quiver_client::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType, Admin,
    AlterConfig, BrokerId, Client, ClientConfig, ClientTls, ConfigResource, Consumer,
    ConsumerConfig, ConsumerRecord, Error, ErrorCode, NewTopic, Offset, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, QuotaEntity, RecordMetadata, SaslCredentials, ScramMechanism,
    TopicPartition, PRODUCER_BYTE_RATE,
};
use quiver_proto::api::fetch::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic, OffsetSpec,
};
use quiver_proto::api::group::{
    ConsumerGroupHeartbeatRequest, DescribeGroupsRequest, OffsetCommitPartition,
    OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest,
};
use quiver_proto::api::handshake::{
    ApiVersionsRequest, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use quiver_proto::api::metadata::MetadataRequest;
use quiver_proto::api::produce::InitProducerIdRequest;
use quiver_proto::scram;
use quiver_proto::wire::codes;
use quiver_proto::PartitionId;
use quiver_testkit::hostile::{Hostile, Reply};
use quiver_testkit::{create_topic, Broker};

/// Both mechanisms, enabled on every secured broker.
const MECHANISMS: &str = "SCRAM-SHA-256,SCRAM-SHA-512";
/// PBKDF2 iterations of the test users: the least RFC 7677 recommends, so that logins in a debug
/// build stay well inside the authentication timeouts below.
const ITERATIONS: u32 = scram::ITERATIONS_MIN;
/// How long any one step may wait for the broker or a client before the test fails.
const WAIT_MAX: Duration = Duration::from_secs(15);

/// A SCRAM user of the tests.
#[derive(Clone, Copy)]
struct User {
    name: &'static str,
    password: &'static str,
    mechanism: ScramMechanism,
}

const ADMIN: User = User {
    name: "admin",
    password: "admin-secret",
    mechanism: ScramMechanism::Sha512,
};
const ALICE: User = User {
    name: "alice",
    password: "alice-secret",
    mechanism: ScramMechanism::Sha512,
};
/// The one user with a SCRAM-SHA-256 credential (and none for SCRAM-SHA-512).
const BOB: User = User {
    name: "bob",
    password: "bob-secret",
    mechanism: ScramMechanism::Sha256,
};

impl User {
    fn principal(&self) -> String {
        format!("User:{}", self.name)
    }
}

/// streamd with `users`, answering only authenticated connections: started once with anonymous
/// access (no authorizer) to create the users, then again on the same data directory with
/// `--sasl-mechanisms`, `--allow-anonymous false` and `then`.
async fn secured(users: &[User], then: &[&str]) -> Broker {
    let mut broker = Broker::start(&["--sasl-mechanisms", MECHANISMS]);
    {
        let client = broker.client().await;
        let admin = Admin::new(client.clone());
        for u in users {
            admin
                .create_user(u.name, u.password, u.mechanism, ITERATIONS)
                .await
                .unwrap_or_else(|e| panic!("user {} created: {e}", u.name));
        }
        client.close().await;
    }
    broker.terminate().expect("streamd was running");
    broker.args = [
        "--sasl-mechanisms",
        MECHANISMS,
        "--allow-anonymous",
        "false",
    ]
    .iter()
    .chain(then)
    .map(|s| s.to_string())
    .collect();
    broker.restart();
    broker
}

fn config_as(broker: &Broker, credentials: SaslCredentials) -> ClientConfig {
    ClientConfig::new(broker.addr.to_string())
        .tls(ClientTls::from_ca_file(broker.ca()).expect("the broker's CA"))
        .request_timeout(Duration::from_secs(10))
        .sasl_credentials(credentials)
}

fn credentials(user: &User) -> SaslCredentials {
    SaslCredentials::new(user.name, user.password).mechanism(user.mechanism)
}

async fn try_login(broker: &Broker, credentials: SaslCredentials) -> Result<Client, Error> {
    tokio::time::timeout(WAIT_MAX, Client::connect(config_as(broker, credentials)))
        .await
        .expect("a login is answered in time")
}

async fn login(broker: &Broker, user: &User) -> Client {
    try_login(broker, credentials(user))
        .await
        .unwrap_or_else(|e| panic!("{} logs in: {e}", user.name))
}

/// Sends one record with a new producer (idempotent or not) and closes it: the outcome.
async fn produce_one(
    client: &Client,
    topic: &str,
    value: &str,
    idempotent: bool,
) -> Result<RecordMetadata, Error> {
    let config = ProducerConfig::default()
        .enable_idempotence(idempotent)
        .request_timeout(Duration::from_secs(5))
        .delivery_timeout(Duration::from_secs(10));
    let producer = Producer::new(client.clone(), config).expect("a valid producer config");
    let sent = tokio::time::timeout(
        WAIT_MAX,
        producer.send(ProducerRecord::new(topic).value(value.as_bytes().to_vec())),
    )
    .await
    .expect("a send is answered within its delivery timeout");
    let _ = producer.close_timeout(Duration::from_secs(2)).await;
    sent
}

/// Polls until `n` records came, or the consumer fails; panics after `WAIT_MAX`.
async fn poll_records(consumer: &mut Consumer, n: usize) -> Result<Vec<ConsumerRecord>, Error> {
    let deadline = Instant::now() + WAIT_MAX;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} records in {WAIT_MAX:?}",
            got.len()
        );
        got.extend(consumer.poll(Duration::from_millis(200)).await?);
    }
    Ok(got)
}

/// Every value of `topic` (read from the start of each partition, no group), sorted; at least
/// `n` of them, or the consumer's error.
async fn read_values(client: &Client, topic: &str, n: usize) -> Result<Vec<String>, Error> {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig::default()
            .auto_offset_reset(OffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(50)),
    );
    consumer.assign_topic(topic).await?;
    let mut values: Vec<String> = poll_records(&mut consumer, n)
        .await?
        .iter()
        .map(|r| r.value_str().unwrap_or_default().to_string())
        .collect();
    values.sort();
    Ok(values)
}

/// The topics Metadata lists for `client` when asked for all of them, sorted.
async fn listed_topics(client: &Client) -> Vec<String> {
    let (md, _) = client
        .call_any(&MetadataRequest::default(), vec![])
        .await
        .expect("metadata answered");
    let mut names: Vec<String> = md.topics.into_iter().map(|t| t.name).collect();
    names.sort();
    names
}

/// Metadata's error code for `topic` asked for by name.
async fn named_topic(client: &Client, topic: &str) -> ErrorCode {
    let req = MetadataRequest {
        topics: Some(vec![topic.to_string()]),
        allow_auto_topic_creation: false,
    };
    let (md, _) = client
        .call_any(&req, vec![])
        .await
        .expect("metadata answered");
    md.topics[0].error_code
}

/// ListOffsets' error code for partition 0 of `topic`.
async fn list_offsets_code(client: &Client, topic: &str) -> ErrorCode {
    let req = ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            name: topic.to_string(),
            partitions: vec![ListOffsetsPartition {
                partition: PartitionId(0),
                current_leader_epoch: None,
                timestamp: OffsetSpec::Latest,
            }],
        }],
        ..Default::default()
    };
    let (resp, _) = client.call_any(&req, vec![]).await.expect("answered");
    resp.topics[0].partitions[0].error_code
}

/// The number of records in `topic` (its partitions' end offsets, summed), as `admin` sees it.
async fn record_count(admin: &Admin, topic: &str) -> u64 {
    let d = admin.describe_topic(topic).await.expect("topic described");
    d.partitions
        .iter()
        .map(|p| p.end_offset.expect("an end offset").0)
        .sum()
}

async fn init_producer_id_code(client: &Client) -> ErrorCode {
    let (resp, _) = client
        .call_any(&InitProducerIdRequest::default(), vec![])
        .await
        .expect("InitProducerId answered");
    resp.error_code
}

/// The error of `result`, which must be one.
fn error_of<T>(result: Result<T, Error>, what: &str) -> Error {
    match result {
        Ok(_) => panic!("{what}: succeeded, expected an error"),
        Err(e) => e,
    }
}

/// The broker's error code of `result`, which must be an error.
fn refused<T>(result: Result<T, Error>, what: &str) -> Option<ErrorCode> {
    match result {
        Ok(_) => panic!("{what}: allowed, expected a refusal"),
        Err(e) => {
            eprintln!("{what}: {e}");
            e.code()
        }
    }
}

/// What an ACL binding protects.
#[derive(Clone, Copy)]
enum On<'a> {
    Topic(&'a str),
    TopicPrefix(&'a str),
    Group(&'a str),
    Cluster,
}

fn binding(permission: AclPermission, who: &str, op: AclOperation, on: On) -> AclBinding {
    let (resource_type, resource_name, pattern_type) = match on {
        On::Topic(n) => (AclResourceType::Topic, n, AclPatternType::Literal),
        On::TopicPrefix(n) => (AclResourceType::Topic, n, AclPatternType::Prefixed),
        On::Group(n) => (AclResourceType::Group, n, AclPatternType::Literal),
        On::Cluster => (
            AclResourceType::Cluster,
            "kafka-cluster",
            AclPatternType::Literal,
        ),
    };
    AclBinding {
        resource_type,
        resource_name: resource_name.to_string(),
        pattern_type,
        principal: who.to_string(),
        host: "*".into(),
        operation: op,
        permission,
    }
}

fn allow(who: &str, op: AclOperation, on: On) -> AclBinding {
    binding(AclPermission::Allow, who, op, on)
}

fn deny(who: &str, op: AclOperation, on: On) -> AclBinding {
    binding(AclPermission::Deny, who, op, on)
}

fn every_binding() -> AclFilter {
    AclFilter {
        resource_type: AclResourceType::Any,
        resource_name: None,
        pattern_type: AclPatternType::Any,
        principal: None,
        host: None,
        operation: AclOperation::Any,
        permission: AclPermission::Any,
    }
}

/// The sum of `quiver_requests_total` over every API but those served before authentication
/// (ApiVersions, SaslHandshake, SaslAuthenticate).
fn requests_needing_authentication(broker: &Broker) -> f64 {
    let before_authentication = ["ApiVersions", "SaslHandshake", "SaslAuthenticate"];
    broker
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("quiver_requests_total{"))
        .filter(|l| {
            !before_authentication
                .iter()
                .any(|api| l.contains(&format!("api=\"{api}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---- SASL by hand, on a raw connection ----

async fn sasl_handshake(h: &Hostile, mechanism: &str) -> SaslHandshakeResponse {
    let req = SaslHandshakeRequest {
        mechanism: mechanism.to_string(),
    };
    h.call(&req, &[]).await.ok::<SaslHandshakeRequest>()
}

async fn sasl_round(h: &Hostile, auth_bytes: &[u8]) -> SaslAuthenticateResponse {
    let req = SaslAuthenticateRequest {
        auth_bytes: auth_bytes.to_vec(),
    };
    h.call(&req, &[]).await.ok::<SaslAuthenticateRequest>()
}

/// Handshake and the client-first round for `user`; the client's state, the client-first
/// bytes sent, and the server-first received.
async fn sasl_first(
    h: &Hostile,
    user: &User,
    nonce: &str,
) -> (scram::ClientExchange, Vec<u8>, Vec<u8>) {
    let hs = sasl_handshake(h, user.mechanism.name()).await;
    assert_eq!(hs.error_code, ErrorCode::None, "{hs:?}");
    let (exchange, first) = scram::client_first(user.mechanism, user.name, nonce).unwrap();
    let r = sasl_round(h, &first).await;
    assert_eq!(r.error_code, ErrorCode::None, "client-first refused: {r:?}");
    (exchange, first, r.auth_bytes)
}

/// Metadata on a raw connection: `None` if answered, else the ErrorResponse's code.
async fn raw_metadata(h: &Hostile) -> Option<ErrorCode> {
    match h.call(&MetadataRequest::default(), &[]).await {
        Reply::Frame(f) if f.header.is_error_response() => Some(Reply::Frame(f).error().error_code),
        r @ Reply::Frame(_) => {
            r.ok::<MetadataRequest>();
            None
        }
        other => panic!("metadata got no answer: {other:?}"),
    }
}

/// `(salt bytes, iterations)` of a server-first message (`r=...,s=<base64>,i=<count>`).
fn salt_and_iterations(server_first: &[u8]) -> (usize, u32) {
    let text = std::str::from_utf8(server_first).expect("printable");
    let field = |k: &str| {
        text.split(',')
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
    };
    // Padded base64: three bytes per four characters, less one per '='.
    let salt = field("s=");
    let salt_bytes = salt.len() / 4 * 3 - salt.matches('=').count();
    (salt_bytes, field("i=").parse().expect("an iteration count"))
}

// ---- 1. Logins ----

/// RFC 5802 section 5: the server accepts a client that proves it knows the password, with
/// either mechanism; a wrong password, an unknown user and a mechanism the user has no
/// credential for fail alike, and nothing but the exchange reaches the broker. A client
/// without credentials is told to authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_need_a_users_password_and_nothing_tells_a_missing_user() {
    let broker = secured(&[ALICE, BOB], &[]).await;

    // The right password, with SCRAM-SHA-512 (alice) and SCRAM-SHA-256 (bob).
    let alice = login(&broker, &ALICE).await;
    let bob = login(&broker, &BOB).await;
    Admin::new(alice.clone())
        .create_topic(NewTopic::new("greetings", 1))
        .await
        .expect("alice creates a topic");
    produce_one(&alice, "greetings", "from alice", true)
        .await
        .expect("alice produces");
    produce_one(&bob, "greetings", "from bob", true)
        .await
        .expect("bob produces");
    assert_eq!(
        read_values(&bob, "greetings", 2).await.expect("bob reads"),
        ["from alice", "from bob"]
    );
    assert_eq!(
        read_values(&alice, "greetings", 2)
            .await
            .expect("alice reads"),
        ["from alice", "from bob"]
    );
    alice.close().await;
    bob.close().await;

    // Refusals: each an authentication error with SaslAuthenticationFailed, and no request
    // beyond the SASL exchange reaches the broker.
    let requests_before = requests_needing_authentication(&broker);
    let failures_before = broker.metric("quiver_authentication_failures_total");
    let failed_login = |user: &'static str, password: &'static str, m: ScramMechanism| {
        let broker = &broker;
        async move {
            let e = error_of(
                try_login(broker, SaslCredentials::new(user, password).mechanism(m)).await,
                user,
            );
            match &e {
                Error::Authentication { code, message } => {
                    assert_eq!(*code, Some(ErrorCode::SaslAuthenticationFailed), "{e}");
                    assert!(
                        !message.contains(password),
                        "the password is not shown: {e}"
                    );
                    // What the broker said, after the SDK's "as '<user>' with <mechanism>: ".
                    let said = message
                        .split_once(&format!("with {}: ", m.name()))
                        .unwrap_or_else(|| panic!("{e}"))
                        .1;
                    said.to_string()
                }
                other => panic!("{user}: not an authentication error: {other:?}"),
            }
        }
    };
    let wrong_password = failed_login("alice", "not-alices", ScramMechanism::Sha512).await;
    let unknown_user = failed_login("mallory", "alice-secret", ScramMechanism::Sha512).await;
    let other_mechanism = failed_login("bob", "bob-secret", ScramMechanism::Sha512).await;
    assert!(
        wrong_password.contains("invalid user name or password"),
        "{wrong_password}"
    );
    assert_eq!(
        unknown_user, wrong_password,
        "a missing user is refused in the same words as a wrong password"
    );
    assert_eq!(
        other_mechanism, wrong_password,
        "a credential is per mechanism: bob has none for SCRAM-SHA-512"
    );
    assert_eq!(
        broker.metric("quiver_authentication_failures_total") - failures_before,
        3.0
    );
    assert_eq!(
        requests_needing_authentication(&broker),
        requests_before,
        "a failed login makes no request beyond the SASL exchange"
    );

    // No credentials: the first request (the SDK's Metadata) is refused.
    let anonymous = ClientConfig::new(broker.addr.to_string())
        .tls(ClientTls::from_ca_file(broker.ca()).unwrap())
        .request_timeout(Duration::from_secs(10));
    let e = error_of(
        tokio::time::timeout(WAIT_MAX, Client::connect(anonymous))
            .await
            .expect("answered"),
        "a client without credentials",
    );
    assert!(
        matches!(
            e,
            Error::Authentication {
                code: Some(ErrorCode::AuthenticationRequired),
                ..
            }
        ),
        "{e}"
    );
}

/// "a missing user runs the same computation as a wrong password" (ARCHITECTURE.md) and
/// `scram::server_first` promises that "the answer (and its timing) does not tell a missing
/// user from a wrong password": so the server-first message of a user made the usual way
/// (streamctl's and the SDK's defaults: 32 random bytes of salt, 8192 iterations) must look
/// like a missing user's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_users_server_first_looks_like_a_real_users() {
    let broker = Broker::start(&["--sasl-mechanisms", "SCRAM-SHA-512"]);
    let client = broker.client().await;
    Admin::new(client.clone())
        .create_user(
            "alice",
            "alice-secret",
            ScramMechanism::Sha512,
            Admin::DEFAULT_SCRAM_ITERATIONS,
        )
        .await
        .expect("user created");
    let mut seen = Vec::new();
    for name in ["alice", "mallory"] {
        let h = Hostile::connect(&broker).await;
        let user = User {
            name,
            password: "unused",
            mechanism: ScramMechanism::Sha512,
        };
        let (_, _, server_first) = sasl_first(&h, &user, "clientnonce").await;
        seen.push((name, salt_and_iterations(&server_first)));
    }
    assert_eq!(
        seen[0].1, seen[1].1,
        "(salt bytes, iterations) of an existing and of a missing user: {seen:?}"
    );
}

// ---- 2. Hostile SASL exchanges ----

/// Kafka's SASL order (SaslHandshake, then SaslAuthenticate rounds, once per connection) and
/// RFC 5802's nonces: out of order, truncated or replayed messages are refused, a connection
/// that does not finish in time is closed, and nothing but ApiVersions and SASL is served
/// before authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_exchanges_out_of_order_truncated_replayed_or_unfinished_are_refused() {
    const TIMEOUT_MS: u64 = 1500;
    let broker = secured(
        &[ALICE],
        &["--authentication-timeout-ms", &TIMEOUT_MS.to_string()],
    )
    .await;

    // A whole exchange (its deadline runs from now).
    let authenticated = Hostile::connect(&broker).await;
    let (exchange, client_first, server_first) =
        sasl_first(&authenticated, &ALICE, "replayednonce").await;
    let (finish, client_final) = exchange.respond(&server_first, ALICE.password).unwrap();
    let r = sasl_round(&authenticated, &client_final).await;
    assert_eq!(r.error_code, ErrorCode::None, "{r:?}");
    finish.verify(&r.auth_bytes).expect("the server's proof");
    assert_eq!(raw_metadata(&authenticated).await, None);
    // Once done, done: another round or handshake is out of order, and the principal stays.
    let again = sasl_round(&authenticated, &client_final).await;
    assert_eq!(again.error_code, ErrorCode::IllegalSaslState, "{again:?}");
    let again = sasl_handshake(&authenticated, "SCRAM-SHA-512").await;
    assert_eq!(again.error_code, ErrorCode::IllegalSaslState, "{again:?}");
    assert_eq!(raw_metadata(&authenticated).await, None);

    // Before authenticating: ApiVersions is served and names the mechanisms; anything else is
    // refused; SaslAuthenticate before SaslHandshake is out of order; an unknown mechanism is
    // refused with the list of those enabled.
    let fresh = Hostile::connect(&broker).await;
    let versions = fresh
        .call(&ApiVersionsRequest::default(), &[])
        .await
        .ok::<ApiVersionsRequest>();
    assert_eq!(versions.sasl_mechanisms, ["SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert_eq!(
        raw_metadata(&fresh).await,
        Some(ErrorCode::AuthenticationRequired)
    );
    let early = sasl_round(&fresh, &client_first).await;
    assert_eq!(early.error_code, ErrorCode::IllegalSaslState, "{early:?}");
    let plain = sasl_handshake(&fresh, "PLAIN").await;
    assert_eq!(plain.error_code, ErrorCode::UnsupportedSaslMechanism);
    assert_eq!(plain.mechanisms, ["SCRAM-SHA-256", "SCRAM-SHA-512"]);

    // A truncated client-first fails the exchange, for good on this connection.
    let truncated = Hostile::connect(&broker).await;
    let hs = sasl_handshake(&truncated, "SCRAM-SHA-512").await;
    assert_eq!(hs.error_code, ErrorCode::None);
    let r = sasl_round(&truncated, b"n,,").await;
    assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed, "{r:?}");
    assert_eq!(
        raw_metadata(&truncated).await,
        Some(ErrorCode::AuthenticationRequired)
    );
    let retry = sasl_handshake(&truncated, "SCRAM-SHA-512").await;
    assert_eq!(retry.error_code, ErrorCode::IllegalSaslState, "{retry:?}");

    // A replay: the first connection's client-first and client-final, word for word, on
    // another connection. The server's nonce is new, so the old proof does not fit.
    let replay = Hostile::connect(&broker).await;
    let hs = sasl_handshake(&replay, "SCRAM-SHA-512").await;
    assert_eq!(hs.error_code, ErrorCode::None);
    let first = sasl_round(&replay, &client_first).await;
    assert_eq!(first.error_code, ErrorCode::None, "{first:?}");
    assert_ne!(
        first.auth_bytes, server_first,
        "every exchange gets a fresh server nonce"
    );
    let r = sasl_round(&replay, &client_final).await;
    assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed, "{r:?}");
    assert_eq!(
        raw_metadata(&replay).await,
        Some(ErrorCode::AuthenticationRequired)
    );

    // An exchange that never finishes: the broker closes the connection at its deadline.
    let unfinished = Hostile::connect(&broker).await;
    let opened = Instant::now();
    let _ = sasl_first(&unfinished, &ALICE, "unfinishednonce").await;
    let closed = tokio::time::timeout(
        Duration::from_millis(TIMEOUT_MS) + WAIT_MAX,
        unfinished.conn.closed(),
    )
    .await
    .expect("the broker closes an unauthenticated connection");
    let after = opened.elapsed();
    match closed {
        TransportError::ConnectionClosed { code, .. } => {
            assert_eq!(code, u64::from(codes::AUTHENTICATION_TIMEOUT), "{closed}")
        }
        other => panic!("not closed by the broker: {other}"),
    }
    assert!(
        after >= Duration::from_millis(TIMEOUT_MS - 500),
        "closed after {after:?}, before its {TIMEOUT_MS} ms"
    );
    let late = unfinished.call(&MetadataRequest::default(), &[]).await;
    assert!(
        !matches!(late, Reply::Frame(_)),
        "a closed connection answers nothing: {late:?}"
    );
    // The connections that never authenticated went at their deadlines too.
    for (what, h) in [
        ("refused", &fresh),
        ("truncated", &truncated),
        ("replayed", &replay),
    ] {
        let why = tokio::time::timeout(WAIT_MAX, h.conn.closed())
            .await
            .unwrap_or_else(|_| panic!("the {what} connection is closed"));
        assert!(
            matches!(why, TransportError::ConnectionClosed { code, .. } if code == u64::from(codes::AUTHENTICATION_TIMEOUT)),
            "{what}: {why}"
        );
    }

    // The connection that authenticated in time is still served past its deadline.
    assert_eq!(raw_metadata(&authenticated).await, None);
}

// ---- 3 and 4. Authorization, API by API ----

/// A broker requiring SCRAM logins, with the authorizer on and `User:admin` its super user;
/// admin, alice and bob are its users (heartbeats every 200 ms, so groups settle quickly).
async fn authorizing_broker() -> Broker {
    secured(
        &[ADMIN, ALICE, BOB],
        &[
            "--authorizer",
            "true",
            "--super-users",
            "User:admin",
            "--group-heartbeat-interval-ms",
            "200",
        ],
    )
    .await
}

/// Kafka's AclAuthorizer through the SDK: each API asks for its operation (ARCHITECTURE.md,
/// "Where each check is"); a principal without it is refused with the API's code, one with it
/// (or the super user) is served. Deny wins over Allow; a prefixed binding (KIP-290) covers the
/// names it starts. No principal writes `__consumer_offsets`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_asks_the_authorizer_for_its_operation() {
    use AclOperation::*;
    let broker = authorizing_broker().await;
    let (alice_p, bob_p) = (ALICE.principal(), BOB.principal());
    let admin_client = login(&broker, &ADMIN).await;
    let admin = Admin::new(admin_client.clone());
    for (t, partitions) in [
        ("orders", 2),
        ("secret", 1),
        ("ops", 1),
        ("feed", 1),
        ("shared", 1),
        ("logs-a", 1),
        ("other", 1),
    ] {
        admin
            .create_topic(NewTopic::new(t, partitions))
            .await
            .expect("the super user creates topics");
    }
    admin
        .create_acls(vec![
            allow(&alice_p, Write, On::Topic("orders")),
            allow(&bob_p, Read, On::Topic("orders")),
            allow(&alice_p, Alter, On::Topic("ops")),
            allow(&alice_p, AlterConfigs, On::Topic("ops")),
            allow(&alice_p, Delete, On::Topic("ops")),
            allow(&bob_p, Describe, On::Topic("ops")),
            allow(&alice_p, Create, On::TopicPrefix("alice-")),
            allow(&bob_p, Create, On::Cluster),
            allow(&alice_p, Write, On::TopicPrefix("logs-")),
            allow(&alice_p, Read, On::Topic("feed")),
            allow(&bob_p, Read, On::Topic("feed")),
            allow(&bob_p, Read, On::Group("readers")),
            allow(&alice_p, Describe, On::Group("readers")),
        ])
        .await
        .expect("the super user creates ACLs");
    let acl_count = admin.describe_acls(every_binding()).await.unwrap().len();
    assert_eq!(acl_count, 13);
    let alice = login(&broker, &ALICE).await;
    let bob = login(&broker, &BOB).await;
    let (alice_admin, bob_admin) = (Admin::new(alice.clone()), Admin::new(bob.clone()));

    // Metadata: all topics lists only the describable (Read, Write, Alter, Delete imply
    // Describe); naming one refuses it whether or not it exists.
    assert_eq!(listed_topics(&bob).await, ["feed", "ops", "orders"]);
    assert_eq!(
        listed_topics(&alice).await,
        ["feed", "logs-a", "ops", "orders"]
    );
    assert_eq!(
        listed_topics(&admin_client).await,
        ["feed", "logs-a", "ops", "orders", "other", "secret", "shared"]
    );
    assert_eq!(
        named_topic(&bob, "secret").await,
        ErrorCode::TopicAuthorizationFailed
    );
    assert_eq!(
        named_topic(&bob, "no-such-topic").await,
        ErrorCode::TopicAuthorizationFailed,
        "a refused principal does not learn what exists"
    );
    assert_eq!(named_topic(&bob, "orders").await, ErrorCode::None);
    assert_eq!(
        named_topic(&admin_client, "no-such-topic").await,
        ErrorCode::UnknownTopicOrPartition
    );

    // Produce: Write. alice's idempotent producer gets its id by her Write on orders.
    produce_one(&alice, "orders", "from alice", true)
        .await
        .expect("alice writes orders");
    let e = produce_one(&bob, "orders", "from bob", false).await;
    assert_eq!(
        refused(e, "bob writes orders"),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    produce_one(&admin_client, "orders", "from admin", true)
        .await
        .expect("the super user writes orders");
    assert_eq!(record_count(&admin, "orders").await, 2, "bob wrote nothing");

    // Fetch: Read. bob reads; alice, who wrote, may not.
    assert_eq!(
        read_values(&bob, "orders", 2)
            .await
            .expect("bob reads orders"),
        ["from admin", "from alice"]
    );
    assert_eq!(
        refused(read_values(&alice, "orders", 1).await, "alice reads orders"),
        Some(ErrorCode::TopicAuthorizationFailed)
    );

    // ListOffsets: Describe.
    assert_eq!(
        list_offsets_code(&bob, "secret").await,
        ErrorCode::TopicAuthorizationFailed
    );
    assert_eq!(list_offsets_code(&bob, "orders").await, ErrorCode::None);

    // CreateTopics: Create on the topic (here by prefix) or on the cluster.
    assert_eq!(
        create_topic(&alice, "alice-new", 1, &[]).await,
        ErrorCode::None
    );
    assert_eq!(
        create_topic(&alice, "bob-new", 1, &[]).await,
        ErrorCode::TopicAuthorizationFailed
    );
    assert_eq!(
        named_topic(&admin_client, "bob-new").await,
        ErrorCode::UnknownTopicOrPartition,
        "a refused creation creates nothing"
    );
    assert_eq!(create_topic(&bob, "bob-new", 1, &[]).await, ErrorCode::None);

    // DescribeConfigs: DescribeConfigs (AlterConfigs implies it; Describe does not); a
    // broker's configs need it on the cluster.
    let ops = || ConfigResource::Topic("ops".into());
    assert_eq!(
        refused(
            bob_admin.describe_configs(ops()).await,
            "bob describes ops' configs"
        ),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    alice_admin
        .describe_configs(ops())
        .await
        .expect("alice describes ops' configs");
    let broker_1 = || ConfigResource::Broker(BrokerId(1));
    assert_eq!(
        refused(
            bob_admin.describe_configs(broker_1()).await,
            "bob describes the broker's configs"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    admin
        .describe_configs(broker_1())
        .await
        .expect("the super user describes the broker's configs");

    // IncrementalAlterConfigs: AlterConfigs on the topic, or on the cluster for a broker.
    let retention = || vec![AlterConfig::set("retention.ms", "3600000")];
    assert_eq!(
        refused(
            bob_admin.alter_configs(ops(), retention()).await,
            "bob alters ops' configs"
        ),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(
        refused(
            bob_admin
                .alter_configs(broker_1(), vec![AlterConfig::set("log.retention.ms", "1")])
                .await,
            "bob alters the broker's configs"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    alice_admin
        .alter_configs(ops(), retention())
        .await
        .expect("alice alters ops' configs");
    let configs = admin.describe_configs(ops()).await.unwrap();
    let retention_ms = configs.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(retention_ms.value.as_deref(), Some("3600000"));

    // CreatePartitions: Alter.
    assert_eq!(
        refused(bob_admin.create_partitions("ops", 2).await, "bob grows ops"),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    alice_admin
        .create_partitions("ops", 3)
        .await
        .expect("alice grows ops");
    assert_eq!(
        admin.describe_topic("ops").await.unwrap().partitions.len(),
        3
    );

    // DeleteTopics: Delete (Describe is not enough).
    assert_eq!(
        refused(bob_admin.delete_topic("ops").await, "bob deletes ops"),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(named_topic(&admin_client, "ops").await, ErrorCode::None);
    alice_admin
        .delete_topic("ops")
        .await
        .expect("alice deletes ops");
    assert_eq!(
        named_topic(&admin_client, "ops").await,
        ErrorCode::UnknownTopicOrPartition
    );

    // InitProducerId: IdempotentWrite on the cluster, or Write on some topic.
    assert_eq!(
        init_producer_id_code(&bob).await,
        ErrorCode::ClusterAuthorizationFailed
    );
    // Through the SDK: bob's idempotent producer fails its record with that error, promptly,
    // rather than waiting for an id that will not come (it used to retry for ever).
    let no_id = produce_one(&bob, "orders", "no-id", true)
        .await
        .unwrap_err();
    assert_eq!(
        no_id.code(),
        Some(ErrorCode::ClusterAuthorizationFailed),
        "{no_id}"
    );
    assert_eq!(init_producer_id_code(&alice).await, ErrorCode::None);
    admin
        .create_acls(vec![allow(&bob_p, IdempotentWrite, On::Cluster)])
        .await
        .unwrap();
    assert_eq!(init_producer_id_code(&bob).await, ErrorCode::None);

    // Groups. bob (Read on group and topic) consumes with the group and commits.
    for i in 0..3 {
        produce_one(&admin_client, "feed", &format!("feed-{i}"), true)
            .await
            .unwrap();
    }
    let group = |client: &Client| {
        Consumer::new(
            client.clone(),
            ConsumerConfig::default()
                .group_id("readers")
                .auto_offset_reset(OffsetReset::Earliest)
                .enable_auto_commit(false)
                .fetch_max_wait(Duration::from_millis(50)),
        )
    };
    let mut bobs = group(&bob);
    bobs.subscribe(vec!["feed".into()]).await.unwrap();
    assert_eq!(
        poll_records(&mut bobs, 3)
            .await
            .expect("bob consumes with the group")
            .len(),
        3
    );
    tokio::time::timeout(WAIT_MAX, bobs.commit())
        .await
        .expect("answered")
        .expect("bob commits");
    // A committed topic needs Read too.
    let e = tokio::time::timeout(
        WAIT_MAX,
        bobs.commit_offsets(&[(TopicPartition::new("secret", 0), Offset(0))]),
    )
    .await
    .expect("answered");
    assert_eq!(
        refused(e, "bob commits for secret"),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    // alice may describe the group but not read it: she cannot join, nor commit.
    let mut alices = group(&alice);
    alices.subscribe(vec!["feed".into()]).await.unwrap();
    assert_eq!(
        refused(poll_records(&mut alices, 1).await, "alice joins readers"),
        Some(ErrorCode::GroupAuthorizationFailed)
    );
    drop(alices);
    assert_eq!(
        refused(
            alice_admin
                .alter_group_offsets("readers", &[(TopicPartition::new("feed", 0), Offset(0))])
                .await,
            "alice commits for readers"
        ),
        Some(ErrorCode::GroupAuthorizationFailed)
    );
    // DescribeGroups: Describe.
    let described = alice_admin
        .describe_group("readers")
        .await
        .expect("alice describes readers");
    assert_eq!(described.members.len(), 1, "{described:?}");
    assert_eq!(
        described
            .offsets
            .iter()
            .find(|o| o.topic == "feed")
            .and_then(|o| o.committed),
        Some(3),
        "bob's commit"
    );
    admin
        .alter_group_offsets("hidden", &[(TopicPartition::new("feed", 0), Offset(1))])
        .await
        .expect("the super user commits for a group of its own");
    let (resp, _) = bob
        .call_any(
            &DescribeGroupsRequest {
                groups: vec!["hidden".into()],
            },
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        resp.groups[0].error_code,
        ErrorCode::GroupAuthorizationFailed
    );
    // ListGroups: what the principal may describe (everything with Describe on the cluster).
    let group_ids = |groups: Vec<quiver_client::GroupListing>| {
        groups.into_iter().map(|g| g.group_id).collect::<Vec<_>>()
    };
    assert_eq!(
        group_ids(alice_admin.list_groups().await.unwrap()),
        ["readers"]
    );
    assert_eq!(
        group_ids(admin.list_groups().await.unwrap()),
        ["hidden", "readers"]
    );
    // DeleteGroups: Delete.
    assert_eq!(
        refused(
            alice_admin.delete_group("readers").await,
            "alice deletes readers"
        ),
        Some(ErrorCode::GroupAuthorizationFailed)
    );
    admin
        .create_acls(vec![allow(&alice_p, Delete, On::Group("hidden"))])
        .await
        .unwrap();
    alice_admin
        .delete_group("hidden")
        .await
        .expect("alice deletes an empty group once allowed");
    assert_eq!(group_ids(admin.list_groups().await.unwrap()), ["readers"]);
    let _ = tokio::time::timeout(WAIT_MAX, bobs.close()).await;

    // ACLs and users: Alter (changes) and Describe (reads) on the cluster.
    let mallory = allow("User:mallory", All, On::Topic("*"));
    assert_eq!(
        refused(
            alice_admin.create_acls(vec![mallory.clone()]).await,
            "alice creates an ACL"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    assert_eq!(
        refused(
            alice_admin.describe_acls(every_binding()).await,
            "alice describes ACLs"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    assert_eq!(
        refused(
            alice_admin.delete_acls(vec![every_binding()]).await,
            "alice deletes every ACL"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    assert_eq!(
        refused(
            alice_admin
                .create_user("mallory", "pw", ScramMechanism::Sha512, ITERATIONS)
                .await,
            "alice creates a user"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    assert_eq!(
        refused(
            alice_admin.delete_user("bob", BOB.mechanism).await,
            "alice deletes bob"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    assert_eq!(
        refused(alice_admin.describe_users(None).await, "alice lists users"),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    assert_eq!(
        admin.describe_acls(every_binding()).await.unwrap().len(),
        acl_count + 2,
        "alice's refused deletion deleted nothing (bob's IdempotentWrite and alice's Delete \
         on hidden were added)"
    );
    let users: Vec<String> = admin
        .describe_users(None)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user)
        .collect();
    assert_eq!(users, ["admin", "alice", "bob"]);
    login(&broker, &BOB).await.close().await;
    // The super user manages users and ACLs.
    admin.create_acls(vec![mallory.clone()]).await.unwrap();
    let mallory_filter = AclFilter {
        principal: Some("User:mallory".into()),
        ..every_binding()
    };
    assert_eq!(
        admin.delete_acls(vec![mallory_filter]).await.unwrap(),
        [mallory]
    );
    let carol = User {
        name: "carol",
        password: "carol-secret",
        mechanism: ScramMechanism::Sha256,
    };
    admin
        .create_user(carol.name, carol.password, carol.mechanism, ITERATIONS)
        .await
        .unwrap();
    login(&broker, &carol).await.close().await;
    admin
        .delete_user(carol.name, carol.mechanism)
        .await
        .unwrap();
    let e = try_login(&broker, credentials(&carol)).await;
    assert_eq!(
        refused(e, "carol logs in once deleted"),
        Some(ErrorCode::SaslAuthenticationFailed)
    );

    // DescribeCluster: Describe on the cluster.
    assert_eq!(
        refused(
            alice_admin.describe_quorum().await,
            "alice describes the cluster"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    admin
        .describe_quorum()
        .await
        .expect("the super user describes the cluster");
    admin
        .create_acls(vec![allow(&bob_p, Describe, On::Cluster)])
        .await
        .unwrap();
    bob_admin
        .describe_quorum()
        .await
        .expect("bob describes the cluster once allowed");

    // Reassignment: Alter on the cluster, checked before the request goes on (a single
    // broker then refuses it for having no other broker).
    assert_eq!(
        refused(
            alice_admin.reassign_partition("orders", 0, &[1]).await,
            "alice moves a replica"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    let past_the_check = refused(
        admin.reassign_partition("orders", 0, &[1]).await,
        "admin moves a replica on a single broker",
    );
    assert_ne!(past_the_check, Some(ErrorCode::ClusterAuthorizationFailed));

    // Quotas: AlterConfigs (set) and DescribeConfigs (list) on the cluster.
    let alice_quota = QuotaEntity::user("alice");
    assert_eq!(
        refused(
            alice_admin
                .alter_quotas(&alice_quota, &[(PRODUCER_BYTE_RATE, Some(1 << 30))])
                .await,
            "alice raises her own quota"
        ),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    assert_eq!(
        refused(alice_admin.describe_quotas().await, "alice lists quotas"),
        Some(ErrorCode::ClusterAuthorizationFailed)
    );
    admin
        .alter_quotas(&alice_quota, &[(PRODUCER_BYTE_RATE, Some(1 << 30))])
        .await
        .expect("the super user sets a quota");
    assert_eq!(admin.describe_quotas().await.unwrap().len(), 1);
    admin
        .create_acls(vec![allow(&bob_p, DescribeConfigs, On::Cluster)])
        .await
        .unwrap();
    assert_eq!(bob_admin.describe_quotas().await.unwrap().len(), 1);
    admin
        .alter_quotas(&alice_quota, &[(PRODUCER_BYTE_RATE, None)])
        .await
        .unwrap();

    // Deny wins: every user may write "shared", but alice is denied.
    admin
        .create_acls(vec![
            allow("User:*", Write, On::Topic("shared")),
            deny(&alice_p, Write, On::Topic("shared")),
        ])
        .await
        .unwrap();
    produce_one(&bob, "shared", "from bob", false)
        .await
        .expect("User:* lets bob write shared");
    assert_eq!(
        refused(
            produce_one(&alice, "shared", "from alice", false).await,
            "alice writes shared"
        ),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(record_count(&admin, "shared").await, 1);

    // A prefixed binding: Write on "logs-" covers logs-a, not other.
    produce_one(&alice, "logs-a", "log line", true)
        .await
        .expect("alice writes logs-a");
    assert_eq!(
        refused(
            produce_one(&alice, "other", "from alice", true).await,
            "alice writes other"
        ),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(record_count(&admin, "other").await, 0);

    // 4. The internal topic: written by the broker alone, whoever asks.
    assert_eq!(
        refused(
            produce_one(&admin_client, "__consumer_offsets", "forged", false).await,
            "the super user writes __consumer_offsets"
        ),
        Some(ErrorCode::InvalidTopic)
    );
    admin
        .create_acls(vec![allow(
            &alice_p,
            Write,
            On::Topic("__consumer_offsets"),
        )])
        .await
        .unwrap();
    assert_eq!(
        refused(
            produce_one(&alice, "__consumer_offsets", "forged", false).await,
            "alice, allowed to, writes __consumer_offsets"
        ),
        Some(ErrorCode::InvalidTopic)
    );
    assert!(
        broker.metric("quiver_authorization_denials_total") > 0.0,
        "denials are counted"
    );
}

// ---- 5. Group membership ----

/// A member id belongs to the principal that joined with it (ARCHITECTURE.md; `group::state`):
/// another principal, though allowed in the group, cannot heartbeat, leave, rejoin or commit
/// as it (KIP-848's ConsumerGroupHeartbeat), nor take over its static instance id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_belongs_to_the_principal_that_joined_with_it() {
    use AclOperation::*;
    let broker = authorizing_broker().await;
    let admin_client = login(&broker, &ADMIN).await;
    let admin = Admin::new(admin_client.clone());
    admin.create_topic(NewTopic::new("jobs", 2)).await.unwrap();
    let mut acls = Vec::new();
    for who in [ALICE.principal(), BOB.principal()] {
        acls.push(allow(&who, Read, On::Topic("jobs")));
        acls.push(allow(&who, Read, On::Group("workers")));
    }
    admin.create_acls(acls).await.unwrap();
    produce_one(&admin_client, "jobs", "job-1", true)
        .await
        .unwrap();

    // alice joins as a static member and consumes.
    let alice = login(&broker, &ALICE).await;
    let mut alices = Consumer::new(
        alice.clone(),
        ConsumerConfig::default()
            .group_id("workers")
            .instance_id("alice-pod")
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false)
            .fetch_max_wait(Duration::from_millis(50)),
    );
    alices.subscribe(vec!["jobs".into()]).await.unwrap();
    assert_eq!(poll_records(&mut alices, 1).await.unwrap().len(), 1);
    let alice_member = alices.member_id().expect("alice is a member");
    let before = admin.describe_group("workers").await.unwrap();
    assert_eq!(before.members.len(), 1, "{before:?}");
    assert_eq!(before.members[0].member_id, alice_member);
    let epoch = before.members[0].member_epoch;

    // bob, allowed to read the group and the topic, speaks for alice's member.
    let bob = login(&broker, &BOB).await;
    let heartbeat = |member_id: &str, member_epoch: i32, instance_id: Option<&str>| {
        ConsumerGroupHeartbeatRequest {
            group_id: "workers".into(),
            member_id: member_id.into(),
            member_epoch,
            instance_id: instance_id.map(str::to_string),
            subscribed_topic_names: (member_epoch == 0).then(|| vec!["jobs".to_string()]),
            ..Default::default()
        }
    };
    // (what bob does, the request, the code he gets)
    let cases = [
        (
            "heartbeats",
            heartbeat(&alice_member, epoch, None),
            ErrorCode::UnknownMemberId,
        ),
        (
            "leaves",
            heartbeat(&alice_member, -1, None),
            ErrorCode::UnknownMemberId,
        ),
        (
            "rejoins",
            heartbeat(&alice_member, 0, None),
            ErrorCode::UnknownMemberId,
        ),
        (
            "takes over the static instance",
            heartbeat("bobs-own-member-id-0001", 0, Some("alice-pod")),
            ErrorCode::FencedInstanceId,
        ),
    ];
    for (what, req, want) in cases {
        let (resp, _) = bob.call_any(&req, vec![]).await.expect("answered");
        assert_eq!(
            resp.error_code, want,
            "bob {what} as alice's member: {resp:?}"
        );
    }
    let commit = OffsetCommitRequest {
        group_id: "workers".into(),
        generation_id_or_member_epoch: epoch,
        member_id: alice_member.clone(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            name: "jobs".into(),
            partitions: vec![OffsetCommitPartition {
                partition: PartitionId(0),
                committed_offset: Offset(0),
                committed_leader_epoch: None,
                committed_metadata: None,
            }],
        }],
    };
    let (resp, _) = bob.call_any(&commit, vec![]).await.unwrap();
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        ErrorCode::UnknownMemberId,
        "bob commits as alice's member"
    );
    let fetch = OffsetFetchRequest {
        group_id: "workers".into(),
        member_id: Some(alice_member.clone()),
        member_epoch: epoch,
        topics: None,
        require_stable: false,
    };
    let (resp, _) = bob.call_any(&fetch, vec![]).await.unwrap();
    assert_eq!(
        resp.error_code,
        ErrorCode::UnknownMemberId,
        "bob fetches offsets as alice's member"
    );

    // alice's member is untouched: still the group's only member, still served.
    let after = admin.describe_group("workers").await.unwrap();
    let ids: Vec<&str> = after.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(ids, [alice_member.as_str()], "{after:?}");
    assert_eq!(after.members[0].instance_id.as_deref(), Some("alice-pod"));
    produce_one(&admin_client, "jobs", "job-2", true)
        .await
        .unwrap();
    assert_eq!(poll_records(&mut alices, 1).await.unwrap().len(), 1);
    tokio::time::timeout(WAIT_MAX, alices.commit())
        .await
        .expect("answered")
        .expect("alice commits as her member");
    assert_eq!(alices.member_id(), Some(alice_member.clone()));

    // bob's refusals were about whose member it is: his own member joins.
    let (resp, _) = bob
        .call_any(&heartbeat("bobs-own-member-id-0002", 0, None), vec![])
        .await
        .unwrap();
    assert_eq!(resp.error_code, ErrorCode::None, "{resp:?}");
    let _ = tokio::time::timeout(WAIT_MAX, alices.close()).await;
}

// ---- 6. Principals from client certificates ----

/// Writes a client certificate for `common_name` signed by the development CA in `ca_dir`
/// (`<data_dir>/tls`); returns the TLS settings that present it and trust `trusted_ca`.
fn client_tls(
    ca_dir: &std::path::Path,
    common_name: &str,
    trusted_ca: &std::path::Path,
    out_dir: &std::path::Path,
) -> ClientTls {
    let certs = quiver_net::tls::DevCerts {
        ca_cert: ca_dir.join("ca.pem"),
        ca_key: ca_dir.join("ca.key"),
        server_cert: ca_dir.join("server.pem"),
        server_key: ca_dir.join("server.key"),
    };
    let (cert, key) =
        quiver_net::tls::issue_dev_client_cert(&certs, common_name).expect("a client certificate");
    let stem = common_name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let (cert_path, key_path) = (
        out_dir.join(format!("{stem}.pem")),
        out_dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    ClientTls::from_ca_file(trusted_ca)
        .unwrap()
        .with_client_cert(&cert_path, &key_path)
        .unwrap()
}

async fn connect_with(broker: &Broker, tls: ClientTls) -> Result<Client, Error> {
    let config = ClientConfig::new(broker.addr.to_string())
        .tls(tls)
        .request_timeout(Duration::from_secs(10));
    tokio::time::timeout(WAIT_MAX, Client::connect(config))
        .await
        .expect("a connection is answered in time")
}

/// Mutual TLS (`tls_client_ca`): a certificate's common name is the principal, through the
/// mapping rules (KIP-371: `RULE:...` then `DEFAULT`); the authorizer judges it like any other.
/// A certificate from another CA, or none, does not get a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_principal() {
    use AclOperation::*;
    // The first start makes the development CA; the second requires certificates it signed.
    let mut broker = Broker::start(&[]);
    broker.terminate().expect("streamd was running");
    let ca_dir = broker.data_dir().join("tls");
    let ca = ca_dir.join("ca.pem");
    broker.args = [
        "--tls-client-ca",
        ca.to_str().unwrap(),
        "--authorizer",
        "true",
        "--super-users",
        "User:admin",
        "--ssl-principal-mapping-rules",
        r"RULE:^CN=([A-Za-z]+)@example\.com$/$1/L,DEFAULT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    broker.restart();
    let certs_dir = tempfile::tempdir().unwrap();
    let out = certs_dir.path();

    let admin_client = connect_with(&broker, client_tls(&ca_dir, "admin", &ca, out))
        .await
        .expect("the admin's certificate is accepted");
    let admin = Admin::new(admin_client.clone());
    for t in ["carol-topic", "dave-topic", "other-topic"] {
        admin.create_topic(NewTopic::new(t, 1)).await.unwrap();
    }
    admin
        .create_acls(vec![
            allow("User:carol", Write, On::Topic("carol-topic")),
            allow("User:dave", Write, On::Topic("dave-topic")),
        ])
        .await
        .unwrap();

    // DEFAULT: the common name.
    let carol = connect_with(&broker, client_tls(&ca_dir, "carol", &ca, out))
        .await
        .expect("carol's certificate is accepted");
    produce_one(&carol, "carol-topic", "from carol", true)
        .await
        .expect("carol writes her topic");
    assert_eq!(
        refused(
            produce_one(&carol, "other-topic", "from carol", true).await,
            "carol writes another topic"
        ),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    // The rule: "CN=Dave@example.com" is User:dave.
    let dave = connect_with(&broker, client_tls(&ca_dir, "Dave@example.com", &ca, out))
        .await
        .expect("dave's certificate is accepted");
    produce_one(&dave, "dave-topic", "from dave", true)
        .await
        .expect("the mapped principal writes its topic");
    assert_eq!(
        refused(
            produce_one(&dave, "carol-topic", "from dave", true).await,
            "dave writes carol's topic"
        ),
        Some(ErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(record_count(&admin, "carol-topic").await, 1);
    assert_eq!(record_count(&admin, "dave-topic").await, 1);
    assert_eq!(record_count(&admin, "other-topic").await, 0);

    // A certificate for "carol" from another CA, and no certificate: no connection.
    let elsewhere = tempfile::tempdir().unwrap();
    let other_ca = quiver_net::tls::ensure_dev_certs(elsewhere.path()).unwrap();
    let forged = client_tls(
        other_ca.ca_cert.parent().unwrap(),
        "carol",
        &ca,
        elsewhere.path(),
    );
    let e = error_of(
        connect_with(&broker, forged).await,
        "a certificate from another CA",
    );
    eprintln!("another CA's certificate: {e}");
    assert!(
        matches!(e.transport(), Some(TransportError::Tls(_))),
        "refused in the TLS handshake: {e}"
    );
    let none = ClientTls::from_ca_file(&ca).unwrap();
    let e = error_of(
        connect_with(&broker, none).await,
        "a client without a certificate",
    );
    eprintln!("no certificate: {e}");
    assert!(
        matches!(e.transport(), Some(TransportError::Tls(_))),
        "refused in the TLS handshake: {e}"
    );
}
