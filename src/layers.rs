//! The layer order of the library's modules, checked against the sources: a module may use the
//! modules of the layers below its own, never one of its own layer or above. The order is the
//! one `docs/ARCHITECTURE.md` states (between its `layers` markers); this test reads it there, so
//! the page and the code cannot drift apart.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

const START: &str = "<!-- layers:start -->";
const END: &str = "<!-- layers:end -->";

/// Module name → layer (1 is the bottom), from the numbered list in the architecture page.
fn layers() -> BTreeMap<String, usize> {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md")).unwrap();
    let (_, rest) = page.split_once(START).expect("docs/ARCHITECTURE.md has the layers start marker");
    let (list, _) = rest.split_once(END).expect("docs/ARCHITECTURE.md has the layers end marker");
    let mut layers = BTreeMap::new();
    for line in list.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let (number, modules) = line.split_once(". ").unwrap_or_else(|| panic!("not `N. modules: why`: {line}"));
        let layer: usize = number.parse().unwrap_or_else(|_| panic!("not a layer number: {line}"));
        let modules = modules.split_once(':').map_or(modules, |(modules, _)| modules);
        for module in modules.split(',').map(|m| m.trim().trim_matches('`')) {
            assert!(layers.insert(module.to_owned(), layer).is_none(), "{module} is listed twice");
        }
    }
    layers
}

/// The modules `src/lib.rs` declares.
fn declared() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    lib.lines().filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_owned)).collect()
}

/// Every source file of a module (`src/{name}.rs`, or everything under `src/{name}/`).
fn files_of(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let single = src.join(format!("{module}.rs"));
    if single.exists() {
        return vec![single];
    }
    let mut files = Vec::new();
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The code of a file that ships: a `tests.rs` file is all tests (they may reach anywhere).
fn shipped(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    without_tests_and_comments(&std::fs::read_to_string(path).unwrap())
}

/// The text without its trailing `#[cfg(test)]` test module and without comment lines.
fn without_tests_and_comments(text: &str) -> String {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    code.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules a piece of code names through `crate::`.
fn used(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let name: String = code[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        found.push(name);
    }
    found
}

#[test]
fn every_module_is_in_one_layer_and_in_the_layout_list() {
    let layers = layers();
    let declared = declared();
    let mut listed: Vec<&String> = layers.keys().collect();
    listed.sort();
    let mut modules: Vec<&String> = declared.iter().collect();
    modules.sort();
    assert_eq!(listed, modules, "docs/ARCHITECTURE.md's layers and src/lib.rs's modules differ");
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let layout: String = lib.lines().filter(|line| line.starts_with("//!")).collect();
    for module in &declared {
        assert!(layout.contains(&format!("[`{module}`]")), "src/lib.rs's layout list does not name {module}");
    }
}

#[test]
fn no_module_uses_one_of_its_own_layer_or_above() {
    let layers = layers();
    let mut upward = Vec::new();
    for (module, &layer) in &layers {
        for file in files_of(module) {
            for name in used(&shipped(&file)) {
                if name == *module || name == "self" || name == "super" {
                    continue;
                }
                let Some(&other) = layers.get(&name) else {
                    upward.push(format!("{}: crate::{name} is in no layer", file.display()));
                    continue;
                };
                if other >= layer {
                    let relative = file.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&file).display().to_string();
                    upward.push(format!("{relative} (layer {layer}) uses crate::{name} (layer {other})"));
                }
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "imports must point down:\n{}", upward.join("\n"));
}

#[test]
fn the_check_reads_uses_and_paths_but_not_comments_or_tests() {
    let text = "//! See [`crate::node`].\nuse crate::proxy::wsdl;\nfn f() { crate::soap::g() }\n\
                #[cfg(test)]\nmod tests {\n    use crate::api;\n}\n";
    assert_eq!(used(&without_tests_and_comments(text)), ["proxy", "soap"]);
}

/// Names that mean input, output, a clock, randomness or Raft: none may appear in the registry's
/// shipped code.
const IMPURE: [&str; 13] = [
    "std::time",
    "Instant",
    "SystemTime",
    "std::fs",
    "std::net",
    "std::io",
    "std::env",
    "std::thread",
    "std::process",
    "tokio",
    "sled",
    "openraft",
    "rand",
];

/// The first impure name a piece of code holds, as a word of its own (so `operand` is no `rand`).
fn impure(code: &str) -> Option<&'static str> {
    IMPURE.into_iter().find(|name| {
        code.match_indices(name).any(|(at, _)| {
            let before = code[..at].chars().next_back();
            let after = code[at + name.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    })
}

#[test]
fn the_registry_does_no_io_reads_no_clock_and_knows_nothing_of_raft() {
    assert_eq!(impure("let t = std::time::Instant::now();"), Some("std::time"));
    assert_eq!(impure("use openraft::Entry;"), Some("openraft"));
    assert_eq!(impure("let operand = brand_new(tokio_like);"), None);
    let files = files_of("registry");
    assert!(files.len() > 3, "the registry's files are found: {files:?}");
    for file in files {
        let found = impure(&shipped(&file));
        assert_eq!(found, None, "{} names {found:?}", file.display());
    }
}
