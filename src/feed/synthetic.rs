//! `--feed synthetic` (the default): a random-walk market that needs no
//! set-up, for demos, load tests and development.
//!
//! In: `--symbols`, `--rate`, `--seed`. Out: ticks through a [`Publisher`].
//!
//! Each symbol has a realistic ticker, a starting price between $5 and
//! $900 on a one-cent grid, a spread of one to three cents, round-lot
//! sizes, and a ten-level book that stays consistent with the quote: when
//! the touch moves, the book update deletes the crossed and stale levels.
//! Updates are about 50 % quotes, 35 % book changes and 15 % trades (at the
//! touch, with the aggressor side). The rate is paced against the clock in
//! 1 ms steps; after a stall it catches up at most 100 ms worth, then
//! resumes pacing instead of bursting.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use fastrand::Rng;

use super::{FeedContext, FeedHandle, Publisher, SyntheticSettings};
use crate::model::{now_ns, BookDelta, Level, Quote, Side, SymbolId, Trade, Update};

/// Real-looking tickers for the first symbols; more get generated names.
const TICKERS: [&str; 100] = [
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "AVGO", "JPM", "LLY", "V", "UNH", "XOM", "MA",
    "JNJ", "PG", "HD", "COST", "MRK", "ABBV", "CVX", "CRM", "BAC", "NFLX", "AMD", "PEP", "KO", "WMT", "TMO", "ADBE",
    "LIN", "MCD", "CSCO", "ACN", "ABT", "ORCL", "INTU", "DHR", "WFC", "TXN", "QCOM", "VZ", "DIS", "PM", "AMGN", "IBM",
    "CAT", "NOW", "GE", "UBER", "PFE", "ISRG", "SPGI", "CMCSA", "AMAT", "UNP", "GS", "HON", "T", "RTX", "BKNG", "LOW",
    "NEE", "ELV", "INTC", "PGR", "SYK", "BLK", "TJX", "MS", "C", "LMT", "VRTX", "SCHW", "BA", "ADP", "MDT", "DE",
    "PLD", "REGN", "CB", "MU", "ADI", "LRCX", "BMY", "SBUX", "GILD", "MMC", "PANW", "CI", "AMT", "BX", "SO", "KLAC",
    "TMUS", "ZTS", "MO", "SNPS", "FI",
];

/// The name of synthetic symbol `i`: a real ticker for the first 100, then
/// four-letter names that are not in the list.
pub fn ticker(i: usize) -> String {
    match TICKERS.get(i) {
        Some(t) => (*t).to_owned(),
        None => {
            let mut n = i - TICKERS.len();
            let mut name = [b'A'; 4];
            name[0] = b'X';
            for c in name[1..].iter_mut().rev() {
                *c = b'A' + (n % 26) as u8;
                n /= 26;
            }
            let mut s = String::from_utf8_lossy(&name).into_owned();
            if n > 0 {
                s.push_str(&n.to_string());
            }
            s
        }
    }
}

const BOOK_LEVELS: i64 = 10;
const TICK: f64 = 0.01;

/// One symbol's market. Prices are integer cents internally, so every
/// price on the wire is exactly `cents / 100` as a double.
struct Market {
    id: SymbolId,
    bid: i64,
    spread: i64,
    bids: BTreeMap<i64, f64>,
    asks: BTreeMap<i64, f64>,
}

fn px(cents: i64) -> f64 {
    cents as f64 * TICK
}

fn lots(rng: &mut Rng, max: u32) -> f64 {
    (rng.u32(1..=max) * 100) as f64
}

impl Market {
    fn new(id: SymbolId, rng: &mut Rng) -> Market {
        let bid = rng.i64(500..90_000);
        let mut m = Market { id, bid, spread: rng.i64(1..=3), bids: BTreeMap::new(), asks: BTreeMap::new() };
        for k in 0..BOOK_LEVELS {
            m.bids.insert(bid - k, lots(rng, 50));
            m.asks.insert(bid + m.spread + k, lots(rng, 50));
        }
        m
    }

    fn ask(&self) -> i64 {
        self.bid + self.spread
    }

    fn quote(&mut self, rng: &mut Rng) -> Update {
        if rng.u8(0..5) == 0 {
            self.bid = (self.bid + if rng.bool() { 1 } else { -1 }).max(BOOK_LEVELS + 1);
            self.spread = rng.i64(1..=3);
        }
        let bid_sz = self.bids.get(&self.bid).copied().unwrap_or_else(|| lots(rng, 50));
        let ask = self.ask();
        let ask_sz = self.asks.get(&ask).copied().unwrap_or_else(|| lots(rng, 50));
        Update::Quote(Quote { bid: px(self.bid), bid_sz, ask: px(ask), ask_sz })
    }

    /// Re-sizes a few levels, adds the touch if missing, and deletes levels
    /// that crossed or fell out of the ten-level window.
    fn book(&mut self, rng: &mut Rng) -> Update {
        let (bid, ask) = (self.bid, self.ask());
        let mut delta = BookDelta::default();
        self.bids.retain(|&p, _| {
            let keep = p <= bid && p > bid - BOOK_LEVELS;
            if !keep {
                delta.bids.push(Level { px: px(p), sz: 0.0 });
            }
            keep
        });
        self.asks.retain(|&p, _| {
            let keep = p >= ask && p < ask + BOOK_LEVELS;
            if !keep {
                delta.asks.push(Level { px: px(p), sz: 0.0 });
            }
            keep
        });
        if let std::collections::btree_map::Entry::Vacant(level) = self.bids.entry(bid) {
            let sz = *level.insert(lots(rng, 50));
            delta.bids.push(Level { px: px(bid), sz });
        }
        if let std::collections::btree_map::Entry::Vacant(level) = self.asks.entry(ask) {
            let sz = *level.insert(lots(rng, 50));
            delta.asks.push(Level { px: px(ask), sz });
        }
        for _ in 0..rng.usize(1..=3) {
            let k = rng.i64(0..BOOK_LEVELS);
            let sz = lots(rng, 50);
            if rng.bool() {
                self.bids.insert(bid - k, sz);
                delta.bids.push(Level { px: px(bid - k), sz });
            } else {
                self.asks.insert(ask + k, sz);
                delta.asks.push(Level { px: px(ask + k), sz });
            }
        }
        Update::Book(delta)
    }

    fn trade(&mut self, rng: &mut Rng) -> Update {
        let buy = rng.bool();
        let (p, side) = if buy { (self.ask(), Side::Buy) } else { (self.bid, Side::Sell) };
        Update::Trade(Trade { px: px(p), sz: lots(rng, 10), side })
    }

    fn next(&mut self, rng: &mut Rng) -> Update {
        match rng.u8(0..100) {
            0..50 => self.quote(rng),
            50..85 => self.book(rng),
            _ => self.trade(rng),
        }
    }
}

/// Registers the symbols (so clients can subscribe before the first tick)
/// and starts the generator thread.
pub fn start(settings: SyntheticSettings, ctx: FeedContext) -> std::io::Result<FeedHandle> {
    let mut publisher = Publisher::new(ctx);
    let mut rng = Rng::with_seed(settings.seed);
    let mut markets = Vec::with_capacity(settings.symbols);
    for i in 0..settings.symbols {
        let id = publisher.symbol(&ticker(i)).map_err(|e| std::io::Error::other(e.to_string()))?;
        markets.push(Market::new(id, &mut rng));
    }
    tracing::info!(symbols = settings.symbols, rate = settings.rate, "synthetic feed started");
    let thread = thread::Builder::new()
        .name("feed-synthetic".into())
        .spawn(move || generate(publisher, markets, rng, settings.rate))?;
    Ok(FeedHandle { threads: vec![thread], local_addr: None, declared: None })
}

fn generate(mut publisher: Publisher, mut markets: Vec<Market>, mut rng: Rng, rate: f64) {
    let start = Instant::now();
    let mut emitted: u64 = 0;
    let max_catch_up = (rate * 0.1).max(1.0) as u64;
    while !publisher.context().stopping() {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        if due > emitted + max_catch_up {
            emitted = due - max_catch_up;
        }
        while emitted < due {
            let pick = rng.usize(0..markets.len());
            let m = &mut markets[pick];
            let update = m.next(&mut rng);
            if publisher.publish_in_burst(m.id, now_ns(), update).is_err() {
                return;
            }
            emitted += 1;
        }
        // The ticks due at this step are one burst.
        publisher.end_burst();
        // Sleep until the next tick is due, in steps of at most 1 ms.
        let next_due = (emitted + 1) as f64 / rate;
        let wait = (next_due - start.elapsed().as_secs_f64()).clamp(0.0, 0.001);
        if wait > 0.0 {
            thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Book;

    #[test]
    fn tickers_are_unique_and_valid() {
        let names: Vec<String> = (0..2000).map(ticker).collect();
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(names.iter().all(|n| crate::model::is_valid_symbol(n)));
        assert_eq!(names[0], "AAPL");
    }

    #[test]
    fn book_stays_consistent_with_the_quote() {
        let mut rng = Rng::with_seed(7);
        let mut m = Market::new(0, &mut rng);
        let mut book = Book::default();
        book.apply(&BookDelta {
            bids: m.bids.iter().map(|(&p, &s)| Level { px: px(p), sz: s }).collect(),
            asks: m.asks.iter().map(|(&p, &s)| Level { px: px(p), sz: s }).collect(),
        });
        for _ in 0..10_000 {
            match m.next(&mut rng) {
                Update::Book(d) => book.apply(&d),
                Update::Quote(q) => assert!(q.bid < q.ask && q.bid_sz > 0.0 && q.ask_sz > 0.0),
                Update::Trade(t) => assert!(t.sz >= 100.0),
            }
            // After a book update the client's book never crosses.
            if let (Some(b), Some(a)) = (book.bids(1).first(), book.asks(1).first()) {
                assert!(b.px < a.px, "crossed book {b:?} {a:?}");
            }
            assert!(book.bids(usize::MAX).len() <= (BOOK_LEVELS + 3) as usize);
        }
    }
}
