//! The live sessions: who is connected, for the gauges `/metrics` shows and
//! for shutdown, which waits until every session has said goodbye.
//!
//! A session registers itself when its task starts and is removed when the
//! returned [`SessionGuard`] drops, however the task ends. The registry's
//! lock is held only to insert, remove or copy the list, never across an
//! await or a system call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::metrics::{Metrics, SessionGauges};
use crate::outbox::Outbox;

/// A registered session and its socket.
type Entry = (Arc<Outbox>, Arc<TcpStream>);

/// Every live session, by id.
pub struct SessionRegistry {
    sessions: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Removes a session from the registry (and from the connection count)
/// when its task ends.
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.sessions.lock().remove(&self.id);
        self.registry.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SessionRegistry {
    /// An empty registry; `metrics.connections` is decremented as
    /// sessions leave (the upgrade counted them in).
    pub fn new(metrics: Arc<Metrics>) -> SessionRegistry {
        SessionRegistry { sessions: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), metrics }
    }

    /// A fresh session id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a session until the guard drops.
    pub fn register(self: &Arc<Self>, outbox: Arc<Outbox>, socket: Arc<TcpStream>) -> SessionGuard {
        let id = outbox.id;
        self.sessions.lock().insert(id, (outbox, socket));
        self.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        SessionGuard { registry: self.clone(), id }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The gauges now. Each session's buffered bytes are its outbox count
    /// plus its socket's kernel send queue (one `SIOCOUTQ` per session per
    /// scrape, never per message).
    pub fn gauges(&self) -> SessionGauges {
        // Copy the list, then do the per-socket ioctls without the lock, so
        // a scrape never holds up sessions registering or leaving.
        let sessions: Vec<Entry> = self.sessions.lock().values().cloned().collect();
        let mut g = SessionGauges::default();
        for (outbox, socket) in &sessions {
            let queued = outbox.queued_bytes() as u64;
            let kernel = crate::sys::kernel_queued_bytes(&**socket).unwrap_or(0) as u64;
            g.queued_bytes += queued;
            g.max_session_queued_bytes = g.max_session_queued_bytes.max(queued);
            g.kernel_queued_bytes += kernel;
            g.buffered.record(queued + kernel);
            let closing = outbox.is_closing();
            g.closing += usize::from(closing);
            g.conflating += usize::from(!closing && outbox.is_conflating());
        }
        g.open = sessions.len() - g.closing - g.conflating;
        g
    }
}
