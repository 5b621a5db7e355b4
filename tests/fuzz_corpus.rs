//! The fuzz corpus as a regression test, on stable Rust: every decoder of
//! outside input runs over the minimized corpus the fuzzer found
//! (`fuzz/corpus/<target>/`) and over every input that once crashed it
//! (`fuzz/regressions/<target>/`), with the same checks the fuzz targets
//! run (`fuzz/src/checks.rs`): no panic, no runaway allocation, no endless
//! read, and each decoder's own invariant.
//!
//! Fuzzing itself needs nightly: see docs/SECURITY.md.

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

/// The whole run should take a few seconds; far beyond that, a decoder got
/// slow on some input.
const BUDGET: Duration = Duration::from_secs(60);

#[test]
fn every_decoder_survives_its_corpus_and_past_crashes() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let start = Instant::now();
    for &(target, check) in checks::CHECKS {
        let mut inputs = 0;
        for kind in ["corpus", "regressions"] {
            let dir = fuzz.join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<_> = entries.map(|e| e.expect("a corpus entry").path()).collect();
            paths.sort();
            for path in paths {
                let data = std::fs::read(&path).expect("read a corpus file");
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{target}: {} fails its check", path.display());
                inputs += 1;
            }
        }
        assert!(inputs > 0, "{target}: no corpus under {}", fuzz.join("corpus").join(target).display());
    }
    assert!(start.elapsed() < BUDGET, "the corpus took {:?}", start.elapsed());
}
