//! A declared symbol universe: the names a `--symbols-file` says the server
//! carries, so clients can subscribe to a symbol before its first tick.
//!
//! In: the text of a symbols file, in one of two forms, told apart by its
//! first non-blank byte:
//! - one symbol per line; surrounding whitespace is trimmed, blank lines
//!   and lines starting with `#` are ignored;
//! - a JSON array of strings, exactly what `GET /symbols` returns (the
//!   first non-blank byte is `[`), so one server's universe can be saved
//!   and given to another.
//!
//! Out: the distinct names in file order (a duplicate is kept once, at its
//! first place), each checked with [`is_valid_symbol`], at most the
//! caller's limit (`--max-symbols`). Every problem is a [`UniverseError`]
//! that names the file and the line.
//!
//! The file is read once, whole, by [`load`], at startup before any thread
//! of the server runs (the binary calls it while validating its flags),
//! never on an async worker. It is bounded by [`MAX_SYMBOLS_FILE_BYTES`].

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::symbol::{is_valid_symbol, MAX_SYMBOL_LEN};

/// Largest symbols file accepted: 64 MiB. A file is read whole into memory
/// at startup, so it is bounded like every other input. 64 MiB holds about
/// two million names of the longest length ([`MAX_SYMBOL_LEN`] bytes), or
/// the `--max-symbols` ceiling of 10,000,000 names of up to 5 characters,
/// with room for comments. Larger files are refused before they are read.
pub const MAX_SYMBOLS_FILE_BYTES: u64 = 64 << 20;

/// What is wrong at one line of a symbols file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UniverseProblem {
    /// The name breaks [`is_valid_symbol`].
    #[error("invalid symbol name {0:?}: 1-{MAX_SYMBOL_LEN} characters of A-Z a-z 0-9 . - _ / :")]
    Invalid(String),
    /// More distinct names than the limit.
    #[error("more than --max-symbols {0} distinct symbols")]
    TooMany(usize),
    /// The bytes are not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// The file starts with `[` but is not a JSON array of strings.
    #[error(
        "malformed JSON (a symbols file starting with `[` is a JSON array of strings, as GET /symbols returns): {0}"
    )]
    Json(String),
    /// An element of the JSON array is not a string.
    #[error("element {index} of the JSON array is not a string")]
    NotAString {
        /// 1-based position in the array.
        index: usize,
    },
}

/// Why a symbols file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum UniverseError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_SYMBOLS_FILE_BYTES`].
    #[error("{}: larger than {} bytes (the most a symbols file may hold)", path.display(), MAX_SYMBOLS_FILE_BYTES)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line of the file is wrong.
    #[error("{}:{line}: {problem}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong there.
        problem: UniverseProblem,
    },
}

/// A problem found by [`parse`], at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub problem: UniverseProblem,
}

/// Reads and parses the symbols file at `path`: at most `limit` distinct
/// names, in file order. Blocking file I/O: call it at startup, not on an
/// async worker.
pub fn load(path: &Path, limit: usize) -> Result<Vec<String>, UniverseError> {
    let read = |source| UniverseError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read)?;
    if file.metadata().map_err(read)?.len() > MAX_SYMBOLS_FILE_BYTES {
        return Err(UniverseError::TooLarge { path: path.to_owned() });
    }
    // Bounded again while reading: the file may grow, or be a pipe.
    let mut bytes = Vec::new();
    file.take(MAX_SYMBOLS_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > MAX_SYMBOLS_FILE_BYTES {
        return Err(UniverseError::TooLarge { path: path.to_owned() });
    }
    parse_bytes(&bytes, limit).map_err(|e| UniverseError::Bad {
        path: path.to_owned(),
        line: e.line,
        problem: e.problem,
    })
}

/// Parses the bytes of a symbols file (see the module doc).
pub fn parse_bytes(bytes: &[u8], limit: usize) -> Result<Vec<String>, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, limit),
        Err(e) => Err(ParseError { line: line_of(bytes, e.valid_up_to()), problem: UniverseProblem::NotUtf8 }),
    }
}

/// Parses the text of a symbols file (see the module doc).
pub fn parse(text: &str, limit: usize) -> Result<Vec<String>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut names = Names { seen: HashSet::new(), out: Vec::new(), limit };
    if text.trim_start().starts_with('[') {
        parse_json(text, &mut names)?;
    } else {
        for (i, line) in text.lines().enumerate() {
            let name = line.trim();
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            names.push(name, i + 1)?;
        }
    }
    Ok(names.out)
}

/// The distinct names so far, in order, and the limit on them.
struct Names {
    seen: HashSet<String>,
    out: Vec<String>,
    limit: usize,
}

impl Names {
    fn push(&mut self, name: &str, line: usize) -> Result<(), ParseError> {
        if !is_valid_symbol(name) {
            let shown = name.chars().take(64).collect();
            return Err(ParseError { line, problem: UniverseProblem::Invalid(shown) });
        }
        if self.seen.contains(name) {
            return Ok(());
        }
        if self.out.len() >= self.limit {
            return Err(ParseError { line, problem: UniverseProblem::TooMany(self.limit) });
        }
        self.seen.insert(name.to_owned());
        self.out.push(name.to_owned());
        Ok(())
    }
}

/// The JSON form: each element is kept raw first, so an invalid one is
/// reported at its own line.
fn parse_json(text: &str, names: &mut Names) -> Result<(), ParseError> {
    let elements: Vec<&serde_json::value::RawValue> = serde_json::from_str(text)
        .map_err(|e| ParseError { line: e.line().max(1), problem: UniverseProblem::Json(e.to_string()) })?;
    for (i, raw) in elements.iter().enumerate() {
        // `raw` borrows from `text`: its offset there gives its line.
        let offset = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        let line = line_of(text.as_bytes(), offset);
        let name: String = serde_json::from_str(raw.get())
            .map_err(|_| ParseError { line, problem: UniverseProblem::NotAString { index: i + 1 } })?;
        names.push(&name, line)?;
    }
    Ok(())
}

/// The 1-based line of byte `offset`.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())].iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str, limit: usize) -> (usize, UniverseProblem) {
        let e = parse(text, limit).unwrap_err();
        (e.line, e.problem)
    }

    #[test]
    fn lines_are_trimmed_and_comments_skipped() {
        let text = "# equities\nAAPL\n\n  MSFT \t\r\n# crypto\nBTC-USDT\nAAPL\n";
        assert_eq!(parse(text, 10).unwrap(), ["AAPL", "MSFT", "BTC-USDT"]);
        assert_eq!(parse("", 10).unwrap(), Vec::<String>::new());
        assert_eq!(parse("\n# only a comment\n", 10).unwrap(), Vec::<String>::new());
        assert_eq!(parse("\u{feff}ESH1", 10).unwrap(), ["ESH1"]);
    }

    #[test]
    fn the_json_of_get_symbols_is_read() {
        assert_eq!(parse(r#"["AAPL","MSFT","AAPL"]"#, 10).unwrap(), ["AAPL", "MSFT"]);
        assert_eq!(parse("  \n[\n  \"ETHUSDT\",\n  \"BTCUSDT\"\n]\n", 10).unwrap(), ["ETHUSDT", "BTCUSDT"]);
        assert_eq!(parse("[]", 10).unwrap(), Vec::<String>::new());
        // Escapes are decoded before the name is checked.
        assert_eq!(parse(r#"["\u0041APL"]"#, 10).unwrap(), ["AAPL"]);
    }

    #[test]
    fn an_invalid_name_is_reported_at_its_line() {
        assert_eq!(problem("AAPL\n\nBRK B\n", 10), (3, UniverseProblem::Invalid("BRK B".into())));
        assert_eq!(problem("*\n", 10), (1, UniverseProblem::Invalid("*".into())));
        let long = "X".repeat(MAX_SYMBOL_LEN + 1);
        assert_eq!(problem(&format!("A\n{long}\n"), 10), (2, UniverseProblem::Invalid(long)));
        assert_eq!(problem("[\n\"AAPL\",\n\"a b\"\n]", 10), (3, UniverseProblem::Invalid("a b".into())));
        assert_eq!(problem("[\n\"AAPL\",\n\"\"]", 10), (3, UniverseProblem::Invalid(String::new())));
    }

    #[test]
    fn the_limit_counts_distinct_names() {
        assert_eq!(parse("A\nB\nA\nB\n", 2).unwrap(), ["A", "B"]);
        assert_eq!(problem("A\nB\nA\nC\n", 2), (4, UniverseProblem::TooMany(2)));
        assert_eq!(problem("[\"A\",\n\"B\"]", 1), (2, UniverseProblem::TooMany(1)));
    }

    #[test]
    fn malformed_json_and_bytes_are_errors() {
        let (line, p) = problem("[\"AAPL\",\n\"MSFT\"", 10);
        assert_eq!(line, 2);
        assert!(matches!(p, UniverseProblem::Json(_)), "{p:?}");
        assert!(matches!(problem("[\"A\"] trailing", 10).1, UniverseProblem::Json(_)));
        assert!(matches!(problem("{\"A\": 1}", 10).1, UniverseProblem::Invalid(_)), "not JSON: a line");
        assert_eq!(problem("[\"A\",\n 5]", 10), (2, UniverseProblem::NotAString { index: 2 }));
        let e = parse_bytes(b"AAPL\nMS\xffFT\n", 10).unwrap_err();
        assert_eq!((e.line, e.problem), (2, UniverseProblem::NotUtf8));
    }

    #[test]
    fn load_names_the_file() {
        let dir =
            std::env::temp_dir().join(format!("tickcast-universe-{}-{}", std::process::id(), super::super::now_ns()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("symbols.txt");
        std::fs::write(&path, "AAPL\nno good\n").unwrap();
        let e = load(&path, 10).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}:2: invalid symbol name \"no good\"", path.display())), "{e}");
        std::fs::write(&path, "AAPL\nMSFT\n").unwrap();
        assert_eq!(load(&path, 10).unwrap(), ["AAPL", "MSFT"]);
        let big = std::fs::File::create(&path).unwrap();
        big.set_len(MAX_SYMBOLS_FILE_BYTES + 1).unwrap();
        assert!(matches!(load(&path, 10), Err(UniverseError::TooLarge { .. })));
        let missing = dir.join("missing.txt");
        let e = load(&missing, 10).unwrap_err();
        assert!(matches!(&e, UniverseError::Read { path, .. } if *path == missing), "{e}");
        assert!(e.to_string().contains("missing.txt: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
