//! Keeps the module map in `src/lib.rs` true: data flows one way.
//!
//! The map is a table between `<!-- layers -->` markers in the crate doc:
//! each module, what it owns, and what it may import. This test reads it,
//! then reads every source file of every module and checks each `crate::`
//! path outside comments against it. Because a module may only import
//! modules listed above it, the table being in order is the proof that the
//! module graph has no cycle. It also checks that the product's
//! `[dependencies]` name neither the load generator nor the client
//! library, which depend on it and never the other way round.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The map: module -> modules it may import, in table order.
fn read_map(lib_rs: &str) -> Vec<(String, BTreeSet<String>)> {
    let start = lib_rs.find("<!-- layers -->").expect("src/lib.rs has a <!-- layers --> table");
    let end = lib_rs.find("<!-- /layers -->").expect("src/lib.rs closes the layers table");
    let mut map = Vec::new();
    for line in lib_rs[start..end].lines() {
        let line = line.trim_start_matches("//!").trim();
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | [`name`] | owns | may import |
        if cells.len() < 5 || !cells[1].starts_with("[`") {
            continue;
        }
        let name = cells[1].trim_start_matches("[`").trim_end_matches("`]").to_owned();
        let allowed =
            cells[3].split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<BTreeSet<_>>();
        map.push((name, allowed));
    }
    map
}

/// Every `.rs` file of module `name`: `src/name.rs` or `src/name/**`.
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src.join(format!("{name}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The top-level modules that code (not comments) in `text` names as
/// `crate::module`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // `$crate::` in macros, or a path inside a string, is not ours.
            let before = &rest[..i];
            if !name.is_empty() && !before.ends_with('$') && !before.ends_with(|c: char| c.is_alphanumeric()) {
                used.insert(name);
            }
            rest = after;
        }
    }
    used
}

#[test]
fn every_module_imports_only_what_the_map_in_lib_rs_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let map = read_map(&lib_rs);
    assert!(map.len() >= 10, "the layers table lists the modules: {map:?}");

    // The table is in order: each module may import only modules above it.
    let mut above = BTreeSet::new();
    for (name, allowed) in &map {
        let later: Vec<&String> = allowed.iter().filter(|m| !above.contains(*m)).collect();
        assert!(later.is_empty(), "{name} may import {later:?}, which the table lists below it (or not at all)");
        above.insert(name.clone());
    }

    // Every module of the crate is in the table.
    let declared: BTreeSet<String> = lib_rs
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();
    let mapped: BTreeSet<String> = map.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(declared, mapped, "src/lib.rs declares exactly the modules its map lists");

    // Every `crate::` path in each module's code is allowed.
    let mut violations = BTreeMap::new();
    for (name, allowed) in &map {
        let files = module_files(&src, name);
        assert!(!files.is_empty(), "no source file for module {name}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in crate_paths(&text) {
                if used != *name && !allowed.contains(&used) {
                    violations
                        .entry(file.strip_prefix(root).unwrap().display().to_string())
                        .or_insert_with(Vec::new)
                        .push(used);
                }
            }
        }
    }
    assert!(violations.is_empty(), "imports the map in src/lib.rs does not allow: {violations:#?}");
}

#[test]
fn the_product_does_not_depend_on_the_load_generator_or_the_client() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest.split("\n[dependencies]").nth(1).expect("a [dependencies] table");
    let deps = deps.split("\n[").next().unwrap_or(deps);
    for part in ["tickcast-loadgen", "tickcast-client"] {
        assert!(!deps.contains(part), "the product's [dependencies] name {part}");
    }
}

#[test]
fn the_checker_sees_imports_and_skips_comments() {
    let text = "use crate::wire::Encoding;\n// crate::server in a comment\n/// [`crate::session`] in a doc\nlet x = crate::model::now_ns(); // crate::engine\nmacro_rules! m { () => { $crate::sys::x() } }\n";
    let used = crate_paths(text);
    assert_eq!(used, ["model", "wire"].into_iter().map(String::from).collect());
}
