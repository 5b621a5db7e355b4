//! The checks the fuzz targets run; see `checks.rs` (shared with
//! `tests/fuzz_corpus.rs`, the stable-Rust regression run over the corpus).

pub mod checks;
