//! TLS (`--tls-cert`, `--tls-key`): `https://` and `wss://` with rustls.
//!
//! The crypto provider is *ring*, not aws-lc-rs: it builds on a fresh
//! machine with only a C compiler (aws-lc-rs needs cmake). TLS 1.2 and
//! 1.3, rustls's safe defaults; ALPN offers only `http/1.1` (hyper serves
//! HTTP/1 here).
//!
//! The accept loop hands each TCP connection to [`accept`], which runs the
//! TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`] before hyper reads a byte
//! of HTTP. A WebSocket upgraded over TLS reaches its session through
//! [`session_stream`]: sessions write with vectored `sendmsg` on a plain
//! socket (one system call per pass, see `session::writer`), so a TLS
//! session gets one end of a local socket pair and a pump task moves bytes
//! between the other end and the TLS stream, encrypting on the way out.
//! That costs one extra copy per byte on TLS connections only; plain
//! connections are untouched. Backpressure carries through: the pump
//! writes to the TLS socket before it reads more, so a client that stops
//! reading fills the pair's bounded buffer and the session's outbox grows
//! and meets the slow-consumer ladder as usual.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to complete the TLS handshake after its TCP
/// connection is accepted; then the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes the socket pair between a TLS session and its pump buffers each
/// way (`SO_SNDBUF`): about what `TCP_NOTSENT_LOWAT` lets a plain socket
/// hold, so a stalled TLS reader's backlog stays in the outbox where the
/// slow-consumer ladder counts it.
const PAIR_BUFFER_BYTES: usize = 128 * 1024;

/// Why `--tls-cert`/`--tls-key` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file: unreadable, not PEM, or no certificate in it.
    #[error("certificate {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file: unreadable, not PEM, or no private key in it.
    #[error("private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads a PEM certificate chain and its private key into a rustls server
/// configuration (ring provider, HTTP/1.1 ALPN).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert { path: cert.display().to_string(), reason };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.display().to_string(), reason: e.to_string() })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Runs the TLS handshake on an accepted connection, within
/// [`TLS_HANDSHAKE_TIMEOUT`]. `None`: it failed or took too long (logged
/// at debug; a scanner or a plain-HTTP client is not an error).
pub async fn accept(acceptor: &TlsAcceptor, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// The socket a session runs on, and the bytes the client sent after the
/// handshake that hyper had already read: the upgraded TCP stream itself,
/// or for TLS one end of a socket pair pumped to the TLS stream (see the
/// module doc). `None`: neither (a bug) or the pair could not be made.
pub fn session_stream(upgraded: Upgraded) -> Option<(TcpStream, Bytes)> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Some((parts.io.into_inner(), parts.read_buf)),
        Err(upgraded) => upgraded,
    };
    let parts = match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!("upgraded connection is neither TCP nor TLS over TCP");
            return None;
        }
    };
    match bridge(parts.io.into_inner()) {
        Ok(session_end) => Some((session_end, parts.read_buf)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot make a socket pair for a TLS session");
            None
        }
    }
}

/// Connects a TLS stream to a new socket pair and returns the session's
/// end. The session's end is an `AF_UNIX` stream socket held as a
/// [`TcpStream`]: the session uses only calls that work on any stream
/// socket (read, `sendmsg`, `shutdown`); its TCP-only tuning
/// (`TCP_NOTSENT_LOWAT`) fails on it and is logged at debug, and
/// [`PAIR_BUFFER_BYTES`] bounds the pair's buffer instead.
fn bridge(mut tls: TlsStream<TcpStream>) -> std::io::Result<TcpStream> {
    let (session_end, pump_end) = std::os::unix::net::UnixStream::pair()?;
    for end in [&session_end, &pump_end] {
        end.set_nonblocking(true)?;
        let _ = socket2::SockRef::from(end).set_send_buffer_size(PAIR_BUFFER_BYTES);
    }
    let mut pump_end = tokio::net::UnixStream::from_std(pump_end)?;
    let session_end = TcpStream::from_std(std::net::TcpStream::from(OwnedFd::from(session_end)))?;
    tokio::spawn(async move {
        // Ends when either side closes; dropping both ends then closes the
        // other (TLS close_notify is sent by the shutdown in copy).
        if let Err(e) = tokio::io::copy_bidirectional(&mut tls, &mut pump_end).await {
            tracing::debug!(error = %e, "TLS session pump ended");
        }
    });
    Ok(session_end)
}
