//! TLS for the transport: rustls (aws-lc-rs) configurations for the server side, for dial-out, and the
//! development CA that makes the out-of-the-box local setup work without turning verification off.
//!
//! Trust model (also in ARCHITECTURE.md): a client trusts exactly the CA files it is given. With
//! nothing given, the SDK and `streamctl` look for the development CA at `./data/tls/ca.pem`
//! (streamd's default data directory is `./data` in its working directory) and otherwise fail with
//! a message asking for a CA file. There is no switch that skips verification.
//!
//! Development certificates (`ensure_dev_certs`), created once on first start and reused after:
//!
//! ```text
//! <data_dir>/tls/ca.pem       development CA certificate (give this to clients)
//! <data_dir>/tls/ca.key       its private key (0600)
//! <data_dir>/tls/server.pem   server certificate signed by the CA; SANs: localhost, 127.0.0.1,
//!                             ::1, this machine's hostname, and the broker's listen address and
//!                             advertised host (reissued by the same CA when those change)
//! <data_dir>/tls/server.key   its private key (0600)
//! ```

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore,
};

/// ALPN protocol name (`quiver_proto::wire`).
pub use quiver_proto::wire::ALPN_QUIVER_V1;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no {what} found in the PEM file")]
    Empty { path: PathBuf, what: &'static str },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error(
        "{dir}: development TLS files are incomplete ({missing} is missing); delete the directory \
         to have them created again, or configure certificate and key files"
    )]
    IncompleteDevDir { dir: PathBuf, missing: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(path))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(io_err(path))?
        .ok_or_else(|| TlsError::Empty {
            path: path.to_owned(),
            what: "private key",
        })
}

/// A root store holding every certificate of the given CA files.
pub fn load_roots(ca_files: &[PathBuf]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for path in ca_files {
        for cert in load_certs(path)? {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

/// aws-lc-rs's cipher suites with AES-128-GCM first. Rationale: the provider lists AES-256-GCM
/// first, and every QUIC packet is sealed and opened with the suite agreed; AES-128 does 10
/// rounds per block instead of 14 (ring sealed 9 GB/s against 7 here) and is TLS 1.3's mandatory
/// suite (QUIC's Initial packets use it too). The server picks in this order, whatever the
/// client's order. Why aws-lc-rs and not ring: its AVX-512 AES-GCM seals 64 KB packets at 12.8
/// GB/s where ring's AVX2 code does 8.9 on this machine's CPU (bench/RESULTS.md).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// Where the server's certificate comes from.
#[derive(Clone, Debug)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// With a client CA file, mutual TLS is on: every client must present a certificate that
    /// chains to one of these CAs, or the handshake fails.
    pub client_ca: Option<PathBuf>,
    /// The CA of the other brokers of a cluster: a client may present a certificate it signed
    /// (a broker proving who it is), and one that presents none is still served; the names of
    /// a presented certificate reach requests (`PeerIdentity`). With `client_ca` too, both CAs
    /// are trusted and a certificate is required.
    pub peer_ca: Option<PathBuf>,
}

/// Builds the rustls server configuration (TLS 1.3 only, as QUIC requires; ALPN `quiver/1`).
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certs(&files.cert_chain)?;
    let key = load_key(&files.key)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let cas: Vec<PathBuf> = files
        .client_ca
        .iter()
        .chain(files.peer_ca.iter())
        .cloned()
        .collect();
    let builder = if cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let roots = load_roots(&cas)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if files.client_ca.is_some() {
            verifier.build()?
        } else {
            verifier.allow_unauthenticated().build()?
        };
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_QUIVER_V1.to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// What a dialing endpoint trusts and, for mutual TLS, presents.
#[derive(Clone, Debug)]
pub struct ClientTlsFiles {
    /// The CA files whose certificates are trusted to sign servers' certificates.
    pub ca_files: Vec<PathBuf>,
    /// Certificate chain and key presented to servers that require client certificates.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Builds the rustls client configuration used for dial-out (broker to broker).
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = load_roots(&files.ca_files)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match &files.identity {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_QUIVER_V1.to_vec()];
    Ok(Arc::new(config))
}

/// The development certificate files under `<data_dir>/tls`.
#[derive(Clone, Debug)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevCerts {
    fn at(dir: &Path) -> Self {
        DevCerts {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    /// The server files, without mutual TLS.
    pub fn server_files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert_chain: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: None,
            peer_ca: None,
        }
    }

    /// Client files that trust the development CA.
    pub fn client_files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca_files: vec![self.ca_cert.clone()],
            identity: None,
        }
    }
}

const DEV_CA_COMMON_NAME: &str = "Quiver development CA";

/// Creates the development CA and a server certificate signed by it under `<data_dir>/tls` on
/// first start, and reuses them on later starts. Call it once per process before the shards bind
/// (it is not safe against two processes creating the same directory at the same instant).
/// Same as [`ensure_dev_certs_for`] with no names beyond the defaults.
///
/// Rationale for a CA rather than one self-signed server certificate: clients keep trusting the
/// same `ca.pem` when the server certificate is reissued, and the same CA can sign client
/// certificates for mutual TLS in development.
pub fn ensure_dev_certs(data_dir: &Path) -> Result<DevCerts, TlsError> {
    ensure_dev_certs_for(data_dir, &[])
}

/// [`ensure_dev_certs`], with a server certificate that also names `names` (the addresses and
/// host names clients will dial: the broker's listen address and advertised host). The default
/// names are `localhost`, `127.0.0.1`, `::1` and this machine's host name.
///
/// When the certificate on disk does not name one of them (the broker was started with another
/// `--listen` or `--advertised-host`), or does not match its key, a new server certificate is
/// issued by the same development CA, naming the old DNS names, the defaults and `names`; the CA
/// is never replaced, so clients that trust `ca.pem` keep working.
pub fn ensure_dev_certs_for(data_dir: &Path, names: &[String]) -> Result<DevCerts, TlsError> {
    let dir = data_dir.join("tls");
    let files = DevCerts::at(&dir);
    let present = [
        (&files.ca_cert, "ca.pem"),
        (&files.ca_key, "ca.key"),
        (&files.server_cert, "server.pem"),
        (&files.server_key, "server.key"),
    ];
    let count = present.iter().filter(|(p, _)| p.exists()).count();
    if count == present.len() {
        let missing = names_missing_from(&files, names);
        if missing.is_empty()
            && server_config(&files.server_files()).is_ok()
            && !due_for_reissue(&files.server_cert)
        {
            return Ok(files);
        }
        let ca_key_pem = fs::read_to_string(&files.ca_key).map_err(io_err(&files.ca_key))?;
        let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)?;
        let ca = dev_ca_params().self_signed(&ca_key)?;
        let mut all = dev_server_names(names);
        if let Some(old) = load_certs(&files.server_cert)
            .ok()
            .and_then(|c| c.first().and_then(PeerIdentity::from_cert))
        {
            for n in old.dns_names {
                if !all.contains(&n) {
                    all.push(n);
                }
            }
        }
        write_server_cert(&files, &ca, &ca_key, all)?;
        tracing::info!(
            dir = %dir.display(),
            added = %missing.join(", "),
            "reissued the development server certificate from the same CA to name the addresses clients dial"
        );
        return Ok(files);
    }
    if count != 0 {
        let missing = present
            .iter()
            .find(|(p, _)| !p.exists())
            .expect("one is missing")
            .1;
        return Err(TlsError::IncompleteDevDir { dir, missing });
    }
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;

    let ca_key = rcgen::KeyPair::generate()?;
    let ca = dev_ca_params().self_signed(&ca_key)?;

    // Keys first and the CA certificate last: a crash in between leaves an incomplete directory,
    // which the next start reports instead of silently trusting half a setup.
    write_atomic(&files.ca_key, ca_key.serialize_pem().as_bytes(), 0o600)?;
    write_server_cert(&files, &ca, &ca_key, dev_server_names(names))?;
    write_atomic(&files.ca_cert, ca.pem().as_bytes(), 0o644)?;
    tracing::info!(dir = %dir.display(), "created development CA and server certificate");
    Ok(files)
}

/// [`ensure_dev_certs_for`] with the development CA in `ca_dir`, shared by the brokers of one
/// cluster on one machine (a local cluster), and this broker's server certificate in
/// `<data_dir>/tls`. The CA is created in `ca_dir` if it is not there (under a lock, so brokers
/// starting at once make one CA); the server certificate is issued afresh from it on every
/// start, so it is always the shared CA's and names `names`.
pub fn ensure_dev_certs_shared(
    data_dir: &Path,
    ca_dir: &Path,
    names: &[String],
) -> Result<DevCerts, TlsError> {
    let ca_files = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    // A CA that is all there may sit in a read-only directory (a mounted secret): no lock is
    // needed to read it. Otherwise brokers starting at once take a lock so one of them makes it.
    let lock = if ca_files.0.exists() && ca_files.1.exists() {
        None
    } else {
        fs::create_dir_all(ca_dir).map_err(io_err(ca_dir))?;
        let lock_path = ca_dir.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        Some(lock)
    };
    let server_dir = data_dir.join("tls");
    fs::create_dir_all(&server_dir).map_err(io_err(&server_dir))?;
    let files = DevCerts {
        ca_cert: ca_files.0,
        ca_key: ca_files.1,
        server_cert: server_dir.join("server.pem"),
        server_key: server_dir.join("server.key"),
    };
    let (ca, ca_key) = match (files.ca_cert.exists(), files.ca_key.exists()) {
        (true, true) => {
            let pem = fs::read_to_string(&files.ca_key).map_err(io_err(&files.ca_key))?;
            let key = rcgen::KeyPair::from_pem(&pem)?;
            (dev_ca_params().self_signed(&key)?, key)
        }
        (false, false) => {
            let key = rcgen::KeyPair::generate()?;
            let ca = dev_ca_params().self_signed(&key)?;
            write_atomic(&files.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&files.ca_cert, ca.pem().as_bytes(), 0o644)?;
            tracing::info!(dir = %ca_dir.display(), "created the shared development CA");
            (ca, key)
        }
        (cert, _) => {
            return Err(TlsError::IncompleteDevDir {
                dir: ca_dir.to_path_buf(),
                missing: if cert { "ca.key" } else { "ca.pem" },
            })
        }
    };
    write_server_cert(&files, &ca, &ca_key, dev_server_names(names))?;
    drop(lock);
    Ok(files)
}

/// The default names of a development server certificate, then `extra` (each once; empty and
/// unspecified addresses such as `0.0.0.0` left out).
fn dev_server_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = hostname();
    for n in host.iter().chain(extra) {
        let unspecified = n
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if !n.is_empty() && !unspecified && !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// Which of `names` the server certificate in `files` is not valid for (all of them when it
/// cannot be read).
fn names_missing_from(files: &DevCerts, names: &[String]) -> Vec<String> {
    let certs = load_certs(&files.server_cert).unwrap_or_default();
    let ee = certs
        .first()
        .and_then(|c| webpki::EndEntityCert::try_from(c).ok());
    dev_server_names(names)
        .into_iter()
        .filter(|n| {
            let Some(ee) = &ee else { return true };
            let Ok(name) = rustls::pki_types::ServerName::try_from(n.as_str()) else {
                return false; // not a name a client could dial; nothing to add
            };
            ee.verify_is_valid_for_subject_name(&name).is_err()
        })
        .collect()
}

/// Issues a server certificate for `names` signed by the development CA and writes it with its
/// new key (key first: a crash between the two leaves a pair that does not match, which the next
/// start detects and reissues).
fn write_server_cert(
    files: &DevCerts,
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
    names: Vec<String>,
) -> Result<(), TlsError> {
    let mut params = rcgen::CertificateParams::new(names)?;
    (params.not_before, params.not_after) = validity(DEV_CERT_VALIDITY_DAYS);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "quiver dev server");
    // Client authentication too: a broker of a cluster presents the same certificate to the
    // other brokers to prove who it is.
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let server_key = rcgen::KeyPair::generate()?;
    let server = params.signed_by(&server_key, ca, ca_key)?;
    write_atomic(
        &files.server_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(&files.server_cert, server.pem().as_bytes(), 0o644)
}

/// How long a development CA is valid: years, not the centuries rcgen gives by default (a key
/// that leaks should not be trusted for ever). Its certificates are valid
/// [`DEV_CERT_VALIDITY_DAYS`] and reissued at a start past [`DEV_CERT_REISSUE_DAYS`].
pub const DEV_CA_VALIDITY_DAYS: i64 = 10 * 365;
/// How long a development server certificate is valid.
pub const DEV_CERT_VALIDITY_DAYS: i64 = 365;
/// A development server certificate older than this is reissued at start.
pub const DEV_CERT_REISSUE_DAYS: u64 = 300;

/// `(not_before, not_after)` for a certificate valid `days` from a day ago (clocks differ).
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::days(1),
        now + time::Duration::days(days),
    )
}

/// Whether the certificate file is older than `DEV_CERT_REISSUE_DAYS` (by its modification
/// time: it is written only when issued), or cannot be read.
fn due_for_reissue(path: &Path) -> bool {
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    age.is_none_or(|a| a.as_secs() > DEV_CERT_REISSUE_DAYS * 86_400)
}

fn dev_ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    // The CA is rebuilt from its key at every start to sign with; only the first one written
    // to ca.pem is what clients trust, so its validity is fixed when it is made.
    (params.not_before, params.not_after) = validity(DEV_CA_VALIDITY_DAYS);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEV_CA_COMMON_NAME);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Issues a client certificate (for mutual TLS in development and tests) signed by the
/// development CA in `certs`. Returns `(certificate PEM, private key PEM)`.
///
/// The CA is reconstructed from its key and its fixed distinguished name, which is all a
/// verifier compares: the issuer name and the signature.
pub fn issue_dev_client_cert(
    certs: &DevCerts,
    common_name: &str,
) -> Result<(String, String), TlsError> {
    let ca_key_pem = fs::read_to_string(&certs.ca_key).map_err(io_err(&certs.ca_key))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)?;
    let ca = dev_ca_params().self_signed(&ca_key)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    (params.not_before, params.not_after) = validity(DEV_CERT_VALIDITY_DAYS);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success when the
    // name fits, and we stop at the first NUL or the end of the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Who the peer proved to be with its certificate (mutual TLS); kept for authorization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name, when present and a string.
    pub common_name: Option<String>,
    /// The DNS names in the subject alternative name extension.
    pub dns_names: Vec<String>,
}

impl PeerIdentity {
    /// Reads the identity from the peer's leaf certificate. `None` if it cannot be parsed (it was
    /// already verified by rustls, so this only happens for names we do not understand).
    pub fn from_cert(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let ee = webpki::EndEntityCert::try_from(cert).ok()?;
        Some(PeerIdentity {
            common_name: common_name(ee.subject()),
            dns_names: ee.valid_dns_names().map(str::to_owned).collect(),
        })
    }
}

/// Finds the first commonName attribute (OID 2.5.4.3) in a DER-encoded Name and returns its
/// string value. Only the value's own length is trusted, and every index is bounds-checked.
fn common_name(subject: &[u8]) -> Option<String> {
    const OID_CN: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = subject.windows(OID_CN.len()).position(|w| w == OID_CN)? + OID_CN.len();
    let tag = *subject.get(at)?;
    // UTF8String, PrintableString, IA5String, T61String.
    if !matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
        return None;
    }
    let (len, start) = match *subject.get(at + 1)? {
        n if n < 0x80 => (n as usize, at + 2),
        0x81 => (*subject.get(at + 2)? as usize, at + 3),
        0x82 => (
            u16::from_be_bytes([*subject.get(at + 2)?, *subject.get(at + 3)?]) as usize,
            at + 4,
        ),
        _ => return None,
    };
    let value = subject.get(start..start.checked_add(len)?)?;
    String::from_utf8(value.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A development server certificate is valid now and not in 400 days (its CA is good for
    /// ten years: it is reissued from the same CA before it lapses).
    #[test]
    fn dev_certificates_expire_in_a_year_not_in_centuries() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        let roots = load_roots(std::slice::from_ref(&files.ca_cert)).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let chain = load_certs(&files.server_cert).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let at = |t| {
            verifier.verify_server_cert(&chain[0], &[], &name, &[], UnixTime::since_unix_epoch(t))
        };
        assert!(at(now).is_ok());
        let later = now + std::time::Duration::from_secs(400 * 86_400);
        assert!(at(later).is_err(), "still valid in 400 days");
        assert!(!due_for_reissue(&files.server_cert));
    }

    #[test]
    fn dev_certs_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path()).unwrap();
        let ca_before = fs::read(&first.ca_cert).unwrap();
        let second = ensure_dev_certs(dir.path()).unwrap();
        assert_eq!(fs::read(&second.ca_cert).unwrap(), ca_before);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&first.ca_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The files form working rustls configurations.
        server_config(&first.server_files()).unwrap();
        client_config(&first.client_files()).unwrap();
    }

    #[test]
    fn the_server_chooses_aes_128_gcm_whatever_the_clients_order() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        let server = server_config(&files.server_files()).unwrap();
        // A client built on the provider's own order (AES-256-GCM first), as the SDK's is.
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(load_roots(std::slice::from_ref(&files.ca_cert)).unwrap())
        .with_no_client_auth();
        assert_eq!(
            client.crypto_provider().cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        let mut c =
            rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap())
                .unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let mut wire = Vec::new();
        for _ in 0..10 {
            wire.clear();
            c.write_tls(&mut wire).unwrap();
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets().unwrap();
            wire.clear();
            s.write_tls(&mut wire).unwrap();
            c.read_tls(&mut &wire[..]).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        for suite in [c.negotiated_cipher_suite(), s.negotiated_cipher_suite()] {
            assert_eq!(
                suite.map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
    }

    #[test]
    fn the_dev_server_certificate_is_reissued_to_name_new_addresses_by_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path()).unwrap();
        let ca = fs::read(&first.ca_cert).unwrap();
        let server = fs::read(&first.server_cert).unwrap();
        let names = ["127.0.0.2".to_owned(), "broker-1.example".to_owned()];
        assert_eq!(names_missing_from(&first, &names), names.to_vec());

        let files = ensure_dev_certs_for(dir.path(), &names).unwrap();
        assert_eq!(fs::read(&files.ca_cert).unwrap(), ca, "the CA is kept");
        assert_ne!(fs::read(&files.server_cert).unwrap(), server);
        assert!(names_missing_from(&files, &names).is_empty());
        server_config(&files.server_files()).unwrap();

        // Nothing new asked: nothing rewritten; an unspecified address is not a name.
        let reissued = fs::read(&files.server_cert).unwrap();
        ensure_dev_certs_for(dir.path(), &["0.0.0.0".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        assert_eq!(fs::read(&files.server_cert).unwrap(), reissued);

        // A new address keeps the old DNS names.
        let files = ensure_dev_certs_for(dir.path(), &["10.1.2.3".to_owned()]).unwrap();
        assert!(names_missing_from(
            &files,
            &["10.1.2.3".to_owned(), "broker-1.example".to_owned()]
        )
        .is_empty());
    }

    #[test]
    fn a_dev_server_key_that_does_not_match_its_certificate_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        fs::write(&files.server_key, other.serialize_pem()).unwrap();
        assert!(server_config(&files.server_files()).is_err());
        ensure_dev_certs(dir.path()).unwrap();
        server_config(&files.server_files()).unwrap();
    }

    #[test]
    fn a_partial_dev_directory_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        fs::remove_file(&files.server_key).unwrap();
        let err = ensure_dev_certs(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::IncompleteDevDir {
                    missing: "server.key",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn server_cert_names_and_client_identity_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certs(dir.path()).unwrap();
        let server = load_certs(&files.server_cert).unwrap();
        let id = PeerIdentity::from_cert(&server[0]).unwrap();
        assert_eq!(id.common_name.as_deref(), Some("quiver dev server"));
        assert!(id.dns_names.iter().any(|n| n == "localhost"), "{id:?}");

        let (cert_pem, _key) = issue_dev_client_cert(&files, "broker-7").unwrap();
        let cert = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let id = PeerIdentity::from_cert(&cert).unwrap();
        assert_eq!(id.common_name.as_deref(), Some("broker-7"));
    }

    #[test]
    fn common_name_parser_rejects_overruns() {
        // OID then a UTF8String claiming 10 bytes with only 2 present.
        let bad = [0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x0a, b'a', b'b'];
        assert_eq!(common_name(&bad), None);
        let good = [0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02, b'a', b'b'];
        assert_eq!(common_name(&good).as_deref(), Some("ab"));
    }
}
