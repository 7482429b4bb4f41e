//! Shell-style path patterns with the semantics of Go's `filepath.Match`,
//! which is what generic-device-plugin's globs mean:
//!
//! - `*` matches any run of characters except `/` (`**` is the same as `*`);
//! - `?` matches one character except `/`;
//! - `[...]` matches one character (never `/`) from a class of single
//!   characters and `lo-hi` ranges; `[^...]` negates it (`[!...]` too, as in
//!   the shell). A `]` or `-` in a class is escaped (`[\]\-]`); a class of
//!   `/` alone and a reversed range are errors;
//! - `\` escapes the next character.
//!
//! Everything else matches itself. A pattern must match the whole path, and
//! never matches a path with a `.` or `..` component (no directory listing
//! holds those; `/dev/..` is `/`). `//` is `/`; `.` and `..` components and
//! a trailing `/` are errors.
//!
//! # The agent's expansion
//!
//! The agent expands the globs `needs` returns with the `glob` crate
//! (`glob::glob`, and `glob::Pattern::matches_path_with` for a path an
//! inotify event names, `host/src/source/path.rs`), which reads the same text
//! differently: `\` is an ordinary character, `[^a]` is a class of `^` and
//! `a`, `]` may come first in a class and `-` first or last (both literal),
//! a `**` component crosses directories (`a**` is an error), a `/` in a class
//! splits the pattern, a wildcard component starting with a literal `.`
//! also lists the `.` and `..` entries, a trailing `/` lists directories
//! only (refused here), and `matches_path_with` reads `//` literally. So `needs` hands the agent
//! [`Pattern::host_glob`], the same pattern in the `glob` crate's syntax,
//! and `tests/differential.rs` checks that the two then agree on every path
//! and pins each of these differences.

use std::fmt;

/// A checked pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    Star,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// Why a pattern is malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // `**` means the same as `*` here.
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                '\\' => {
                    let escaped = *chars
                        .get(i + 1)
                        .ok_or_else(|| PatternError("the pattern ends with an unfinished `\\` escape".into()))?;
                    tokens.push(Token::Literal(escaped));
                    i += 2;
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i)?;
                    tokens.push(token);
                    i = next;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        // `//` is `/`, as in a path (and in gdp, whose Go `filepath.Glob`
        // cleans the directory part).
        tokens.dedup_by(|next, kept| *kept == Token::Literal('/') && *next == Token::Literal('/'));
        if tokens.len() > 1 && tokens.last() == Some(&Token::Literal('/')) {
            return Err(PatternError("a pattern must not end with `/`: remove it".into()));
        }
        if tokens
            .split(|t| *t == Token::Literal('/'))
            .any(|c| matches!(c, [Token::Literal('.')] | [Token::Literal('.'), Token::Literal('.')]))
        {
            return Err(PatternError("`.` and `..` components are not allowed: write the path without them".into()));
        }
        Ok(Pattern { tokens })
    }

    /// Does `name` match the whole pattern? Never if `name` has a `.` or
    /// `..` component: no directory listing holds those entries (Go's
    /// `filepath.Glob` never returns them), and `/dev/..` is `/`.
    pub fn matches(&self, name: &str) -> bool {
        if name.split('/').any(|component| component == "." || component == "..") {
            return false;
        }
        let name: Vec<char> = name.chars().collect();
        let p = &self.tokens;
        let (mut pi, mut ni) = (0usize, 0usize);
        // The last `*` seen and the name position it currently stops at.
        let mut star: Option<(usize, usize)> = None;
        while ni < name.len() {
            let c = name[ni];
            let step = match p.get(pi) {
                Some(Token::Star) => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                Some(Token::Any) => c != '/',
                Some(Token::Literal(l)) => *l == c,
                Some(Token::Class { negated, ranges }) => {
                    c != '/' && (ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                }
                None => false,
            };
            if step {
                pi += 1;
                ni += 1;
                continue;
            }
            // Let the last star take one more character, unless that is a
            // `/`. Extending an earlier star instead can never help: the
            // earliest match of what follows a star is always the best one.
            match star {
                Some((sp, sn)) if name[sn] != '/' => {
                    star = Some((sp, sn + 1));
                    pi = sp + 1;
                    ni = sn + 1;
                }
                _ => return false,
            }
        }
        p[pi..].iter().all(|t| *t == Token::Star)
    }

    /// The pattern in the syntax of the agent's path expansion (the `glob`
    /// crate, see the module doc), meaning the same paths: what `needs` asks
    /// the host to expand.
    pub fn host_glob(&self) -> String {
        let mut out = String::new();
        for (n, component) in self.tokens.split(|t| *t == Token::Literal('/')).enumerate() {
            if n > 0 {
                out.push('/');
            }
            let wild = component.iter().any(|t| !matches!(t, Token::Literal(_)));
            for (i, token) in component.iter().enumerate() {
                match token {
                    // `glob` adds `.` and `..` to the matches of a wildcard
                    // component that starts with a literal `.`; `[.]` is none.
                    Token::Literal('.') if i == 0 && wild => out.push_str("[.]"),
                    Token::Literal(c) => push_literal(&mut out, *c),
                    Token::Any => out.push('?'),
                    Token::Star => out.push('*'),
                    Token::Class { negated, ranges } => push_class(&mut out, *negated, ranges),
                }
            }
        }
        out
    }

    /// True if the pattern has no wildcards (it names one path).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }
}

fn parse_class(chars: &[char], open: usize) -> Result<(Token, usize), PatternError> {
    let unclosed = || PatternError("a `[` character class is not closed with `]`".into());
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('^') | Some('!'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let c = *chars.get(i).ok_or_else(unclosed)?;
        if c == ']' {
            if ranges.is_empty() {
                return Err(PatternError("a `[]` character class must not be empty".into()));
            }
            if !negated && ranges.iter().all(|&r| r == ('/', '/')) {
                return Err(PatternError("a `[/]` class never matches: no wildcard matches `/`".into()));
            }
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
            let (hi, next) = class_char(chars, i + 1)?;
            if hi < lo {
                return Err(PatternError(format!("the range `{lo}-{hi}` in a `[...]` class is reversed")));
            }
            ranges.push((lo, hi));
            i = next;
        } else {
            ranges.push((lo, lo));
        }
    }
}

fn class_char(chars: &[char], i: usize) -> Result<(char, usize), PatternError> {
    match chars.get(i) {
        Some('\\') => chars
            .get(i + 1)
            .map(|&c| (c, i + 2))
            .ok_or_else(|| PatternError("the pattern ends with an unfinished `\\` escape".into())),
        Some('-') => {
            Err(PatternError("a `-` in a `[...]` class must sit between two characters (escape it as `\\-`)".into()))
        }
        Some(&c) => Ok((c, i + 1)),
        None => Err(PatternError("a `[` character class is not closed with `]`".into())),
    }
}

/// Writes one character for `glob`, which has no `\\` escape: its
/// wildcards as a class of themselves.
fn push_literal(out: &mut String, c: char) {
    if matches!(c, '*' | '?' | '[') {
        out.extend(['[', c, ']']);
    } else {
        out.push(c);
    }
}

/// The characters `glob` reads specially in a class (`]` closes it unless
/// first, `!` negates it when first, `-` makes a range), and `/`, which no
/// class matches (and which would split the pattern there).
const CLASS_SPECIAL: [char; 4] = ['!', '-', '/', ']'];

/// Writes a class for `glob`: the special characters split out of the
/// ranges, `]` first, `!` never first, `-` last, `/` left out.
fn push_class(out: &mut String, negated: bool, ranges: &[(char, char)]) {
    let mut special = [false; CLASS_SPECIAL.len()];
    let mut plain: Vec<(char, char)> = Vec::new();
    for &(lo, hi) in ranges {
        let mut from = lo;
        for (k, &s) in CLASS_SPECIAL.iter().enumerate() {
            if lo <= s && s <= hi {
                special[k] = true;
                if from < s {
                    plain.push((from, char::from(s as u8 - 1)));
                }
                from = char::from(s as u8 + 1);
            }
        }
        if from <= hi {
            plain.push((from, hi));
        }
    }
    let [bang, dash, _, close] = special;
    // Up to two of the class's characters: is it none or one?
    let specials = [(bang, '!'), (dash, '-'), (close, ']')].into_iter().filter(|s| s.0).map(|s| s.1);
    let few: Vec<char> = plain.iter().flat_map(|&(lo, hi)| (lo..=hi).take(2)).chain(specials).take(2).collect();
    match (negated, few.as_slice()) {
        // `[^/]`: any character but `/`. (`[/]` is refused by `parse`.)
        (true, []) => return out.push('?'),
        // One character, written as itself: `[!]` would open a negated class.
        (false, &[c]) => return push_literal(out, c),
        _ => {}
    }
    out.push('[');
    if negated {
        out.push('!');
    }
    if close {
        out.push(']');
    }
    for (lo, hi) in plain {
        out.push(lo);
        if hi > lo {
            out.extend(['-', hi]);
        }
    }
    match (bang, dash) {
        // Nothing before `!`: `-` goes first, where it is no range either.
        (true, true) if !negated && !close && out.ends_with('[') => out.push_str("-!"),
        (true, true) => out.push_str("!-"),
        (true, false) => out.push('!'),
        (false, true) => out.push('-'),
        (false, false) => {}
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(m("/dev/fuse", "/dev/fuse"));
        assert!(!m("/dev/fuse", "/dev/fuse0"));
        assert!(!m("/dev/fuse0", "/dev/fuse"));
        assert!(m("/dev/ttyUSB*", "/dev/ttyUSB0"));
        assert!(m("/dev/ttyUSB*", "/dev/ttyUSB"));
        assert!(m("/dev/ttyUSB?", "/dev/ttyUSB7"));
        assert!(!m("/dev/ttyUSB?", "/dev/ttyUSB17"));
        assert!(m("/dev/*/by-id/*", "/dev/serial/by-id/usb-1a86"));
        assert!(m("*a*b", "aab"));
        assert!(m("a*b*c", "axbybc"));
        assert!(m("/dev/**", "/dev/x"));
    }

    #[test]
    fn star_and_question_mark_do_not_cross_slashes() {
        assert!(!m("/dev/*", "/dev/snd/pcmC0D0c"));
        assert!(!m("/dev/snd?pcmC0D0c", "/dev/snd/pcmC0D0c"));
        assert!(!m("/dev/*/x", "/dev/a/b/x"));
        assert!(m("/dev/*/x", "/dev/a/x"));
        assert!(!m("/dev/[a/]x", "/dev//x"));
        assert!(!m("/dev/[^a]x", "/dev//x"));
    }

    #[test]
    fn classes() {
        assert!(m("/dev/video[0-3]", "/dev/video2"));
        assert!(!m("/dev/video[0-3]", "/dev/video4"));
        assert!(m("/dev/tty[AU][CS]*", "/dev/ttyACM0"));
        assert!(m("/dev/video[^0]", "/dev/video1"));
        assert!(!m("/dev/video[^0]", "/dev/video0"));
        assert!(m("/dev/video[!0]", "/dev/video1"));
        assert!(m("/dev/a[\\]]", "/dev/a]"));
    }

    #[test]
    fn dot_and_dot_dot_components_never_match() {
        assert!(!m("/dev/.*", "/dev/.."));
        assert!(!m("/dev/.*", "/dev/."));
        assert!(!m("/dev/*/x", "/dev/../x"));
        assert!(!m("/dev/??", "/dev/.."));
        assert!(m("/dev/.*", "/dev/.udev"));
        assert!(m("/dev/*", "/dev/..."));
    }

    #[test]
    fn double_slashes_are_one() {
        assert!(m("/dev//tty*", "/dev/ttyS0"));
        assert!(m(r"//dev\//*//x", "/dev/a/x"));
        assert!(!m("/dev//tty*", "/dev//ttyS0"));
        assert_eq!(Pattern::parse("/dev//a").unwrap(), Pattern::parse("/dev/a").unwrap());
    }

    #[test]
    fn escapes() {
        assert!(m("/dev/a\\*", "/dev/a*"));
        assert!(!m("/dev/a\\*", "/dev/ab"));
    }

    #[test]
    fn malformed_patterns_are_errors() {
        for bad in [
            "/dev/video[0-",
            "/dev/[]",
            "/dev/x\\",
            "/dev/[9-0]",
            "/dev/[-a]",
            "/dev/a[x-]",
            "/dev/[/]",
            "/dev/../x",
            "/dev/.",
            "/./dev",
            "/dev/\\.\\.",
            "/dev/a/",
            "/dev/*//",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn literal_detection() {
        assert!(Pattern::parse("/dev/fuse").unwrap().is_literal());
        assert!(!Pattern::parse("/dev/tty*").unwrap().is_literal());
    }
}
