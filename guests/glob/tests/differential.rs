//! Differential test: the agent's path expansion against this handler's
//! matcher.
//!
//! Host expansion here stands for what `host/src/source/path.rs` does with
//! the globs `needs` returns (each pattern's [`Pattern::host_glob`]): it
//! lists candidates with `glob::glob(pattern)` (glob 0.3; it matches one
//! component at a time) over the filesystem, and decides whether a path an
//! inotify event names matches with
//! `glob::Pattern::new(pattern)?.matches_path_with(path, HOST)`, the [`HOST`]
//! `MatchOptions` being the ones path.rs uses. The handler then keeps the
//! candidates its own matcher, [`Pattern::matches`], accepts. The two must
//! agree on every path: a path only the host lists is offered and never
//! selected (or worse, selected when it should not be, as `/dev/..` was);
//! a path only the handler matches is never offered.
//!
//! Patterns and paths are enumerated: every pattern of up to three atoms
//! from [`ATOMS`] (literals, `?`, `*`, `**`, classes, ranges, `[!a]`,
//! `[^a]`, escapes, `]` first in a class (refused here), leading dots),
//! two- and three-component patterns (`//` and a trailing `/` among them),
//! and a tree of files named with the characters patterns treat specially.
//! The places where the `glob` crate reads the same *text* differently
//! (which is why `host_glob` exists) are pinned one by one at the end, as
//! `guests/glob/README.md` and `src/pattern.rs` document them, and no other
//! shows up over the set.

use std::collections::BTreeSet;
use std::path::Path;

use devsieve_glob::pattern::Pattern;

/// The `MatchOptions` of `host/src/source/path.rs` (`MATCHING`).
const HOST: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

/// What one pattern component is made of.
const ATOMS: [&str; 20] = [
    "a", "b", ".", "?", "*", "**", "[ab.]", "[a-b]", "[.-b]", "[!a]", "[^a]", "[!.]", r"\*", r"\[", r"\a", r"\\",
    r"[\]a]", r"[\-!]", "[]a]", "[-a]",
];

/// Characters file names are made of: the pattern syntax among them.
const NAME_CHARS: [char; 11] = ['a', 'b', '.', '*', '?', '[', ']', '\\', '^', '!', '-'];

/// Directories of the tree (level 1), each with [`SUB_FILES`] and a
/// directory `s` holding [`DEEP_FILES`].
const DIRS: [&str; 4] = ["d", ".d", "*d", "[d]"];
const SUB_FILES: [&str; 8] = ["a", "b", ".a", "ab", "*", "[", "\\", "!"];
const DEEP_FILES: [&str; 2] = ["a", ".a"];

/// Patterns for the directory level of multi-component patterns.
const DIR_PATTERNS: [&str; 10] = ["d", "*", "?", ".*", "?d", "*d", r"\*d", r"[\[]d]", "[.d]*", "[!.]*"];

fn sequences(atoms: &[&str], max: usize) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let mut last = vec![String::new()];
    for _ in 0..max {
        last = last.iter().flat_map(|head| atoms.iter().map(move |atom| format!("{head}{atom}"))).collect();
        all.extend(last.iter().cloned());
    }
    all
}

/// Single-component file names: up to two of [`NAME_CHARS`], up to three of `a`, `b`, `.`.
fn names() -> Vec<String> {
    let chars: Vec<String> = NAME_CHARS.iter().map(char::to_string).collect();
    let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
    let mut names: BTreeSet<String> = sequences(&chars, 2).into_iter().collect();
    names.extend(sequences(&["a", "b", "."], 3));
    names.retain(|n| n != "." && n != "..");
    names.into_iter().collect()
}

/// Every path of the tree, relative to its root.
fn tree_paths() -> Vec<String> {
    let mut paths = names();
    for dir in DIRS {
        paths.push(dir.to_string());
        paths.extend(SUB_FILES.iter().map(|f| format!("{dir}/{f}")));
        paths.push(format!("{dir}/s"));
        paths.extend(DEEP_FILES.iter().map(|f| format!("{dir}/s/{f}")));
    }
    paths
}

/// The relative patterns compared: one, two and three components.
fn patterns() -> Vec<String> {
    let mut patterns = sequences(&ATOMS, 3);
    let files = sequences(&ATOMS, 2);
    for dir in DIR_PATTERNS {
        patterns.extend(files.iter().map(|f| format!("{dir}/{f}")));
        for middle in ["s", "*", "?", "[!.]"] {
            patterns.extend(["a", "*", ".*", "?a", "[.]a"].iter().map(|f| format!("{dir}/{middle}/{f}")));
        }
    }
    // Empty components and a trailing `/` (refused).
    patterns.extend(["d//a", "*//*", "d///s//.a", "/d/*", "d/", "*/", "d/s/"].map(String::from));
    patterns
}

/// A temporary directory holding [`tree_paths`] (directories for [`DIRS`]
/// and `s`, empty files for the rest), and its path as text.
fn tree() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new().prefix("devsieve-glob-differential").tempdir().expect("temporary directory");
    let root = dir.path().to_str().expect("UTF-8 temporary path").to_string();
    assert!(!root.contains(['*', '?', '[', ']', '\\']), "the root {root} must hold no pattern syntax");
    for path in tree_paths() {
        let full = dir.path().join(&path);
        let is_dir = DIRS.contains(&path.as_str()) || path.ends_with("/s");
        if is_dir { std::fs::create_dir(&full) } else { std::fs::write(&full, b"") }
            .unwrap_or_else(|e| panic!("creating {}: {e}", full.display()));
    }
    (dir, root)
}

/// What `glob::glob` lists for `pattern`, as text.
fn expand(pattern: &str) -> BTreeSet<String> {
    glob::glob(pattern)
        .unwrap_or_else(|e| panic!("glob::glob refused `{pattern}`: {e}"))
        .map(|entry| entry.expect("readable").to_str().expect("UTF-8 path").to_string())
        .collect()
}

#[test]
fn host_expansion_and_the_handler_agree_on_every_path() {
    let (_dir, root) = tree();
    let paths: Vec<String> = tree_paths().iter().map(|p| format!("{root}/{p}")).collect();
    let patterns = patterns();
    let (mut compared, mut refused, mut matched) = (0usize, 0usize, 0usize);
    let mut disagreements = Vec::new();
    for relative in &patterns {
        let text = format!("{root}/{relative}");
        let Ok(pattern) = Pattern::parse(&text) else {
            // `needs` refuses the config: the host never sees the pattern.
            refused += 1;
            continue;
        };
        let host_text = pattern.host_glob();
        let host = glob::Pattern::new(&host_text)
            .unwrap_or_else(|e| panic!("`{relative}`: the host refuses its glob `{host_text}`: {e}"));

        // (a) The inotify decision, path by path.
        let mut selected = BTreeSet::new();
        for path in &paths {
            let guest = pattern.matches(path);
            if guest != host.matches_path_with(Path::new(path), HOST) {
                disagreements.push(format!("`{relative}` (host `{host_text}`) on {path}: handler says {guest}"));
            }
            if guest {
                selected.insert(path.clone());
            }
            compared += 1;
        }
        matched += selected.len();

        // (b) The expansion over the tree.
        let listed = expand(&host_text);
        if listed != selected {
            let only_host: Vec<_> = listed.difference(&selected).collect();
            let only_guest: Vec<_> = selected.difference(&listed).collect();
            disagreements.push(format!(
                "`{relative}` (host `{host_text}`): only listed {only_host:?}, only matched {only_guest:?}"
            ));
        }
        if disagreements.len() > 20 {
            break;
        }
    }
    assert!(disagreements.is_empty(), "host and handler disagree:\n{}", disagreements.join("\n"));
    println!("{} patterns ({refused} refused), {compared} pairs compared, {matched} matches", patterns.len());
    // Not vacuous: most patterns are compared, and match something.
    assert!(compared > 1_000_000 && matched > 50_000, "compared {compared} pairs, {matched} matches");
    assert!(refused > 0 && refused < patterns.len() / 2, "{refused} of {} patterns refused", patterns.len());
}

/// Handed the pattern text itself, the `glob` crate disagrees only where a
/// pattern uses what the documented differences below are about: `\`, `[^`,
/// `**`, a component starting with `.`, `//`. (The patterns the handler
/// refuses never reach it.)
#[test]
fn the_same_text_differs_only_in_the_documented_ways() {
    let (_dir, root) = tree();
    let paths: Vec<String> = tree_paths().iter().map(|p| format!("{root}/{p}")).collect();
    let documented = |p: &str| {
        p.contains(['\\', '^']) || p.contains("**") || p.contains("//") || p.split('/').any(|c| c.starts_with('.'))
    };
    let (mut differing, mut undocumented) = (0, Vec::new());
    for relative in patterns() {
        let text = format!("{root}/{relative}");
        let Ok(pattern) = Pattern::parse(&text) else { continue };
        let same = glob::Pattern::new(&text).is_ok_and(|host| {
            let selected: BTreeSet<String> = paths.iter().filter(|p| pattern.matches(p)).cloned().collect();
            paths.iter().all(|p| pattern.matches(p) == host.matches_path_with(Path::new(p), HOST))
                && glob::glob(&text).is_ok()
                && expand(&text) == selected
        });
        if !same {
            differing += 1;
            if !documented(&format!("/{relative}")) {
                undocumented.push(relative);
            }
        }
    }
    assert!(undocumented.is_empty(), "undocumented differences: {undocumented:?}");
    assert!(differing > 1000, "only {differing} patterns read differently");
}

// ---- What the `glob` crate makes of the same text: the documented differences ----

fn guest(pattern: &str, path: &str) -> bool {
    Pattern::parse(pattern).unwrap().matches(path)
}

fn host(pattern: &str, path: &str) -> bool {
    glob::Pattern::new(pattern).unwrap().matches_path_with(Path::new(path), HOST)
}

fn host_glob(pattern: &str) -> String {
    Pattern::parse(pattern).unwrap().host_glob()
}

/// `glob` has no escapes: `\` is a character like any other.
#[test]
fn difference_backslash_is_no_escape_in_glob() {
    assert!(guest(r"/d/a\*", "/d/a*") && !guest(r"/d/a\*", r"/d/a\b"));
    assert!(!host(r"/d/a\*", "/d/a*") && host(r"/d/a\*", r"/d/a\b"));
    assert_eq!(host_glob(r"/d/a\*\?\[\]\a\\"), r"/d/a[*][?][[]]a\");
    assert!(host("/d/a[*]", "/d/a*") && !host("/d/a[*]", "/d/ab"));
}

/// `glob` negates with `[!...]` only: `[^a]` is a class of `^` and `a`.
#[test]
fn difference_caret_does_not_negate_in_glob() {
    assert!(guest("/d/[^a]", "/d/b") && !guest("/d/[^a]", "/d/a"));
    assert!(!host("/d/[^a]", "/d/b") && host("/d/[^a]", "/d/a") && host("/d/[^a]", "/d/^"));
    assert_eq!(host_glob("/d/[^a]"), "/d/[!a]");
}

/// `glob` reads a `**` component as any number of directories, and refuses
/// `**` inside a component; here `**` is `*`, as in Go.
#[test]
fn difference_double_star_is_recursive_in_glob() {
    assert!(host("/d/**/x", "/d/x") && host("/d/**/x", "/d/a/b/x"));
    assert!(!guest("/d/**/x", "/d/x") && !guest("/d/**/x", "/d/a/b/x") && guest("/d/**/x", "/d/a/x"));
    assert!(glob::Pattern::new("/d/a**").is_err() && guest("/d/a**", "/d/ab"));
    assert_eq!(host_glob("/d/**/a**"), "/d/*/a*");
}

/// `glob::glob` lists the `.` and `..` entries for a wildcard component that
/// starts with a literal `.` (`/dev/.*` lists `/dev/..`, which is `/`); no
/// directory listing here holds them, and the handler never matches them.
#[test]
fn difference_glob_lists_dot_and_dot_dot() {
    let (_dir, root) = tree();
    let listed = expand(&format!("{root}/.*"));
    assert!(listed.contains(&format!("{root}/.")) && listed.contains(&format!("{root}/..")), "{listed:?}");
    assert!(!guest(&format!("{root}/.*"), &format!("{root}/..")));
    assert!(!guest("/d/.*", "/d/.") && !guest("/d/*/x", "/d/../x") && guest("/d/.*", "/d/.a"));
    // `host_glob` writes that `.` as a class, for which `glob` lists neither.
    assert_eq!(host_glob(&format!("{root}/.*")), format!("{root}/[.]*"));
    let listed = expand(&host_glob(&format!("{root}/.*")));
    assert!(listed.contains(&format!("{root}/.a")) && !listed.iter().any(|p| p.ends_with("/.") || p.ends_with("/..")));
    // A path an inotify event names is never `.` or `..`, but on one the
    // host's matcher would say yes.
    assert!(host("/d/[.]*", "/d/.."));
}

/// The handler refuses, as Go's `filepath.Match` does, classes `glob` takes:
/// `]` first (`glob`: a literal `]`), `-` first or last (`glob`: a literal
/// `-`); and, unlike Go, a reversed range (`glob` and Go: matches nothing)
/// and a class of `/` alone (never matches). Escaped, `]` and `-` work.
#[test]
fn difference_classes_the_handler_refuses() {
    for (pattern, path) in [("/d/[]a]", "/d/]"), ("/d/[-a]", "/d/-"), ("/d/[a-]", "/d/-")] {
        assert!(host(pattern, path), "{pattern}");
        assert!(Pattern::parse(pattern).is_err(), "{pattern}");
    }
    assert!(glob::Pattern::new("/d/[b-a]").is_ok() && Pattern::parse("/d/[b-a]").is_err());
    assert!(Pattern::parse("/d/[/]").is_err());
    assert_eq!(host_glob(r"/d/[\]a]"), "/d/[]a]");
    assert_eq!(host_glob(r"/d/[a\-]"), "/d/[a-]");
    assert_eq!(host_glob(r"/d/[\-\!]"), "/d/[-!]");
    assert_eq!(host_glob(r"/d/[\!a]"), "/d/[a!]");
    assert_eq!(host_glob(r"/d/[\!]"), "/d/!");
}

/// `glob::glob` lists only directories for a pattern ending in `/` (the
/// handler refuses it). It reads `//` as `/`, as the handler does, but
/// `matches_path_with` does not.
#[test]
fn difference_slashes_at_the_end_and_doubled_in_glob() {
    let (_dir, root) = tree();
    assert_eq!(expand(&format!("{root}/?/")), BTreeSet::from([format!("{root}/d")]));
    assert!(expand(&format!("{root}/?")).len() > 1);
    assert!(Pattern::parse(&format!("{root}/?/")).is_err());
    assert_eq!(expand(&format!("{root}/d//a")), BTreeSet::from([format!("{root}/d/a")]));
    assert!(guest(&format!("{root}/d//a"), &format!("{root}/d/a")));
    assert!(!host("/d//a", "/d/a") && host("/d//a", "/d//a"));
    assert_eq!(host_glob("/d//a"), "/d/a");
}

/// `glob::glob` splits a pattern at every `/`, a class's too: `[a/]` is no
/// pattern there. No class matches `/` anyway, and `host_glob` leaves it out.
#[test]
fn difference_slash_in_a_class_splits_the_pattern_in_glob() {
    assert!(glob::glob("/d/[a/]x").is_err());
    assert!(guest("/d/[a/]x", "/d/ax") && !guest("/d/[a/]x", "/d//x"));
    assert_eq!(host_glob("/d/[a/]x"), "/d/ax");
    assert_eq!(host_glob("/d/[.-0]"), "/d/[.0]");
    assert_eq!(host_glob("/d/[!/]"), "/d/?");
}
