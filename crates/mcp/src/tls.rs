//! TLS for the https listeners (the gateway's and the mock's): a certificate chain and its key
//! read from PEM files into a rustls server configuration (the `ring` provider, TLS 1.2 and
//! 1.3, HTTP/1.1 by ALPN), and one server handshake bounded in time.
//!
//! A file that is missing, holds no PEM item of its kind, or a key that does not fit the
//! certificate is a [`TlsFileError`] naming the file and what to give instead: the binaries
//! exit 2 with it before they listen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

pub use rustls::ServerConfig;
pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::server::TlsStream;

/// A certificate or key file that cannot serve https.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read the TLS {what} file `{path}`: {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the TLS certificate file `{0}` holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block): give `--tls-cert` the server's certificate chain in PEM, the server's own certificate first"
    )]
    NoCertificate(PathBuf),
    #[error(
        "the TLS certificate file `{path}` is not valid PEM: {why}; give `--tls-cert` the server's certificate chain in PEM"
    )]
    BadCertificate { path: PathBuf, why: String },
    #[error(
        "the TLS key file `{path}` holds no PEM private key ({why}): give `--tls-key` the certificate's private key in PEM (`-----BEGIN PRIVATE KEY-----`, or an RSA or EC key)"
    )]
    NoKey { path: PathBuf, why: String },
    #[error(
        "the TLS key `{key}` cannot serve the certificate `{cert}`: {why}; give `--tls-key` the private key the certificate was issued for"
    )]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// The crypto provider every TLS configuration of Tollgate uses: `ring` (no cmake to build, and
/// no process-wide default to install, so two configurations never disagree). rustls marks it
/// deprecated because `ring` has no post-quantum key exchange; aws-lc-rs has one but needs cmake
/// and doubles the build (docs/security.md, "TLS").
#[expect(
    deprecated,
    reason = "ring's provider: no post-quantum key exchange, docs/security.md"
)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|error| TlsFileError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

/// Reads every certificate of a PEM file (a chain, or a bundle of trust anchors).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read("certificate", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::BadCertificate {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The server configuration of an https listener: the chain in `cert` (PEM, the server's own
/// certificate first) and its private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsFileError> {
    let chain = read_certificates(cert)?;
    let key_pem = read("key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsFileError::NoKey {
        path: key.to_owned(),
        why: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no key block found".to_owned(),
            other => other.to_string(),
        },
    })?;
    let mismatch = |why: String| TlsFileError::KeyMismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        why,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| mismatch(e.to_string()))?;
    // Both listeners speak HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Why a server handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the client did not complete the TLS handshake within {0:?}")]
    TimedOut(Duration),
    #[error("the TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// One server handshake on `stream`, bounded by `timeout`: a client that opens a connection and
/// never sends its ClientHello (or stops half-way) holds it no longer than that.
pub async fn accept<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    timeout: Duration,
) -> Result<TlsStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Err(_) => Err(HandshakeError::TimedOut(timeout)),
    }
}

/// The default bound of a server handshake (`--tls-handshake-timeout`).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn pair(dir: &Path) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (
            write(dir, "cert.pem", &c.cert.pem()),
            write(dir, "key.pem", &c.signing_key.serialize_pem()),
        )
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path());
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    /// Each unusable file is named, with what to give instead.
    #[test]
    fn unusable_files_are_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path());
        let text = write(dir.path(), "notes.txt", "not a certificate\n");
        let missing = dir.path().join("missing.pem");
        let (other_cert, _) = {
            let sub = dir.path().join("other");
            std::fs::create_dir(&sub).unwrap();
            pair(&sub)
        };
        let show = |r: Result<Arc<ServerConfig>, TlsFileError>| {
            r.unwrap_err()
                .to_string()
                .replace(dir.path().to_str().unwrap(), "DIR")
        };
        let messages = [
            show(server_config(&missing, &key)),
            show(server_config(&text, &key)),
            show(server_config(&cert, &text)),
            show(server_config(&cert, &missing)),
            show(server_config(&other_cert, &key)),
            show(server_config(&key, &key)),
        ];
        insta::assert_snapshot!(messages.join("\n"));
    }

    /// A client that connects and sends nothing is let go after the timeout, as
    /// [`HandshakeError::TimedOut`].
    #[tokio::test]
    async fn a_silent_client_times_out_its_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path());
        let acceptor = TlsAcceptor::from(server_config(&cert, &key).unwrap());
        let (_client, server) = tokio::io::duplex(1024);
        let started = std::time::Instant::now();
        let r = accept(&acceptor, server, Duration::from_millis(100)).await;
        assert!(matches!(r, Err(HandshakeError::TimedOut(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
