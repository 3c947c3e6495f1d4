//! The architecture invariant "the core never does IO and never reads the clock", checked on the
//! source: every file under `src/core/` is read, its comments set aside, and each use of a module
//! that does IO or reads a clock, and each path out of the core, is named by file and line.
//!
//! The core may use `std` (but not its IO, process, environment or clock parts, nor sleep), the
//! pure libraries it is written with (`serde`, `chrono`, `thiserror`, `rustc_hash`; `postcard`
//! and `serde_json` in its unit tests), and `crate::core` itself: nothing else of the crate.

use std::path::{Path, PathBuf};

/// Text that must not appear in the core's code (comments aside): IO, processes, the
/// environment, sleeping or spawning threads, the clock, printing. (`std::thread::LocalKey` is
/// allowed: the id decoder's per-thread cache is memory, not IO.)
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::io",
    "std::net",
    "std::process",
    "std::env",
    "std::os",
    "SystemTime",
    "Instant::now",
    "Utc::now",
    "Local::now",
    "thread::sleep",
    "thread::spawn",
    "File::",
    "print!",
    "println!",
    "eprint!",
    "eprintln!",
    "dbg!",
    "#[path",
];

/// The crates a `use` in the core may start from (`crate` only as `crate::core`).
const ALLOWED_ROOTS: &[&str] = &[
    "std",
    "core",
    "alloc",
    "serde",
    "chrono",
    "thiserror",
    "rustc_hash",
    "postcard",
    "serde_json",
    "crate",
    "super",
    "self",
];

#[test]
fn the_core_does_no_io_reads_no_clock_and_uses_nothing_outside_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let files = rust_files(&dir);
    for expected in [
        "mod.rs",
        "transition.rs",
        "state.rs",
        "event.rs",
        "effect.rs",
        "spec.rs",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(expected)),
            "src/core/{expected} is missing: the check would prove nothing"
        );
    }
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(file);
        for (line, why) in violations(&text) {
            found.push(format!("{}:{line}: {why}", name.display()));
        }
    }
    assert!(
        found.is_empty(),
        "the core (src/core/) must do no IO, read no clock and use nothing outside it:\n{}",
        found.join("\n")
    );
}

/// The checker itself: it must see what it is for, and not what a comment says.
#[test]
fn the_purity_check_finds_planted_violations_and_ignores_comments() {
    let planted = "use std::fs::File;\n\
                   use std::{collections::BTreeMap, io::Read};\n\
                   use crate::store::Store;\n\
                   use crate::{core::id::JobId, Ledger};\n\
                   fn f() -> crate::Timestamp { chrono::Utc::now() }\n\
                   use ureq::Agent;\n\
                   fn g() { let _ = super::super::x; }\n";
    let lines: Vec<usize> = violations(planted).into_iter().map(|(l, _)| l).collect();
    for line in 1..=7 {
        assert!(lines.contains(&line), "line {line} not found: {lines:?}");
    }
    let clean = "// std::fs::read and Utc::now() in a comment\n\
                 /* crate::store, /* nested */ std::io */\n\
                 /// Doc: [`Ledger`](crate::Ledger), std::process::ExitStatus\n\
                 use crate::core::{effect::Effect, id::JobId};\n\
                 use std::{collections::BTreeMap, fmt, time::Duration};\n\
                 use super::state::JobState;\n\
                 #[serde(with = \"crate::core::time_serde::timestamp\")]\n\
                 fn h(s: &str) -> bool { s == \"//\" && '\"' == '\"' }\n";
    assert_eq!(violations(clean), vec![]);
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
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

/// Each violation in `source`: its line (1-based) and what it is.
fn violations(source: &str) -> Vec<(usize, String)> {
    // Strings kept (a `#[serde(with = "crate::…")]` names a module), and strings blanked (an
    // error message may say "use a shorter identifier").
    let code = strip_comments(source, false);
    let bare = strip_comments(source, true);
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut found = Vec::new();
    for needle in FORBIDDEN {
        for (at, _) in bare.match_indices(needle) {
            found.push((line_of(at), format!("`{needle}`")));
        }
    }
    // Paths out of the core written inline (`crate::X` other than `crate::core`, or up past it).
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if !use_statement_at(&bare, at)
            && !starts_with_segment(rest, "core")
            && !rest.starts_with('{')
        {
            found.push((
                line_of(at),
                format!("`crate::{}`: outside the core", segment(rest)),
            ));
        }
    }
    for (at, _) in code.match_indices("super::super") {
        found.push((line_of(at), "`super::super`: outside the core".to_string()));
    }
    // `use` statements, flattened to paths.
    let mut search = 0;
    while let Some(found_at) = find_use(&bare, search) {
        let end = bare[found_at..]
            .find(';')
            .map_or(code.len(), |e| found_at + e);
        let tree = &bare[found_at + "use ".len()..end];
        for path in flatten(tree.trim()) {
            let path = path.trim_start_matches("::");
            let root = segment(path);
            let outside = !ALLOWED_ROOTS.contains(&root)
                || (root == "crate"
                    && !starts_with_segment(&path["crate::".len().min(path.len())..], "core"));
            if outside {
                found.push((line_of(found_at), format!("`use {path}`: outside the core")));
            } else if let Some(needle) = FORBIDDEN.iter().find(|n| path.starts_with(**n)) {
                found.push((line_of(found_at), format!("`use {path}`: `{needle}`")));
            }
        }
        search = end;
    }
    found.sort();
    found.dedup();
    found
}

/// The next `use` keyword at or after `from` (a whole word).
fn find_use(code: &str, from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = code[at..].find("use ") {
        let i = at + i;
        let before = code[..i].chars().next_back();
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// Whether the `crate::` at `at` is inside a `use` statement (checked there, flattened).
fn use_statement_at(code: &str, at: usize) -> bool {
    let start = code[..at].rfind(';').map_or(0, |i| i + 1);
    let stmt = &code[start..at];
    find_use(stmt, 0).is_some()
}

fn starts_with_segment(path: &str, name: &str) -> bool {
    path.starts_with(name)
        && !path[name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
}

fn segment(path: &str) -> &str {
    let end = path
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(path.len());
    &path[..end]
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn flatten(tree: &str) -> Vec<String> {
    // Whitespace dropped, but `a as b` kept readable.
    let tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let tree = ["{", "}", ",", "::"].iter().fold(tree, |t, p| {
        t.replace(&format!(" {p}"), p).replace(&format!("{p} "), p)
    });
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.extend(
                    flatten(&inner[start..i])
                        .into_iter()
                        .map(|p| format!("{prefix}{p}")),
                );
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        out.extend(
            flatten(&inner[start..])
                .into_iter()
                .map(|p| format!("{prefix}{p}")),
        );
    }
    out
}

/// The source with every comment (line, doc, block, nested) blanked out, newlines kept; string
/// literals kept as they are (a `//` inside one is not a comment), or their contents blanked
/// too with `blank_strings`.
fn strip_comments(source: &str, blank_strings: bool) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body_start = j + 1;
            let rest: String = chars[body_start..].iter().collect();
            let end = rest.find(&close).map_or(chars.len(), |e| {
                body_start + rest[..e].chars().count() + close.len()
            });
            out.extend(
                chars[i..end]
                    .iter()
                    .map(|&c| if blank_strings { blank(c) } else { c }),
            );
            i = end;
        } else if c == '"' {
            out.push(c);
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    out.push(if blank_strings { ' ' } else { chars[i] });
                    i += 1;
                }
                out.push(if blank_strings {
                    blank(chars[i])
                } else {
                    chars[i]
                });
                i += 1;
            }
            if i < chars.len() {
                out.push('"');
                i += 1;
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\'', '\u{..}'), else a lifetime.
            let len = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map(|p| p + 3)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(3)
            } else {
                None
            };
            let len = len.unwrap_or(1).min(chars.len() - i);
            out.extend(&chars[i..i + len]);
            i += len;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}
