//! udev's value matching: `|` alternatives, shell globs (`*`, `?`, `[...]`)
//! evaluated like glibc's `fnmatch(pattern, string, 0)`, and the special
//! cases udev-rules.c applies before matching.
//!
//! What udev does, and this module mirrors (systemd `rule_line_add_token`,
//! `token_match_string`):
//! - The value is split at `|`. Empty alternatives (a leading, trailing or
//!   doubled `|`, or an empty value) mean "the empty string matches too".
//! - The value is a glob if it contains `*`, `?` or `[` anywhere; then every
//!   alternative goes through fnmatch (where `\` escapes the next character).
//!   Otherwise every alternative is compared as a plain string (a `\` is just
//!   a backslash).
//! - `SUBSYSTEM=="subsystem"` (or `"bus"`, `"class"`) matches a device whose
//!   subsystem is any of the three.
//! - `i"..."` values compare ASCII case-insensitively.
//!
//! Matching works on Unicode scalar values (`?` matches one character); udev
//! runs in the C locale and works on bytes, which only differs for non-ASCII
//! text matched with `?` or `[...]`.

/// How a value is compared (udev's `UdevRuleMatchType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The value is empty: only the empty string matches.
    Empty,
    /// No glob characters: string equality with any alternative.
    Plain,
    /// Glob characters somewhere in the value: fnmatch with any alternative.
    Glob,
    /// `SUBSYSTEM=="subsystem"|"bus"|"class"`.
    Subsystem,
}

/// A compiled match value.
#[derive(Clone, Debug)]
pub struct Pattern {
    kind: Kind,
    /// The non-empty alternatives, in order.
    alternatives: Vec<String>,
    /// Whether an empty alternative makes the empty string match.
    matches_empty: bool,
    case_insensitive: bool,
}

const GLOB_CHARS: &[char] = &['*', '?', '['];
const SUBSYSTEM_NAMES: [&str; 3] = ["subsystem", "bus", "class"];

impl Pattern {
    /// Compiles `value` as udev does; `subsystem_key` is true for the
    /// `SUBSYSTEM` key only (not `SUBSYSTEMS`).
    pub fn new(value: &str, case_insensitive: bool, subsystem_key: bool) -> Pattern {
        let kind = if subsystem_key && SUBSYSTEM_NAMES.contains(&value) {
            Kind::Subsystem
        } else if value.is_empty() {
            Kind::Empty
        } else if value.contains(GLOB_CHARS) {
            Kind::Glob
        } else {
            Kind::Plain
        };
        let mut alternatives = Vec::new();
        let mut matches_empty = false;
        for part in value.split('|') {
            if part.is_empty() {
                matches_empty = true;
            } else {
                alternatives.push(part.to_string());
            }
        }
        Pattern { kind, alternatives, matches_empty, case_insensitive }
    }

    /// Does `text` match?
    pub fn matches(&self, text: &str) -> bool {
        match self.kind {
            Kind::Empty => text.is_empty(),
            Kind::Subsystem => SUBSYSTEM_NAMES.iter().any(|name| self.eq(name, text)),
            Kind::Plain => {
                (self.matches_empty && text.is_empty()) || self.alternatives.iter().any(|alt| self.eq(alt, text))
            }
            Kind::Glob => {
                (self.matches_empty && text.is_empty())
                    || self.alternatives.iter().any(|alt| fnmatch(alt, text, self.case_insensitive))
            }
        }
    }

    /// Whether the value was `i"..."` (ASCII case-insensitive).
    pub fn case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    fn eq(&self, a: &str, b: &str) -> bool {
        if self.case_insensitive { a.eq_ignore_ascii_case(b) } else { a == b }
    }

    /// The exact strings this pattern matches, if it is a finite set of
    /// non-empty literals (used to narrow what the host collects).
    pub fn literals(&self) -> Option<Vec<&str>> {
        if self.case_insensitive {
            return None;
        }
        match self.kind {
            Kind::Plain if !self.matches_empty => Some(self.alternatives.iter().map(String::as_str).collect()),
            Kind::Subsystem => Some(SUBSYSTEM_NAMES.to_vec()),
            _ => None,
        }
    }

    /// udev strips trailing whitespace from a sysfs attribute before
    /// matching unless the value asks for it: the decision looks at the last
    /// character of the *first* non-empty alternative (udev tests `strlen`
    /// of the value after `|` became NUL), and an empty value never strips.
    pub fn strips_trailing_whitespace(&self) -> bool {
        match self.alternatives.first() {
            Some(first) if self.kind != Kind::Empty => {
                // C isspace(): space, \t, \n, \v, \f, \r.
                !first.ends_with([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
            }
            _ => false,
        }
    }
}

/// One pattern element that matches exactly one character (or any run, for `Star`).
#[derive(Debug)]
enum Token {
    Literal(char),
    Any,
    Star,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
    /// A trailing backslash: glibc's fnmatch never matches then.
    Invalid,
}

#[derive(Debug)]
enum ClassItem {
    Char(char),
    Range(char, char),
    Named(String),
}

fn fold(c: char, case_insensitive: bool) -> char {
    if case_insensitive { c.to_ascii_lowercase() } else { c }
}

/// glibc `fnmatch(pattern, text, flags)` with flags 0 (or `FNM_CASEFOLD`):
/// `*` and `?` also match `/` and a leading `.`; `\` escapes; `[!...]` and
/// `[^...]` negate; `[:class:]` names work inside brackets; an unterminated
/// `[` is an ordinary character.
pub fn fnmatch(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let tokens = tokenize(pattern);
    if tokens.iter().any(|t| matches!(t, Token::Invalid)) {
        return false;
    }
    let text: Vec<char> = text.chars().collect();
    let one = |token: &Token, c: char| -> bool {
        let c = fold(c, case_insensitive);
        match token {
            Token::Literal(l) => fold(*l, case_insensitive) == c,
            Token::Any => true,
            Token::Class { negated, items } => {
                items.iter().any(|item| class_item_matches(item, c, case_insensitive)) != *negated
            }
            Token::Star | Token::Invalid => false,
        }
    };
    // Greedy matching with backtracking to the last star: linear for
    // single-character tokens, which all non-star tokens are.
    let (mut t, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        if t < tokens.len() && matches!(tokens[t], Token::Star) {
            star = Some((t, s));
            t += 1;
        } else if t < tokens.len() && one(&tokens[t], text[s]) {
            t += 1;
            s += 1;
        } else if let Some((star_t, star_s)) = star {
            t = star_t + 1;
            s = star_s + 1;
            star = Some((star_t, star_s + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|token| matches!(token, Token::Star))
}

fn class_item_matches(item: &ClassItem, c: char, case_insensitive: bool) -> bool {
    match item {
        ClassItem::Char(x) => fold(*x, case_insensitive) == c,
        ClassItem::Range(lo, hi) => {
            let (lo, hi) = (fold(*lo, case_insensitive), fold(*hi, case_insensitive));
            lo <= c && c <= hi
        }
        ClassItem::Named(name) => {
            let b = if c.is_ascii() { c as u8 } else { return false };
            match name.as_str() {
                "alnum" => b.is_ascii_alphanumeric(),
                "alpha" => b.is_ascii_alphabetic(),
                "blank" => b == b' ' || b == b'\t',
                "cntrl" => b.is_ascii_control(),
                "digit" => b.is_ascii_digit(),
                "graph" => b.is_ascii_graphic(),
                // With FNM_CASEFOLD glibc folds the text, so [:upper:] sees lower case too.
                "lower" => b.is_ascii_lowercase() || (case_insensitive && b.is_ascii_uppercase()),
                "upper" => b.is_ascii_uppercase() || (case_insensitive && b.is_ascii_lowercase()),
                "print" => b.is_ascii_graphic() || b == b' ',
                "punct" => b.is_ascii_punctuation(),
                "space" => matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'),
                "xdigit" => b.is_ascii_hexdigit(),
                _ => false,
            }
        }
    }
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                // Consecutive stars are one star.
                if !matches!(tokens.last(), Some(Token::Star)) {
                    tokens.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                tokens.push(Token::Any);
                i += 1;
            }
            '\\' => {
                if let Some(&next) = chars.get(i + 1) {
                    tokens.push(Token::Literal(next));
                    i += 2;
                } else {
                    tokens.push(Token::Invalid);
                    i += 1;
                }
            }
            '[' => match parse_bracket(&chars, i) {
                Some((token, next)) => {
                    tokens.push(token);
                    i = next;
                }
                None => {
                    tokens.push(Token::Literal('['));
                    i += 1;
                }
            },
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    tokens
}

/// Parses `[...]` starting at `start` (the `[`); `None` if it is not closed.
fn parse_bracket(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, items }, i + 1));
        }
        first = false;
        // A named class: [:alpha:]
        if c == '[' && chars.get(i + 1) == Some(&':') {
            let rest = &chars[i + 2..];
            if let Some(end) = rest.windows(2).position(|w| w == [':', ']']) {
                items.push(ClassItem::Named(rest[..end].iter().collect()));
                i += 2 + end + 2;
                continue;
            }
        }
        let (low, after) = if c == '\\' { (*chars.get(i + 1)?, i + 2) } else { (c, i + 1) };
        // A range a-z, unless the '-' is last before ']'.
        if chars.get(after) == Some(&'-') && chars.get(after + 1).is_some_and(|&n| n != ']') {
            let n = chars[after + 1];
            let (high, next) = if n == '\\' { (*chars.get(after + 2)?, after + 3) } else { (n, after + 2) };
            items.push(ClassItem::Range(low, high));
            i = next;
        } else {
            items.push(ClassItem::Char(low));
            i = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str, s: &str) -> bool {
        fnmatch(p, s, false)
    }

    #[test]
    fn fnmatch_basics() {
        assert!(glob("card[0-9]*", "card0"));
        assert!(glob("card[0-9]*", "card12"));
        assert!(!glob("card[0-9]*", "cardX"));
        assert!(!glob("card[0-9]*", "xcard0"));
        assert!(glob("video?", "video1"));
        assert!(!glob("video?", "video"));
        assert!(!glob("video?", "video10"));
        assert!(glob("*", ""));
        assert!(!glob("?*", ""));
        assert!(glob("?*", "x"));
        assert!(glob("/devices/*/usb3/*", "/devices/pci0000:00/0000:00:14.0/usb3/3-3"));
        assert!(glob("a*b*c", "aXXbYYbc"));
        assert!(!glob("a*b*c", "aXXbYYbcd"));
        assert!(glob("*.0", ".0"));
    }

    #[test]
    fn fnmatch_brackets() {
        assert!(glob("[!0-9]x", "ax"));
        assert!(!glob("[!0-9]x", "5x"));
        assert!(glob("[^0-9]x", "ax"));
        assert!(glob("[]a]", "]"));
        assert!(glob("[a-]", "-"));
        assert!(glob("[[:digit:]][[:alpha:]]", "1a"));
        assert!(!glob("[[:digit:]]", "a"));
        // An unterminated bracket is a literal '['.
        assert!(glob("a[b", "a[b"));
        assert!(!glob("a[b", "ab"));
        assert!(glob("[\\]]", "]"));
    }

    #[test]
    fn fnmatch_escapes() {
        assert!(glob("a\\*", "a*"));
        assert!(!glob("a\\*", "ab"));
        // A trailing backslash never matches (glibc).
        assert!(!glob("a*\\", "a\\"));
    }

    #[test]
    fn fnmatch_case_fold() {
        assert!(fnmatch("ABC*", "abcdef", true));
        assert!(fnmatch("[A-C]x", "bX", true));
        assert!(!fnmatch("ABC*", "abcdef", false));
    }

    #[test]
    fn alternatives_and_kinds() {
        let p = Pattern::new("video*|vbi*", false, false);
        assert!(p.matches("video0") && p.matches("vbi1") && !p.matches("radio0") && !p.matches(""));
        let p = Pattern::new("tty|usb", false, false);
        assert!(p.matches("tty") && p.matches("usb") && !p.matches("ttyUSB0"));
        assert_eq!(p.literals(), Some(vec!["tty", "usb"]));
        // An empty alternative matches the empty string.
        let p = Pattern::new("|usb", false, false);
        assert!(p.matches("") && p.matches("usb") && !p.matches("tty"));
        assert_eq!(p.literals(), None);
        let p = Pattern::new("usb||tty", false, false);
        assert!(p.matches(""));
        let p = Pattern::new("", false, false);
        assert!(p.matches("") && !p.matches("x"));
        // Plain values take backslashes literally; globs treat them as escapes.
        assert!(Pattern::new("a\\b", false, false).matches("a\\b"));
        assert!(Pattern::new("a\\b*", false, false).matches("ab"));
        // Being a glob is a property of the whole value.
        assert!(!Pattern::new("a\\b|c*", false, false).matches("a\\b"));
    }

    #[test]
    fn subsystem_special_value() {
        let p = Pattern::new("bus", false, true);
        assert!(p.matches("subsystem") && p.matches("class") && p.matches("bus") && !p.matches("usb"));
        assert!(!Pattern::new("bus", false, false).matches("class"));
    }

    #[test]
    fn case_insensitive_plain() {
        let p = Pattern::new("Great Vendor", true, false);
        assert!(p.matches("GREAT VENDOR"));
        assert_eq!(p.literals(), None);
    }

    #[test]
    fn trailing_whitespace_decision() {
        assert!(Pattern::new("1.10", false, false).strips_trailing_whitespace());
        assert!(!Pattern::new("1.10 ", false, false).strips_trailing_whitespace());
        assert!(!Pattern::new("", false, false).strips_trailing_whitespace());
        // udev looks at the first alternative only.
        assert!(!Pattern::new("a |b", false, false).strips_trailing_whitespace());
        assert!(Pattern::new("a|b ", false, false).strips_trailing_whitespace());
    }
}
