//! `--resume N`: how long a client that comes back takes to get the N
//! updates it missed from the server's history (docs/PROTOCOL.md,
//! "Resume"), and whether it gets exactly those.
//!
//! tickcast only, on the first symbol of the server's `/symbols`, at
//! `--depth` in `--encoding`:
//! 1. a watcher subscribes and follows the symbol's live seq throughout;
//! 2. a first client subscribes, reads [`FIRST_UPDATES`] updates, notes
//!    its last seq and the ack's epoch, and disconnects;
//! 3. once the watcher has seen N more updates of the symbol, a third
//!    client connects, and the clock starts as it sends the subscribe with
//!    `from_seq` and `epoch`. It reads until it holds the N-th missed
//!    update and the first live one (the first ingested after the
//!    subscribe was sent: the feed keeps ticking, so more than N come from
//!    history).
//!
//! Checked: the ack says `recovered: true` in the same epoch, no snapshot,
//! `reset` or `conflated` comes, and every update's seq is the one after
//! the last (no gap, no duplicate) from the first client's last seq on.
//! The resuming client reads with the client crate's [`FrameReader`] and
//! the bench's light decoder, as the load run's subscribers do, so that
//! what is timed is the server's catch-up rather than the bench's decoding.
//! Each phase is bounded ([`PUBLISH_DEADLINE`], [`CATCH_UP_DEADLINE`]).
//!
//! Imports: the [`Target`] for the server's symbols and RSS, the light
//! decoder, and `tickcast::wire` for the ack (decoded in full).
//!
//! [`FrameReader`]: tickcast_client::FrameReader

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use tickcast::model::now_ns;
use tickcast::wire::{decode, Encoding, ServerMessage};
use tickcast_client::Client;
use tokio::sync::watch;

use crate::args::BenchArgs;
use crate::light::decode_light;
use crate::measure::{server_rss, stats_from};
use crate::report::{BenchReport, ResumeFigures};
use crate::target::Target;

/// Updates the first client reads before it leaves: enough to hold a seq
/// past its snapshot, so the resume starts from an update, as a real
/// client's would.
pub const FIRST_UPDATES: u64 = 10;

/// Longest the symbol may take to publish the N updates the resume will
/// have missed.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(120);

/// Longest the resuming client may take from its subscribe to the first
/// live update.
pub const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the resume measurement for `missed` updates.
pub async fn run(args: &BenchArgs, target: Arc<dyn Target>, missed: u64) -> anyhow::Result<BenchReport> {
    let sym = target.own_symbols(1).await?.remove(0);
    let figures = resume(args, &sym, missed).await?;
    Ok(BenchReport {
        target: target.kind(),
        subscribers: 1,
        server_rss_bytes: server_rss(args, target.as_ref()).await?,
        server_stats_from: stats_from(args),
        resume: Some(figures),
        ..BenchReport::default()
    })
}

/// The three clients of a resume of `missed` updates of `sym`.
async fn resume(args: &BenchArgs, sym: &str, missed: u64) -> anyhow::Result<ResumeFigures> {
    let (latest_tx, mut latest) = watch::channel(0u64);
    let watcher = tokio::spawn(watch_seq(args.clone(), sym.to_string(), latest_tx));
    let (epoch, last) = leave_after_a_few(args, sym).await?;

    // Wait until the symbol has moved `missed` past the first client. A
    // watcher that fails drops its sender: its error says why.
    let goal = last + missed;
    let waited = tokio::time::timeout(PUBLISH_DEADLINE, latest.wait_for(|&seq| seq >= goal)).await.map(|r| r.is_ok());
    match waited {
        Ok(true) => {}
        Ok(false) => {
            return Err(match watcher.await {
                Ok(Err(e)) => e.context("the watcher failed"),
                _ => anyhow::anyhow!("the watcher stopped"),
            })
        }
        Err(_) => bail!(
            "{sym} published only {} of the {missed} updates to miss within {}: raise the server's --rate or lower \
             --resume",
            latest.borrow().saturating_sub(last),
            humantime::format_duration(PUBLISH_DEADLINE)
        ),
    }

    let mut client = Client::connect(args.server, args.encoding).await.context("connect the resuming client")?;
    let request = serde_json::json!({
        "op": "subscribe",
        "symbols": [sym],
        "depth": depth_value(&args.depth),
        "from_seq": { sym: last },
        "epoch": epoch,
    })
    .to_string();
    let published_at_send = latest.borrow().saturating_sub(last);
    let mut catch_up = CatchUp::new(args.encoding, sym, epoch, last, missed, now_ns());
    client.send_text(&request).await.context("send the resuming subscribe")?;
    let stop = AtomicBool::new(false);
    let read = client.into_frame_reader().run(&stop, |payload, at| match catch_up.on_message(payload, at) {
        Ok(false) => ControlFlow::Continue(None),
        Ok(true) => ControlFlow::Break(()),
        Err(e) => {
            catch_up.failure = Some(e);
            ControlFlow::Break(())
        }
    });
    let timed_out = tokio::time::timeout(CATCH_UP_DEADLINE, read).await.is_err();
    watcher.abort();
    catch_up.finish(timed_out, published_at_send)
}

/// The watcher: subscribes to `sym` and publishes every seq it sees of it
/// (updates and snapshots, so a conflated watcher still counts) until it
/// is aborted, or fails.
async fn watch_seq(args: BenchArgs, sym: String, latest: watch::Sender<u64>) -> anyhow::Result<()> {
    let mut client = Client::connect(args.server, args.encoding).await.context("connect the watcher")?;
    client.subscribe_depth(&[&sym], &args.depth).await.context("watcher: subscribe")?;
    loop {
        let msg = client.next_message().await.context("watcher")?;
        if let Some((s, seq)) = msg.sym_seq() {
            if s == sym {
                latest.send_if_modified(|held| {
                    let newer = seq > *held;
                    if newer {
                        *held = seq;
                    }
                    newer
                });
            }
        } else if let ServerMessage::Error { code, message, .. } = msg {
            bail!("watcher: error {code}: {message}");
        }
    }
}

/// The first client: subscribes to `sym`, reads [`FIRST_UPDATES`]
/// gapless updates after its snapshot, and leaves. Returns the ack's
/// epoch and the last seq held.
async fn leave_after_a_few(args: &BenchArgs, sym: &str) -> anyhow::Result<(u64, u64)> {
    let mut client = Client::connect(args.server, args.encoding).await.context("connect the first client")?;
    client.subscribe_depth(&[sym], &args.depth).await.context("first client: subscribe")?;
    let (mut epoch, mut last, mut updates) = (None, None, 0);
    let read = async {
        while updates < FIRST_UPDATES {
            match client.next_message().await.context("first client")? {
                ServerMessage::Ack { epoch: e, .. } => epoch = e,
                ServerMessage::Snapshot { seq, .. } => last = Some(seq),
                ServerMessage::Error { code, message, .. } => bail!("first client: error {code}: {message}"),
                msg @ (ServerMessage::Conflated { .. } | ServerMessage::Reset { .. }) => {
                    bail!("first client: {msg:?} before it had read {FIRST_UPDATES} updates")
                }
                msg => {
                    let Some((_, seq)) = msg.sym_seq() else { continue };
                    let Some(held) = last else { bail!("first client: an update of {sym} before its snapshot") };
                    ensure!(seq == held + 1, "first client: seq {seq} after {held}");
                    last = Some(seq);
                    updates += 1;
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(PUBLISH_DEADLINE, read).await {
        Ok(result) => result?,
        Err(_) => bail!(
            "{sym} published {updates} of {FIRST_UPDATES} updates within {}: is the feed ticking it?",
            humantime::format_duration(PUBLISH_DEADLINE)
        ),
    }
    let epoch = epoch.context("the ack named no epoch: this server does not resume (a build before history?)")?;
    // `updates` reached FIRST_UPDATES, each after a snapshot: `last` is set.
    Ok((epoch, last.unwrap_or_default()))
}

/// `--depth` as the subscribe carries it: a number, or `"full"`.
fn depth_value(depth: &str) -> serde_json::Value {
    match depth.parse::<u64>() {
        Ok(n) => n.into(),
        Err(_) => depth.into(),
    }
}

/// The resuming client's reading of the catch-up, message by message.
struct CatchUp<'a> {
    encoding: Encoding,
    sym: &'a str,
    /// The epoch the first client's ack named.
    epoch: u64,
    /// The last seq the first client held: `from_seq`.
    from_seq: u64,
    /// N: updates that had been published, at least, when it came back.
    missed: u64,
    /// When the subscribe was sent (ns since the Unix epoch, the clock of
    /// `ts_ingest` and of the frame reader's receive times).
    sent_ns: u64,
    /// The seq the next update must carry.
    next_seq: u64,
    /// Receive time of the ack.
    ack_at: Option<u64>,
    /// Receive time of update `from_seq + missed`.
    nth_at: Option<u64>,
    /// Receive time and seq of the first update ingested after `sent_ns`.
    live: Option<(u64, u64)>,
    /// Payload bytes received up to and including the N-th missed update.
    bytes_to_nth: u64,
    /// Payload bytes received in all.
    bytes: u64,
    /// Why reading stopped early, if it did.
    failure: Option<anyhow::Error>,
}

impl<'a> CatchUp<'a> {
    fn new(encoding: Encoding, sym: &'a str, epoch: u64, from_seq: u64, missed: u64, sent_ns: u64) -> Self {
        CatchUp {
            encoding,
            sym,
            epoch,
            from_seq,
            missed,
            sent_ns,
            next_seq: from_seq + 1,
            ack_at: None,
            nth_at: None,
            live: None,
            bytes_to_nth: 0,
            bytes: 0,
            failure: None,
        }
    }

    /// Takes one message received at `at`; `Ok(true)` once the N-th missed
    /// update and the first live one are in.
    fn on_message(&mut self, payload: &[u8], at: u64) -> anyhow::Result<bool> {
        self.bytes += payload.len() as u64;
        if self.nth_at.is_none() {
            self.bytes_to_nth = self.bytes;
        }
        let light = decode_light(self.encoding, payload).context("a message the bench cannot read")?;
        match &*light.kind {
            "trade" | "quote" | "book" => {
                ensure!(self.ack_at.is_some(), "an update before the ack");
                ensure!(light.sym == self.sym, "an update of {}, which was not subscribed", light.sym);
                ensure!(
                    light.seq == self.next_seq,
                    "seq {} where {} was due: {}",
                    light.seq,
                    self.next_seq,
                    if light.seq < self.next_seq { "a duplicate" } else { "a gap" }
                );
                self.next_seq += 1;
                if light.seq == self.from_seq + self.missed {
                    self.nth_at = Some(at);
                }
                if self.live.is_none() && light.ts_ingest > self.sent_ns {
                    self.live = Some((at, light.seq));
                }
                Ok(self.nth_at.is_some() && self.live.is_some())
            }
            "ack" => {
                let ServerMessage::Ack { epoch, recovered, .. } = decode(self.encoding, payload)? else {
                    bail!("an ack that does not decode as one")
                };
                ensure!(
                    epoch == Some(self.epoch),
                    "the ack names epoch {epoch:?}, the first client's named {}: did the server restart?",
                    self.epoch
                );
                ensure!(
                    recovered.get(self.sym) == Some(&true),
                    "{} not recovered ({:?}): the server's history does not reach back to seq {} (--history, \
                     --history-frames, --history-bytes), or keeps none at this depth and encoding",
                    self.sym,
                    recovered.get(self.sym),
                    self.from_seq + 1
                );
                self.ack_at = Some(at);
                Ok(false)
            }
            "snapshot" | "reset" | "conflated" | "error" => {
                bail!("during the catch-up, after seq {}: {:?}", self.next_seq - 1, decode(self.encoding, payload)?)
            }
            _ => Ok(false),
        }
    }

    /// The figures, or why there are none.
    fn finish(self, timed_out: bool, published_at_send: u64) -> anyhow::Result<ResumeFigures> {
        if let Some(e) = self.failure {
            return Err(e.context(format!("resume of {} from seq {}", self.sym, self.from_seq)));
        }
        let got = self.next_seq - 1 - self.from_seq;
        let (Some(ack_at), Some(nth_at), Some((live_at, live_seq))) = (self.ack_at, self.nth_at, self.live) else {
            bail!(
                "{} after the subscribe: ack {}, {got} of {} missed updates, {} live update",
                if timed_out {
                    format!("nothing more within {}", humantime::format_duration(CATCH_UP_DEADLINE))
                } else {
                    "the server closed the connection".to_string()
                },
                if self.ack_at.is_some() { "received" } else { "missing" },
                self.missed,
                if self.live.is_some() { "a" } else { "no" },
            )
        };
        let secs = |at: u64| at.saturating_sub(self.sent_ns) as f64 / 1e9;
        Ok(ResumeFigures {
            resume_symbol: self.sym.to_string(),
            resume_missed: self.missed,
            resume_from_seq: self.from_seq,
            resume_published_at_send: published_at_send,
            resume_ack_s: secs(ack_at),
            resume_nth_s: secs(nth_at),
            resume_live_s: secs(live_at),
            resume_before_live: live_seq - 1 - self.from_seq,
            resume_updates_per_sec: self.missed as f64 / secs(nth_at).max(1e-9),
            resume_bytes: self.bytes_to_nth,
        })
    }
}
