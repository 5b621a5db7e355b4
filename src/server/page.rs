//! The trading page at `/`, and the list of recordings its replay mode
//! offers (`/recordings`).
//!
//! The page is clients/js: `dist/index.html`, `dist/app.css` and the
//! esbuild bundle `dist/app.js` (the JavaScript client and the page), all
//! embedded in the binary with `include_bytes!`, so the page works offline
//! and `cargo build` needs no npm. The bundle is committed; scripts/test.sh
//! checks that it matches a fresh build of its sources.
//!
//! `/recordings` answers `{"recordings":[...],"pending":false}`: the
//! recordings `/replay?source=` may open (none without `--replay-dir`, so
//! the page can ask any server), each with its name, format, event-time
//! range (ns, as strings: a JavaScript number would round them) and
//! symbols, in name order. Summaries read the whole recording, so they run
//! on a thread of their own and are cached per file (by size and
//! modification time). A listing not done within [`RECORDINGS_WAIT`]
//! answers `"pending":true` with no recordings at once (well within
//! `--handshake-timeout`, which also bounds a plain HTTP request), and the
//! thread goes on filling the cache: ask again shortly. One listing thread
//! runs at a time.
//! With authentication on it needs a token, and lists only the recordings
//! the token's `replay` claim grants.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use parking_lot::Mutex;
use serde::Serialize;

use super::lifecycle::blocking_within;
use super::routes::text;
use super::upgrade::{authenticate, unauthorized, MAX_REPLAY_CHECKS};
use super::ServerCtx;
use crate::recorded;
use crate::tools::inspect;

/// One embedded file of the page: its bytes and content type.
pub struct Asset {
    /// The file's bytes, as built.
    pub body: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// The page's HTML.
pub const INDEX_HTML: Asset =
    Asset { body: include_bytes!("../../clients/js/dist/index.html"), content_type: "text/html; charset=utf-8" };

/// The client and the page, bundled by esbuild.
pub const APP_JS: Asset =
    Asset { body: include_bytes!("../../clients/js/dist/app.js"), content_type: "text/javascript; charset=utf-8" };

/// The page's style sheet.
pub const APP_CSS: Asset =
    Asset { body: include_bytes!("../../clients/js/dist/app.css"), content_type: "text/css; charset=utf-8" };

/// What the page may load and connect to: only its own origin (the
/// WebSocket included), no inline script, no framing.
const CSP: &str =
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'";

/// Longest wait for `/recordings` to summarize what is not cached yet
/// before it answers `"pending":true`.
pub const RECORDINGS_WAIT: Duration = Duration::from_millis(1500);

/// Most recordings `/recordings` lists (and caches summaries of).
pub const MAX_RECORDINGS: usize = 1024;

/// Answers with an embedded asset. The browser revalidates each load
/// (`no-cache`), so a new binary's page is never mixed with an old one's.
pub fn serve(asset: &Asset) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(asset.body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    response
}

/// One recording as `/recordings` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Recording {
    /// Its plain name in `--replay-dir` (`/replay?source=`).
    pub name: String,
    /// Its format, as `tickcast inspect` names it (`binance capture`, ...).
    pub format: String,
    /// Event time of its first event, ns since the Unix epoch, as a string.
    pub first_ts_event: String,
    /// Event time of its last event, ns, as a string.
    pub last_ts_event: String,
    /// Events it holds (up to a corrupt spot, if any).
    pub events: u64,
    /// Its symbols, by name.
    pub symbols: Vec<String>,
}

/// Summaries already made, by path, with the size and modification time
/// they were made at.
type Cache = Mutex<HashMap<PathBuf, (u64, Option<SystemTime>, Arc<Recording>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// `/recordings`: see the module doc.
pub async fn recordings(ctx: Arc<ServerCtx>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let grant = match authenticate(&ctx, &req) {
        Ok(grant) => grant,
        Err(e) => return unauthorized(&ctx, &e),
    };
    let Some(dir) = ctx.config.replay_dir.clone() else {
        return json(&[], false);
    };
    // One listing at a time: a second request while one runs is pending.
    static LISTING: AtomicBool = AtomicBool::new(false);
    if LISTING.swap(true, Ordering::AcqRel) {
        return json(&[], true);
    }
    let Ok(permit) = ctx.replay_checks.clone().try_acquire_owned() else {
        LISTING.store(false, Ordering::Release);
        let busy = format!("too many replay requests being checked ({MAX_REPLAY_CHECKS}): try again later\n");
        return text(StatusCode::SERVICE_UNAVAILABLE, busy);
    };
    let listed = blocking_within("recordings", RECORDINGS_WAIT, move || {
        let _permit = permit;
        let list = list(&dir);
        LISTING.store(false, Ordering::Release);
        list
    });
    let Ok(mut list) = listed.await else {
        return json(&[], true);
    };
    if let Some(grant) = grant {
        list.retain(|r| grant.entitlements.allows_replay(&r.name));
    }
    json(&list, false)
}

/// The `/recordings` answer.
#[derive(Serialize)]
struct Listing<'a> {
    recordings: &'a [Recording],
    pending: bool,
}

fn json(recordings: &[Recording], pending: bool) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&Listing { recordings, pending }).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The recordings in `dir` that `/replay` would open, summarized (blocking
/// file I/O: call it off the async workers).
pub fn list(dir: &Path) -> Vec<Recording> {
    let Ok(root) = dir.canonicalize() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(&root) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|name| !name.starts_with('.')).collect();
    names.sort();
    names.truncate(MAX_RECORDINGS);
    names.into_iter().filter_map(|name| summary(&root, name)).map(|r| (*r).clone()).collect()
}

/// One entry's summary, from the cache when the file has not changed; None
/// for what `/replay` would refuse (a symlink out of the directory,
/// anything but a file or a directory, an unknown format).
fn summary(root: &Path, name: String) -> Option<Arc<Recording>> {
    let path = root.join(&name).canonicalize().ok()?;
    if !path.starts_with(root) {
        return None;
    }
    let meta = std::fs::metadata(&path).ok()?;
    if !(meta.is_file() || meta.is_dir()) {
        return None;
    }
    let stamp = (meta.len(), meta.modified().ok());
    if let Some((len, modified, cached)) = cache().lock().get(&path) {
        if (*len, *modified) == stamp {
            return Some(cached.clone());
        }
    }
    recorded::detect(&path).ok()?;
    let s = inspect::summarize(&path, 0).ok()?;
    let first = s.symbols.values().map(|v| v.first_ts_event).min().unwrap_or(0);
    let last = s.symbols.values().map(|v| v.last_ts_event).max().unwrap_or(0);
    let recording = Arc::new(Recording {
        name,
        format: s.format,
        first_ts_event: first.to_string(),
        last_ts_event: last.to_string(),
        events: s.events,
        symbols: s.symbols.into_keys().collect(),
    });
    let mut cache = cache().lock();
    if cache.len() >= MAX_RECORDINGS {
        cache.clear();
    }
    cache.insert(path, (stamp.0, stamp.1, recording.clone()));
    Some(recording)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_embedded_and_names_its_assets() {
        let html = std::str::from_utf8(INDEX_HTML.body).unwrap();
        assert!(html.contains("/assets/app.js") && html.contains("/assets/app.css"));
        assert!(APP_JS.body.len() > 10_000, "the bundle is built");
        assert!(!APP_CSS.body.is_empty());
    }

    #[test]
    fn the_binance_captures_are_listed_with_their_range_and_symbols() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/binance");
        let list = list(&dir);
        let names: Vec<&str> = list.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["btcusdt_20240808.gz", "ethusdt_20240808.gz"], "the license file is no recording");
        let eth = &list[1];
        assert_eq!(eth.symbols, ["ETHUSDT"]);
        assert_eq!(eth.events, 33616);
        assert_eq!(eth.first_ts_event, "1723161254024619568");
        assert!(eth.last_ts_event.parse::<u64>().unwrap() > eth.first_ts_event.parse::<u64>().unwrap());
    }
}
