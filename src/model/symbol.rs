//! The symbol universe: names to dense ids and back, and what a valid
//! symbol name is.
//!
//! Feeds intern names as they first appear; the engine indexes its topics
//! by the dense id, so nothing on the hot path hashes a name.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// Dense id of a symbol, assigned by the [`SymbolTable`] in order of first
/// appearance. Topics are indexed by it, so the engine never hashes a name
/// on the hot path.
pub type SymbolId = u32;

/// Longest symbol name accepted from a feed or a client.
pub const MAX_SYMBOL_LEN: usize = 32;

/// Whether `name` is an acceptable symbol: 1 to [`MAX_SYMBOL_LEN`] bytes of
/// ASCII letters, digits and `. - _ / :` (enough for equities, futures,
/// crypto pairs and options roots).
pub fn is_valid_symbol(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SYMBOL_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':'))
}

/// The server-wide symbol universe: names to dense ids and back.
///
/// Feeds intern a name once (they keep their own cache), the engine looks up
/// the name of an id once when it creates the topic, and sessions resolve
/// client requests against it. Reads vastly outnumber writes, hence the
/// `RwLock`; no one holds it on a per-tick path.
#[derive(Default)]
pub struct SymbolTable {
    inner: RwLock<SymbolTableInner>,
}

#[derive(Default)]
struct SymbolTableInner {
    by_name: HashMap<Arc<str>, SymbolId>,
    names: Vec<Arc<str>>,
}

/// Why a symbol could not be interned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SymbolError {
    /// The name breaks [`is_valid_symbol`].
    #[error("invalid symbol name {0:?}: 1-32 characters of A-Z a-z 0-9 . - _ / :")]
    Invalid(String),
    /// The table already holds `--max-symbols` names.
    #[error("symbol table full ({0} symbols): raise --max-symbols")]
    Full(usize),
}

impl SymbolTable {
    /// Returns the id of `name`, adding it if it is new and fewer than
    /// `limit` symbols exist.
    pub fn intern(&self, name: &str, limit: usize) -> Result<SymbolId, SymbolError> {
        if let Some(&id) = self.inner.read().by_name.get(name) {
            return Ok(id);
        }
        if !is_valid_symbol(name) {
            return Err(SymbolError::Invalid(name.chars().take(64).collect()));
        }
        let mut inner = self.inner.write();
        if let Some(&id) = inner.by_name.get(name) {
            return Ok(id);
        }
        if inner.names.len() >= limit {
            return Err(SymbolError::Full(inner.names.len()));
        }
        let id = inner.names.len() as SymbolId;
        let name: Arc<str> = Arc::from(name);
        inner.names.push(name.clone());
        inner.by_name.insert(name, id);
        Ok(id)
    }

    /// The id of a known symbol.
    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.inner.read().by_name.get(name).copied()
    }

    /// The name of a known id.
    pub fn name(&self, id: SymbolId) -> Option<Arc<str>> {
        self.inner.read().names.get(id as usize).cloned()
    }

    /// Every known symbol, in id order.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.inner.read().names.clone()
    }

    /// How many symbols are known.
    pub fn len(&self) -> usize {
        self.inner.read().names.len()
    }

    /// Whether no symbol is known yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_bounded() {
        let table = SymbolTable::default();
        assert_eq!(table.intern("AAPL", 2), Ok(0));
        assert_eq!(table.intern("MSFT", 2), Ok(1));
        assert_eq!(table.intern("AAPL", 2), Ok(0));
        assert_eq!(table.intern("GOOG", 2), Err(SymbolError::Full(2)));
        assert_eq!(table.name(1).as_deref(), Some("MSFT"));
        assert_eq!(table.lookup("GOOG"), None);
    }

    #[test]
    fn symbol_names_are_validated() {
        assert!(is_valid_symbol("BTC-USDT"));
        assert!(is_valid_symbol("ESH1"));
        assert!(is_valid_symbol("BRK.B"));
        assert!(!is_valid_symbol(""));
        assert!(!is_valid_symbol("has space"));
        assert!(!is_valid_symbol("*"));
        assert!(!is_valid_symbol(&"X".repeat(33)));
        let table = SymbolTable::default();
        assert!(matches!(table.intern("a b", 10), Err(SymbolError::Invalid(_))));
    }
}
