//! The server's threads and signals: watching the engine thread, joining
//! threads within a bound at shutdown, blocking work off the async workers
//! within a bound, and the SIGINT/SIGTERM future.

use std::thread::JoinHandle;
use std::time::Duration;

/// Tells when a thread ends, and whether it panicked, without joining it:
/// the server watches its engine thread with it.
pub struct ThreadWatch {
    ended: tokio::sync::oneshot::Receiver<Option<String>>,
}

impl ThreadWatch {
    /// Resolves once the thread has ended: `Some(message)` if it panicked.
    pub async fn ended(&mut self) -> Option<String> {
        (&mut self.ended).await.unwrap_or_else(|_| Some("the thread ended without a word".into()))
    }
}

/// Spawns a named thread running `f`, and a [`ThreadWatch`] on it.
pub fn spawn_watched<F>(name: &str, f: F) -> std::io::Result<(JoinHandle<()>, ThreadWatch)>
where
    F: FnOnce() + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = std::thread::Builder::new().name(name.into()).spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(outcome.err().map(|p| panic_message(&*p)));
    })?;
    Ok((handle, ThreadWatch { ended: rx }))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Joins the pipeline's threads at shutdown, each group within its bound:
/// `first` (the engine, then the recorder it feeds, which may need time
/// for its last write and fsync) within `first_grace`, then the rest (the
/// feed threads) within `rest_grace` more.
///
/// The joins run on a plain thread, not `spawn_blocking`: the runtime waits
/// for its blocking tasks when it is dropped, and a feed thread stuck in a
/// read must not hold the process past the grace period.
pub async fn join_within(
    first: Vec<JoinHandle<()>>,
    rest: Vec<JoinHandle<()>>,
    first_grace: Duration,
    rest_grace: Duration,
) {
    let (first_tx, first_joined) = tokio::sync::oneshot::channel();
    let (all_tx, all_joined) = tokio::sync::oneshot::channel();
    let _ = std::thread::Builder::new().name("join".into()).spawn(move || {
        for t in first {
            let _ = t.join();
        }
        let _ = first_tx.send(());
        for t in rest {
            let _ = t.join();
        }
        let _ = all_tx.send(());
    });
    let _ = tokio::time::timeout(first_grace, first_joined).await;
    let _ = tokio::time::timeout(rest_grace, all_joined).await;
}

/// Blocking work (file access) that did not finish within its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Runs blocking `f` on a thread of its own and waits at most `within` for
/// its answer, so no async worker ever waits on a file (a FIFO, a hung
/// network mount). On a time-out the thread is left to finish on its own;
/// the caller bounds how many such threads may exist (the server: one
/// permit per thread, moved into `f`).
///
/// A plain thread, not `spawn_blocking`: the runtime waits for its
/// blocking tasks when it is dropped, and a check stuck in `open` must not
/// hold the process at shutdown.
pub async fn blocking_within<T, F>(name: &str, within: Duration, f: F) -> Result<T, TimedOut>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let _ = tx.send(f());
    });
    if spawned.is_err() {
        return Err(TimedOut);
    }
    match tokio::time::timeout(within, rx).await {
        Ok(Ok(value)) => Ok(value),
        // The thread panicked (the sender dropped) or ran out of time.
        _ => Err(TimedOut),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watched_thread_that_panics_is_reported_with_its_message() {
        let (handle, mut watch) = spawn_watched("doomed", || panic!("lost the ring")).unwrap();
        assert_eq!(watch.ended().await.as_deref(), Some("lost the ring"));
        assert!(handle.join().is_ok(), "the panic was caught on the thread");
        let (_, mut watch) = spawn_watched("fine", || {}).unwrap();
        assert_eq!(watch.ended().await, None, "a thread that returns reports no panic");
    }

    #[tokio::test]
    async fn blocking_work_answers_or_is_abandoned_at_its_bound() {
        let quick = blocking_within("quick", Duration::from_secs(5), || 7).await;
        assert_eq!(quick, Ok(7));
        let started = std::time::Instant::now();
        let stuck =
            blocking_within("stuck", Duration::from_millis(100), || std::thread::sleep(Duration::from_secs(2))).await;
        assert_eq!(stuck, Err(TimedOut));
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn joins_give_up_on_a_stuck_thread_after_their_grace() {
        let quick = std::thread::spawn(|| {});
        let stuck = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3)));
        let started = std::time::Instant::now();
        join_within(vec![quick], vec![stuck], Duration::from_secs(1), Duration::from_millis(100)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
