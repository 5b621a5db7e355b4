//! A TCP proxy between a client and a server, on 127.0.0.1, that can cut
//! every connection through it: the client sees its connection end in the
//! middle of the stream (bytes in flight are lost), as on a flaky network,
//! while the server stays up and keeps its history.
//!
//! Two ways to cut ([`Cut`]): a clean close (the client reads EOF, with no
//! WebSocket close frame) and a reset (`SO_LINGER` 0: the client reads
//! `ECONNRESET`). The upstream connection is closed either way, so the
//! server sees its client gone. New connections are accepted as before:
//! the client reconnects through the proxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How [`Proxy::cut`] ends the client's side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// `shutdown(SHUT_WR)` then close: the client reads EOF.
    Close,
    /// `SO_LINGER` 0 then close: the kernel sends RST, the client reads
    /// "connection reset".
    Reset,
}

/// A running proxy; dropping it stops accepting (live connections go on
/// until cut or closed by either end).
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// One sender per live connection: cutting sends the way to cut.
    live: Arc<Mutex<Vec<oneshot::Sender<Cut>>>>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to
    /// `upstream`. A connection whose upstream connect fails is closed.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let live: Arc<Mutex<Vec<oneshot::Sender<Cut>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (live2, accepted2) = (live.clone(), accepted.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted2.fetch_add(1, Ordering::SeqCst);
                let (cut_tx, cut_rx) = oneshot::channel();
                live2.lock().expect("proxy lock").push(cut_tx);
                tokio::spawn(pump(client, upstream, cut_rx));
            }
        });
        Proxy { addr, live, accepted, accept }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Cuts every live connection `how`; returns how many were cut.
    pub fn cut(&self, how: Cut) -> usize {
        let senders: Vec<_> = self.live.lock().expect("proxy lock").drain(..).collect();
        senders.into_iter().filter_map(|tx| tx.send(how).ok()).count()
    }
}

/// Copies bytes both ways until either end closes or a cut comes.
async fn pump(mut client: TcpStream, upstream: SocketAddr, cut: oneshot::Receiver<Cut>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let how = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        how = cut => match how { Ok(how) => how, Err(_) => return },
    };
    match how {
        Cut::Close => {
            use tokio::io::AsyncWriteExt;
            let _ = client.shutdown().await;
        }
        Cut::Reset => {
            let _ = client.set_zero_linger();
        }
    }
    drop(client);
    drop(server);
}
