//! Reading the server's `/metrics` (Prometheus text exposition format):
//! the load generator scrapes its counters, tests assert on them.
//!
//! Imports: nothing.

/// Reads one unlabelled sample (or the first sample of a family) from
/// Prometheus text: `name` is either the whole key with its labels
/// (`tickcast_skipped_updates_total{kind="trade"}`) or a family name, whose
/// first sample is returned. `None` if absent or not a number.
pub fn scrape_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name || key.strip_prefix(name)?.starts_with('{')).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tickcast_ring_capacity Ring slots.\n# TYPE tickcast_ring_capacity gauge\n\
        tickcast_ring_capacity 8\n\
        tickcast_ring_capacity_extra 9\n\
        tickcast_skipped_updates_total{kind=\"trade\"} 3\n\
        tickcast_skipped_updates_total{kind=\"quote\"} 4\n\
        tickcast_bad_value x\n";

    #[test]
    fn exact_keys_and_first_samples_of_families_are_read() {
        assert_eq!(scrape_value(TEXT, "tickcast_ring_capacity"), Some(8.0), "not the longer name");
        assert_eq!(scrape_value(TEXT, "tickcast_skipped_updates_total{kind=\"quote\"}"), Some(4.0));
        assert_eq!(scrape_value(TEXT, "tickcast_skipped_updates_total"), Some(3.0), "first of the family");
        assert_eq!(scrape_value(TEXT, "tickcast_missing"), None);
        assert_eq!(scrape_value(TEXT, "tickcast_bad_value"), None);
    }
}
