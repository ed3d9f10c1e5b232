//! [`ClientConfig`]: how to reach and trust a cluster, and who to log in as, built in code,
//! from the environment (`QUIVER_*`), or from Kafka-style properties (`bootstrap.servers`,
//! `ssl.ca.location`, `sasl.username`, ...).

use std::fmt;
use std::time::Duration;

use quiver_proto::scram::Mechanism;

#[cfg(doc)]
use super::Client;
use crate::error::{Error, Result};
use crate::transport::{ClientTls, ConnectOptions};

/// The bootstrap server [`ClientConfig::from_env`] uses without `QUIVER_BOOTSTRAP`.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// How to reach and trust a cluster.
///
/// Three ways to make one:
/// - in code: [`ClientConfig::new`] with the bootstrap servers, then [`ClientConfig::tls`];
/// - from the environment: [`ClientConfig::from_env`] (`QUIVER_BOOTSTRAP`, `QUIVER_CA_FILE`,
///   ...), for programs that run in many places;
/// - from a configuration file's key/value pairs: [`ClientConfig::from_properties`], with the
///   keys Kafka clients use (`bootstrap.servers`, `ssl.ca.location`, ...).
///
/// Without a CA the client trusts the development CA at `./data/tls/ca.pem`, relative to the
/// working directory: that works only when the program runs in the directory `streamd` was
/// started in. Anywhere else, name the CA file.
///
/// ```no_run
/// # async fn f() -> quiver_client::Result<()> {
/// use quiver_client::{Client, ClientConfig, ClientTls};
/// let config = ClientConfig::new("127.0.0.1:9092").tls(ClientTls::from_ca_file("data/tls/ca.pem")?);
/// let client = Client::connect(config).await?;
/// println!("{} topics", client.cluster().topics.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers; the first that answers bootstraps the client.
    pub bootstrap: Vec<String>,
    /// What to trust; `None` uses the development CA at `./data/tls/ca.pem`.
    pub tls: Option<ClientTls>,
    /// Connection limits and timeouts.
    pub connect: ConnectOptions,
    /// Sent in the handshake, for the broker's logs.
    pub client_id: String,
    /// Who to authenticate as (SASL SCRAM) on every connection; `None`: no authentication,
    /// for brokers that do not require it.
    pub sasl: Option<SaslCredentials>,
}

/// A SASL SCRAM user and password, and the mechanism to use. `Debug` does not show the
/// password.
///
/// ```
/// use quiver_client::{SaslCredentials, ScramMechanism};
/// let c = SaslCredentials::new("alice", "s3cret").mechanism(ScramMechanism::Sha256);
/// assert!(!format!("{c:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// SCRAM-SHA-512 (the default) or SCRAM-SHA-256: the broker must enable it, and hold a
    /// credential of that mechanism for the user.
    pub mechanism: Mechanism,
    /// The user name.
    pub user: String,
    /// The password; it never leaves the client (SCRAM proves it without sending it).
    pub password: String,
}

impl SaslCredentials {
    /// The mechanism [`SaslCredentials::new`] chooses.
    pub const DEFAULT_MECHANISM: Mechanism = Mechanism::Sha512;

    /// `user` and `password` with SCRAM-SHA-512.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> SaslCredentials {
        SaslCredentials {
            mechanism: Self::DEFAULT_MECHANISM,
            user: user.into(),
            password: password.into(),
        }
    }

    /// Uses `mechanism` instead of SCRAM-SHA-512.
    pub fn mechanism(mut self, mechanism: Mechanism) -> SaslCredentials {
        self.mechanism = mechanism;
        self
    }
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism.name())
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A mechanism by its SASL name, any case (`SCRAM-SHA-512`, `scram-sha-256`); the error
/// names the ones there are. For `sasl.mechanism` and the tools' `--sasl-mechanism`.
///
/// ```
/// use quiver_client::{client::parse_mechanism, ScramMechanism};
/// assert_eq!(parse_mechanism("scram-sha-256"), Ok(ScramMechanism::Sha256));
/// assert!(parse_mechanism("PLAIN").unwrap_err().contains("SCRAM-SHA-512"));
/// ```
pub fn parse_mechanism(name: &str) -> std::result::Result<Mechanism, String> {
    Mechanism::from_name(&name.trim().to_ascii_uppercase()).ok_or_else(|| {
        let known: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
        format!(
            "SASL mechanism '{name}' is not supported; use {}",
            known.join(" or ")
        )
    })
}

/// The environment variables [`ClientConfig::from_env`] reads, and the property each stands
/// for.
const ENV: &[(&str, &str)] = &[
    ("QUIVER_BOOTSTRAP", "bootstrap.servers"),
    ("QUIVER_CA_FILE", "ssl.ca.location"),
    ("QUIVER_CLIENT_CERT", "ssl.certificate.location"),
    ("QUIVER_CLIENT_KEY", "ssl.key.location"),
    ("QUIVER_REQUEST_TIMEOUT_MS", "request.timeout.ms"),
    ("QUIVER_CLIENT_ID", "client.id"),
    ("QUIVER_SASL_USERNAME", "sasl.username"),
    ("QUIVER_SASL_PASSWORD", "sasl.password"),
    ("QUIVER_SASL_MECHANISM", "sasl.mechanism"),
];

/// The keys [`ClientConfig::from_properties`] knows.
const PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "request.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "client.id",
    "sasl.username",
    "sasl.password",
    "sasl.mechanism",
    "sasl.mechanisms",
];

/// Settings read from the environment or properties, before the files they name are read.
#[derive(Default)]
struct Settings {
    bootstrap: Option<String>,
    ca: Option<(String, String)>,
    cert: Option<(String, String)>,
    key: Option<(String, String)>,
    request_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    client_id: Option<String>,
    /// Each with the variable or key it came from, for errors.
    sasl_user: Option<(String, String)>,
    sasl_password: Option<(String, String)>,
    sasl_mechanism: Option<(Mechanism, String)>,
}

impl Settings {
    /// Takes one property; `source` is what the error names (the property key, or the
    /// environment variable it came from).
    fn set(&mut self, key: &str, value: &str, source: &str) -> Result<()> {
        let millis = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    Error::Config(format!("{source}: '{v}' is not a number of milliseconds"))
                })
        };
        let owned = || (value.to_string(), source.to_string());
        match key {
            "bootstrap.servers" => self.bootstrap = Some(value.to_string()),
            "ssl.ca.location" => self.ca = Some(owned()),
            "ssl.certificate.location" => self.cert = Some(owned()),
            "ssl.key.location" => self.key = Some(owned()),
            "request.timeout.ms" => self.request_timeout = Some(millis(value)?),
            "socket.connection.setup.timeout.ms" => self.connect_timeout = Some(millis(value)?),
            "client.id" => self.client_id = Some(value.to_string()),
            "sasl.username" => self.sasl_user = Some(owned()),
            // Not trimmed beyond what the caller did: a password is taken as it is given.
            "sasl.password" => self.sasl_password = Some(owned()),
            // librdkafka's name is `sasl.mechanisms`; Java clients' is `sasl.mechanism`.
            "sasl.mechanism" | "sasl.mechanisms" => {
                let m =
                    parse_mechanism(value).map_err(|e| Error::Config(format!("{source}: {e}")))?;
                self.sasl_mechanism = Some((m, source.to_string()));
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown client property '{other}'; known: {}",
                    PROPERTIES.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// The configuration, with the CA and client certificate files read.
    fn build(self) -> Result<ClientConfig> {
        let mut config = ClientConfig::new(self.bootstrap.as_deref().unwrap_or(DEFAULT_BOOTSTRAP));
        if config.bootstrap.is_empty() {
            return Err(Error::Config("no bootstrap server given".into()));
        }
        let file_error =
            |source: &str, e: crate::TransportError| Error::Config(format!("{source}: {}", e));
        let tls = match &self.ca {
            Some((path, source)) => {
                Some(ClientTls::from_ca_file(path).map_err(|e| file_error(source, e))?)
            }
            None => None,
        };
        let tls = match (self.cert, self.key) {
            (None, None) => tls,
            (Some((cert, source)), Some((key, _))) => {
                let base = match tls {
                    Some(t) => t,
                    None => ClientTls::dev_default().map_err(|e| file_error(&source, e))?,
                };
                Some(
                    base.with_client_cert(&cert, &key)
                        .map_err(|e| file_error(&source, e))?,
                )
            }
            (Some((_, source)), None) | (None, Some((_, source))) => {
                return Err(Error::Config(format!(
                    "{source} is set without its pair: a client certificate needs both the \
                     certificate chain and the key"
                )))
            }
        };
        config.tls = tls;
        if let Some(t) = self.request_timeout {
            config.connect.call_timeout = t;
        }
        if let Some(t) = self.connect_timeout {
            config.connect.connect_timeout = t;
        }
        if let Some(id) = self.client_id {
            config.client_id = id;
        }
        config.sasl = match (self.sasl_user, self.sasl_password) {
            (Some((user, _)), Some((password, _))) => {
                let mechanism = self
                    .sasl_mechanism
                    .map_or(SaslCredentials::DEFAULT_MECHANISM, |(m, _)| m);
                Some(SaslCredentials::new(user, password).mechanism(mechanism))
            }
            (Some((_, source)), None) => {
                return Err(Error::Config(format!(
                    "{source} is set without a password: give the user's password too \
                     (QUIVER_SASL_PASSWORD, or the property sasl.password)"
                )))
            }
            (None, Some((_, source))) => {
                return Err(Error::Config(format!(
                    "{source} is set without a user name: give the user too \
                     (QUIVER_SASL_USERNAME, or the property sasl.username)"
                )))
            }
            (None, None) => {
                if let Some((_, source)) = self.sasl_mechanism {
                    return Err(Error::Config(format!(
                        "{source} is set without a user name and password \
                         (QUIVER_SASL_USERNAME and QUIVER_SASL_PASSWORD, or the properties \
                         sasl.username and sasl.password)"
                    )));
                }
                None
            }
        };
        Ok(config)
    }
}

impl ClientConfig {
    /// Bootstrap servers, comma-separated (`"host1:9092,host2:9092"`).
    pub fn new(bootstrap: impl AsRef<str>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .as_ref()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            tls: None,
            connect: ConnectOptions::default(),
            client_id: format!("quiver-rust/{}", env!("CARGO_PKG_VERSION")),
            sasl: None,
        }
    }

    /// The configuration the environment gives:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `QUIVER_BOOTSTRAP` | bootstrap servers, comma-separated | `127.0.0.1:9092` |
    /// | `QUIVER_CA_FILE` | the CA (PEM) to trust | `./data/tls/ca.pem` |
    /// | `QUIVER_CLIENT_CERT`, `QUIVER_CLIENT_KEY` | a client certificate chain and key (PEM), for brokers that require mutual TLS | none |
    /// | `QUIVER_REQUEST_TIMEOUT_MS` | how long one request may take | 30000 |
    /// | `QUIVER_CLIENT_ID` | the id the broker logs | `quiver-rust/<version>` |
    /// | `QUIVER_SASL_USERNAME`, `QUIVER_SASL_PASSWORD` | a SASL SCRAM user and password, for brokers that require authentication | none |
    /// | `QUIVER_SASL_MECHANISM` | `SCRAM-SHA-512` or `SCRAM-SHA-256` | `SCRAM-SHA-512` |
    ///
    /// Files are read now: an unreadable CA fails here, naming the variable. An empty variable
    /// counts as unset.
    ///
    /// ```no_run
    /// # async fn f() -> quiver_client::Result<()> {
    /// // QUIVER_BOOTSTRAP=broker-1:9092 QUIVER_CA_FILE=/etc/quiver/ca.pem ./my-app
    /// let client = quiver_client::Client::connect(quiver_client::ClientConfig::from_env()?).await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn from_env() -> Result<ClientConfig> {
        ClientConfig::from_env_with(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the variables read through `lookup` instead of the
    /// process environment (tests, or settings kept elsewhere).
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// let config = ClientConfig::from_env_with(|name| match name {
    ///     "QUIVER_BOOTSTRAP" => Some("broker-1:9092,broker-2:9092".into()),
    ///     "QUIVER_REQUEST_TIMEOUT_MS" => Some("5000".into()),
    ///     _ => None,
    /// })
    /// .unwrap();
    /// assert_eq!(config.bootstrap, ["broker-1:9092", "broker-2:9092"]);
    /// assert_eq!(config.connect.call_timeout, std::time::Duration::from_secs(5));
    /// ```
    pub fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Result<ClientConfig> {
        let mut settings = Settings::default();
        for (name, key) in ENV {
            if let Some(value) = lookup(name).filter(|v| !v.trim().is_empty()) {
                settings.set(key, &value, name)?;
            }
        }
        settings.build()
    }

    /// The configuration these key/value pairs give, with the keys Kafka clients (and
    /// librdkafka) use, as read from a configuration file:
    ///
    /// | key | meaning |
    /// |---|---|
    /// | `bootstrap.servers` | bootstrap servers, comma-separated (default `127.0.0.1:9092`) |
    /// | `ssl.ca.location` | the CA (PEM) to trust (default `./data/tls/ca.pem`) |
    /// | `ssl.certificate.location`, `ssl.key.location` | a client certificate chain and key (PEM) |
    /// | `request.timeout.ms` | how long one request may take |
    /// | `socket.connection.setup.timeout.ms` | how long a connection's handshake may take |
    /// | `client.id` | the id the broker logs |
    /// | `sasl.username`, `sasl.password` | a SASL SCRAM user and password |
    /// | `sasl.mechanism` (or librdkafka's `sasl.mechanisms`) | `SCRAM-SHA-512` (default) or `SCRAM-SHA-256` |
    ///
    /// An unknown key is an error naming it (a misspelt setting is never silently ignored).
    /// Files are read now.
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// let config = ClientConfig::from_properties([
    ///     ("bootstrap.servers", "broker-1:9092"),
    ///     ("client.id", "billing"),
    /// ])
    /// .unwrap();
    /// assert_eq!(config.client_id, "billing");
    /// let err = ClientConfig::from_properties([("bootstrap.server", "x:1")]).unwrap_err();
    /// assert!(err.to_string().contains("'bootstrap.server'"));
    /// ```
    pub fn from_properties<K, V>(
        properties: impl IntoIterator<Item = (K, V)>,
    ) -> Result<ClientConfig>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut settings = Settings::default();
        for (key, value) in properties {
            let key = key.as_ref().trim();
            settings.set(key, value.as_ref().trim(), key)?;
        }
        settings.build()
    }

    /// Trusts (and presents) what `tls` says instead of the development CA.
    pub fn tls(mut self, tls: ClientTls) -> ClientConfig {
        self.tls = Some(tls);
        self
    }

    /// How long one request may take, from sending to the whole answer.
    pub fn request_timeout(mut self, t: Duration) -> ClientConfig {
        self.connect.call_timeout = t;
        self
    }

    /// How long a connection's handshake may take.
    pub fn connect_timeout(mut self, t: Duration) -> ClientConfig {
        self.connect.connect_timeout = t;
        self
    }

    /// The id sent in the handshake, for the broker's logs.
    pub fn client_id(mut self, id: impl Into<String>) -> ClientConfig {
        self.client_id = id.into();
        self
    }

    /// Authenticates every connection as `user` with SCRAM-SHA-512; see
    /// [`sasl_credentials`](Self::sasl_credentials) for SCRAM-SHA-256.
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// let config = ClientConfig::new("broker-1:9092").sasl("alice", "s3cret");
    /// assert_eq!(config.sasl.unwrap().user, "alice");
    /// ```
    pub fn sasl(self, user: impl Into<String>, password: impl Into<String>) -> ClientConfig {
        self.sasl_credentials(SaslCredentials::new(user, password))
    }

    /// Authenticates every connection with these credentials.
    ///
    /// ```
    /// use quiver_client::{ClientConfig, SaslCredentials, ScramMechanism};
    /// let config = ClientConfig::new("broker-1:9092")
    ///     .sasl_credentials(SaslCredentials::new("alice", "s3cret").mechanism(ScramMechanism::Sha256));
    /// # let _ = config;
    /// ```
    pub fn sasl_credentials(mut self, credentials: SaslCredentials) -> ClientConfig {
        self.sasl = Some(credentials);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<ClientConfig> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ClientConfig::from_env_with(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn an_empty_environment_means_the_local_default() {
        let c = env(&[]).unwrap();
        assert_eq!(c.bootstrap, [DEFAULT_BOOTSTRAP]);
        assert!(
            c.tls.is_none(),
            "the development CA is looked for at connect"
        );
        let c = env(&[("QUIVER_BOOTSTRAP", "  "), ("QUIVER_CA_FILE", "")]).unwrap();
        assert_eq!(c.bootstrap, [DEFAULT_BOOTSTRAP], "empty counts as unset");
        assert!(c.tls.is_none());
    }

    #[test]
    fn errors_name_the_variable_or_key_they_come_from() {
        let err = env(&[("QUIVER_CA_FILE", "/nonexistent/ca.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("QUIVER_CA_FILE"), "{err}");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = env(&[("QUIVER_REQUEST_TIMEOUT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("QUIVER_REQUEST_TIMEOUT_MS"), "{err}");
        let err = ClientConfig::from_properties([("ssl.ca.location", "/nonexistent/ca.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssl.ca.location"), "{err}");
        let err = ClientConfig::from_properties([("security.protocol", "SASL_SSL")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'security.protocol'"), "{err}");
        assert!(
            err.contains("bootstrap.servers"),
            "lists the known keys: {err}"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let err = env(&[("QUIVER_CLIENT_CERT", "/tmp/c.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("QUIVER_CLIENT_CERT"), "{err}");
        assert!(err.contains("without its pair"), "{err}");
        let err = ClientConfig::from_properties([("ssl.key.location", "/tmp/k.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssl.key.location"), "{err}");
    }

    #[test]
    fn properties_set_timeouts_and_the_id() {
        let c = ClientConfig::from_properties(vec![
            ("bootstrap.servers".to_string(), "a:1, b:2".to_string()),
            ("request.timeout.ms".to_string(), "1500".to_string()),
            (
                "socket.connection.setup.timeout.ms".to_string(),
                "700".to_string(),
            ),
            ("client.id".to_string(), "billing".to_string()),
        ])
        .unwrap();
        assert_eq!(c.bootstrap, ["a:1", "b:2"]);
        assert_eq!(c.connect.call_timeout, Duration::from_millis(1500));
        assert_eq!(c.connect.connect_timeout, Duration::from_millis(700));
        assert_eq!(c.client_id, "billing");
        assert!(ClientConfig::from_properties([("bootstrap.servers", " , ")]).is_err());
    }

    #[test]
    fn sasl_credentials_come_from_the_environment_or_properties() {
        let c = env(&[
            ("QUIVER_SASL_USERNAME", "alice"),
            ("QUIVER_SASL_PASSWORD", "s3cret"),
        ])
        .unwrap();
        let sasl = c.sasl.unwrap();
        assert_eq!(
            (sasl.user.as_str(), sasl.password.as_str(), sasl.mechanism),
            ("alice", "s3cret", Mechanism::Sha512)
        );
        let c = ClientConfig::from_properties([
            ("sasl.username", "bob"),
            ("sasl.password", "pw"),
            ("sasl.mechanism", "scram-sha-256"),
        ])
        .unwrap();
        assert_eq!(c.sasl.unwrap().mechanism, Mechanism::Sha256);
        let c = ClientConfig::from_properties([
            ("sasl.username", "bob"),
            ("sasl.password", "pw"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
        ])
        .unwrap();
        assert_eq!(c.sasl.unwrap().mechanism, Mechanism::Sha512);
        assert!(env(&[]).unwrap().sasl.is_none());
    }

    #[test]
    fn sasl_errors_name_what_is_missing_or_wrong() {
        // (settings, what the error must say)
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars, &[&str])] = &[
            (
                &[("QUIVER_SASL_USERNAME", "alice")],
                &["QUIVER_SASL_USERNAME", "without a password"],
            ),
            (
                &[("QUIVER_SASL_PASSWORD", "pw")],
                &["QUIVER_SASL_PASSWORD", "without a user name"],
            ),
            (
                &[("QUIVER_SASL_MECHANISM", "SCRAM-SHA-256")],
                &["QUIVER_SASL_MECHANISM", "without a user name and password"],
            ),
            (
                &[
                    ("QUIVER_SASL_USERNAME", "alice"),
                    ("QUIVER_SASL_PASSWORD", "pw"),
                    ("QUIVER_SASL_MECHANISM", "PLAIN"),
                ],
                &[
                    "QUIVER_SASL_MECHANISM",
                    "'PLAIN'",
                    "SCRAM-SHA-256 or SCRAM-SHA-512",
                ],
            ),
        ];
        for (vars, wanted) in cases {
            let err = env(vars).unwrap_err().to_string();
            for w in *wanted {
                assert!(err.contains(w), "{vars:?}: {err}");
            }
        }
        let err = ClientConfig::from_properties([("sasl.username", "alice")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sasl.username"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = ClientConfig::new("a:1").sasl("alice", "hunter2");
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
