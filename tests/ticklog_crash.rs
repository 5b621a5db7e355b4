//! A real crash of the tick log writer: a child process appends as fast as
//! it can and is killed with SIGKILL mid-write, three times into the same
//! directory. Reopening must cut whatever torn tail each kill left, and the
//! reader must then get every complete record back, intact and in order.
//!
//! The child is this test binary itself, re-executed to run the ignored
//! test `crash_child` with `TICKLOG_CRASH_DIR` set, so no server or helper
//! binary is needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tickcast::model::{BookDelta, Level, Quote, Side, Trade, Update};
use tickcast::recorded::ticklog::{
    segment_paths, Fsync, LogTick, TickLogReader, TickLogWriter, WriterOptions, HEADER_LEN,
};
use tickcast::recorded::{Gap, Source};

const DIR_ENV: &str = "TICKLOG_CRASH_DIR";
const SYMBOLS: [&str; 3] = ["AAA", "BRK.B", "BTC-USDT"];
/// How long the parent lets each child write before killing it.
const RUN_FOR: [Duration; 3] = [Duration::from_millis(300), Duration::from_millis(550), Duration::from_millis(800)];

/// The tick a child appends as seq `seq` of symbol `sym`: derived from both,
/// so the parent can check every record it reads back.
fn update_for(sym: usize, seq: u64) -> Update {
    let px = 100.0 * (sym + 1) as f64 + (seq % 1000) as f64 * 0.25;
    match seq % 3 {
        0 => Update::Quote(Quote { bid: px, bid_sz: seq as f64, ask: px + 0.25, ask_sz: sym as f64 + 0.5 }),
        1 => {
            let level = |i: u64| Level { px: px + i as f64, sz: (seq + i) as f64 };
            Update::Book(BookDelta {
                bids: (0..seq % 5).map(level).collect(),
                asks: (0..seq % 7).map(|i| level(i + 10)).collect(),
            })
        }
        _ => {
            let side = [Side::Unknown, Side::Buy, Side::Sell][(seq % 3) as usize];
            Update::Trade(Trade { px, sz: seq as f64 * 0.001, side })
        }
    }
}

fn options() -> WriterOptions {
    WriterOptions { segment_bytes: 4 << 20, segment_age: Duration::from_secs(3600), fsync: Fsync::Never }
}

/// Writes forever (well, 60 s at most, should the parent die) when run as
/// the child; a no-op otherwise.
#[test]
#[ignore = "the child process of kill_9_mid_write; does nothing without TICKLOG_CRASH_DIR"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let (mut writer, _) = TickLogWriter::open(Path::new(&dir), options()).unwrap();
    let started = Instant::now();
    let mut seqs = [0u64; 3];
    for i in 0u64.. {
        let sym = ((i ^ (i >> 2)) % 3) as usize;
        seqs[sym] += 1;
        let seq = seqs[sym];
        let update = update_for(sym, seq);
        let tick = LogTick { sym: SYMBOLS[sym], seq, ts_event: seq, ts_ingest: i, update: &update };
        writer.append(&tick).unwrap();
        if i % 100 == 99 {
            writer.flush().unwrap();
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
    }
}

/// Kills the child if the parent panics first.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a segment other than those in `before` has records: the child
/// is up and writing.
fn child_is_writing(dir: &Path, before: &[PathBuf]) -> bool {
    segment_paths(dir)
        .unwrap_or_default()
        .iter()
        .any(|p| !before.contains(p) && std::fs::metadata(p).map(|m| m.len() > HEADER_LEN as u64).unwrap_or(false))
}

#[test]
fn kill_9_mid_write() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = TempDir(std::env::temp_dir().join(format!("tickcast-ticklog-crash-{}-{nanos}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let exe = std::env::current_exe().unwrap();

    for (cycle, run_for) in RUN_FOR.iter().enumerate() {
        let before = segment_paths(&dir.0).unwrap();
        let child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--ignored"])
            .env(DIR_ENV, &dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut guard = KillOnDrop(Some(child));
        // Start the clock once the child writes, so a slow start on a busy
        // machine does not make it die before its first record.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !child_is_writing(&dir.0, &before) {
            assert!(Instant::now() < deadline, "the child wrote nothing in 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(*run_for);
        let mut child = guard.0.take().unwrap();
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                output.status.signal(),
                Some(9),
                "the child should still have been writing when killed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            );
        }

        let (writer, recovery) = TickLogWriter::open(&dir.0, options()).unwrap();
        match &recovery {
            Some(r) => println!(
                "crash {}: cut {} bytes from {} at offset {}",
                cycle + 1,
                r.dropped_bytes,
                r.path.display(),
                r.offset
            ),
            None => println!("crash {}: cut 0 bytes (killed between writes)", cycle + 1),
        }
        writer.finish().unwrap();
    }

    // The parent's last open left an empty, complete segment: nothing more
    // to cut.
    let (writer, recovery) = TickLogWriter::open(&dir.0, options()).unwrap();
    assert_eq!(recovery, None);
    writer.finish().unwrap();

    let mut reader = TickLogReader::open(&dir.0).unwrap();
    let mut count = 0u64;
    let mut last: [Option<u64>; 3] = [None; 3];
    let mut runs = [0u32; 3];
    while let Some(event) = reader.next_event().unwrap() {
        count += 1;
        let name = reader.symbol(event.sym);
        let sym = SYMBOLS.iter().position(|s| **s == *name).unwrap_or_else(|| panic!("unknown symbol {name:?}"));
        let seq = event.seq.unwrap();
        if seq == 1 {
            runs[sym] += 1;
        } else {
            assert_eq!(last[sym].map(|s| s + 1), Some(seq), "{name}: seq {seq} does not follow {:?}", last[sym]);
        }
        last[sym] = Some(seq);
        assert_eq!(event.ts_event, seq);
        assert_eq!(event.update, update_for(sym, seq), "{name} seq {seq}");
    }
    let mut gaps: Vec<Gap> = Vec::new();
    reader.take_gaps(&mut gaps);
    assert!(gaps.is_empty(), "{gaps:?}");
    assert!(count > 0);
    for (sym, n) in runs.iter().enumerate() {
        assert!((1..=3).contains(n), "{}: {n} runs from seq 1", SYMBOLS[sym]);
    }
    let segments = segment_paths(&dir.0).unwrap();
    println!("read back {count} records from {} segments, runs per symbol {runs:?}", segments.len());
}
