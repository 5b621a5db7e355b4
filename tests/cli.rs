//! The binary's operator surface: bad flags give clear messages and a
//! non-zero exit, never a panic; a taken port is a clean error.

use std::process::Command;

fn tickcast(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast")).args(args).output().expect("run tickcast");
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_invalid_value_is_reported_with_exit_code_2() {
    let (code, text) = tickcast(&["--symbols", "0", "--rate", "0", "--feed", "carrier-pigeon", "--ring-capacity", "1"]);
    assert_eq!(code, 2, "{text}");
    for needle in ["--symbols 0", "--rate 0", "carrier-pigeon", "--ring-capacity 1"] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
}

#[test]
fn unparsable_values_are_rejected_by_name() {
    let (code, text) = tickcast(&["--ping-interval", "often"]);
    assert_eq!(code, 2);
    assert!(text.contains("--ping-interval"), "{text}");
    let (code, text) = tickcast(&["--listen", "localhost"]);
    assert_eq!(code, 2);
    assert!(text.contains("--listen"), "{text}");
}

#[test]
fn environment_variables_are_read_and_validated() {
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast")).env("TICKCAST_BOOK_DEPTH", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--book-depth") && stderr.contains("depth 0 is not offered"), "{stderr}");
}

#[test]
fn a_taken_port_is_a_clean_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, text) = tickcast(&["--listen", &addr, "--log", "error"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cannot listen on"), "{text}");
}

#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    use std::process::Stdio;
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/binance/btcusdt_20240808.gz");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .args(["inspect", sample])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tickcast inspect");
    // `| head -0`: the reader goes away before the report is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("inspect ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn tools_name_bad_files_and_exit_1() {
    let (code, text) = tickcast(&["inspect", "/no/such/file.dbn"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/no/such/file.dbn"), "{text}");
    let (code, text) = tickcast(&["convert", "/no/such/capture.gz", "/tmp/tickcast-never-written"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/no/such/capture.gz"), "{text}");
    assert!(!std::path::Path::new("/tmp/tickcast-never-written").exists(), "nothing is created for a bad input");
}

#[test]
fn a_bad_symbols_file_fails_at_startup_naming_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("tickcast-cli-universe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.txt");
    let (code, text) = tickcast(&["--symbols-file", missing.to_str().unwrap(), "--log", "error"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("--symbols-file {}: cannot read", missing.display())), "{text}");

    let invalid = dir.join("invalid.txt");
    std::fs::write(&invalid, "# equities\nAAPL\n\nBRK B\n").unwrap();
    let (code, text) = tickcast(&["--symbols-file", invalid.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("--symbols-file {}:4: invalid symbol name \"BRK B\"", invalid.display())), "{text}");

    let many = dir.join("many.json");
    std::fs::write(&many, "[\"AAPL\",\n\"MSFT\",\n\"AAPL\",\n\"IBM\"]\n").unwrap();
    let (code, text) = tickcast(&["--symbols-file", many.to_str().unwrap(), "--max-symbols", "2", "--symbols", "2"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("{}:4: more than --max-symbols 2 distinct symbols", many.display())), "{text}");

    let malformed = dir.join("malformed.json");
    std::fs::write(&malformed, "[\"AAPL\",\n").unwrap();
    let (code, text) = tickcast(&["--symbols-file", malformed.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("malformed JSON"), "{text}");

    // Through the environment too, reported with every other bad value.
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .env("TICKCAST_SYMBOLS_FILE", &invalid)
        .args(["--max-connections", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid.txt:4") && stderr.contains("--max-connections 0"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
