//! TLS for the transport: rustls (aws-lc-rs) configurations for the server side, for dial-out, and the
//! development CA that makes the out-of-the-box local setup work without turning verification off.
//!
//! Trust model (also in ARCHITECTURE.md): a client trusts exactly the CA files it is given. With
//! nothing given, the SDK and `streamctl` look for the development CA at `./data/tls/ca.pem`
//! (streamd's default data directory is `./data` in its working directory) and otherwise fail with
//! a message asking for a CA file. There is no switch that skips verification.
//!
//! Development certificates (`ensure_dev_certs`, the development CA and its name constraints):
//! `dev.rs`.

use std::{
    fs, io,
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

mod dev;
pub use dev::{
    ensure_dev_certs, ensure_dev_certs_for, ensure_dev_certs_shared, issue_dev_client_cert,
    make_dev_ca, DevCerts, MadeDevCa, DEV_CA_VALIDITY_DAYS, DEV_CERT_REISSUE_DAYS,
    DEV_CERT_VALIDITY_DAYS,
};

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
    #[error(
        "the development CA in {dir} does not permit {names} (its name constraints list the \
         names it may sign for); widen it with `streamd --make-dev-ca {names} --dev-ca-dir {dir}` \
         and restart the brokers that trust it"
    )]
    DevCaDoesNotPermit { dir: PathBuf, names: String },
    #[error("{key} is not the key of the development CA certificate {cert}")]
    DevCaKeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("'{0}' is neither a DNS name nor an IP address")]
    NotAName(String),
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
