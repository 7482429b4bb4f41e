//! Parses one udev rule (a line of a `.rules` file) into typed match keys.
//!
//! Tokenising follows systemd's `parse_line` / `udev_rule_parse_value`
//! (src/udev/udev-rules.c) exactly:
//! - keys are separated by any run of whitespace and commas (a separator is
//!   not even required after a closing quote);
//! - a key name runs up to whitespace, `=`, `{` or an operator; `{...}` holds
//!   the attribute (up to the first `}`, spaces allowed: `ENV{a name}`);
//! - whitespace may surround the operator;
//! - the value is double quoted, optionally prefixed by `e` (C escapes:
//!   `\n`, `\t`, `\x41`, `\101`, `\u00e9`, `\s`, ...) and/or `i` (case
//!   insensitive match). Without `e`, only `\"` is an escape and every other
//!   backslash stays.
//!
//! Only `==` and `!=` on the device-matching keys are accepted; everything
//! else is refused with an error naming the key and its column.

use crate::pattern::Pattern;
use std::fmt;

/// What a key compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Kernel,
    Subsystem,
    Driver,
    Devpath,
    Tag,
    Attr(String),
    Env(String),
    Kernels,
    Subsystems,
    Drivers,
    Attrs(String),
    Tags,
}

impl Field {
    /// Keys matched on the device or one ancestor (all on the same one).
    pub fn is_parent_key(&self) -> bool {
        matches!(self, Field::Kernels | Field::Subsystems | Field::Drivers | Field::Attrs(_) | Field::Tags)
    }
}

/// One `KEY==value` or `KEY!=value` of a rule.
#[derive(Clone, Debug)]
pub struct Key {
    pub field: Field,
    /// `!=` rather than `==` (after udev's rewrite of `?*`: see `parse`).
    pub negated: bool,
    /// The value after unquoting and unescaping, as udev matches it (`?*`
    /// becomes the empty string, the operator inverted).
    pub value: String,
    pub pattern: Pattern,
    /// Byte range of the whole key (`ATTRS{idVendor}=="1a86"`) in the rule text.
    pub span: std::ops::Range<usize>,
}

/// A parsed rule: every key must match.
#[derive(Clone, Debug)]
pub struct Rule {
    pub keys: Vec<Key>,
}

/// Why a rule was refused, with where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based number of the key the error is about, if any.
    pub key: Option<usize>,
    /// 1-based character column.
    pub column: usize,
    /// The key's text (shortened), if the error is about a key.
    pub snippet: Option<String>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key, &self.snippet) {
            (Some(n), Some(snippet)) => write!(f, "key {n} `{snippet}` (column {}): {}", self.column, self.message),
            (Some(n), None) => write!(f, "key {n} (column {}): {}", self.column, self.message),
            _ => write!(f, "column {}: {}", self.column, self.message),
        }
    }
}

/// udev's WHITESPACE.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Match,
    NoMatch,
    Add,
    Remove,
    Assign,
    AssignFinal,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Match => "==",
            Op::NoMatch => "!=",
            Op::Add => "+=",
            Op::Remove => "-=",
            Op::Assign => "=",
            Op::AssignFinal => ":=",
        }
    }
    fn is_match(self) -> bool {
        matches!(self, Op::Match | Op::NoMatch)
    }
}

const SUPPORTED: &str = "KERNEL, SUBSYSTEM, DRIVER, DEVPATH, TAG, ATTR{name}, ENV{name} (on the device) and \
KERNELS, SUBSYSTEMS, DRIVERS, ATTRS{name}, TAGS (on the device or one ancestor)";

/// Parses one rule.
pub fn parse(text: &str) -> Result<Rule, RuleError> {
    let bytes = text.as_bytes();
    let column = |pos: usize| text.char_indices().take_while(|(i, _)| *i < pos).count() + 1;
    let mut keys = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && (is_ws(bytes[pos]) || bytes[pos] == b',') {
            pos += 1;
        }
        if pos == bytes.len() {
            break;
        }
        let number = keys.len() + 1;
        let start = pos;
        let err = |at: usize, end: usize, message: String| {
            // Byte offsets that may fall inside a character (`end` is often
            // "two bytes on"): the snippet ends at the next character boundary.
            let mut end = end.clamp(start, text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            RuleError { key: Some(number), column: column(at), snippet: Some(shorten(&text[start..end])), message }
        };

        // Key name.
        while pos < bytes.len() {
            let b = bytes[pos];
            if is_ws(b) || b == b'=' || b == b'{' {
                break;
            }
            if matches!(b, b'+' | b'-' | b'!' | b':') && bytes.get(pos + 1) == Some(&b'=') {
                break;
            }
            pos += 1;
        }
        let name = &text[start..pos];
        if pos == bytes.len() {
            return Err(err(start, pos, format!("`{name}` has no operator; write e.g. `{name}==\"value\"`")));
        }
        if name.is_empty() {
            return Err(err(start, (pos + 2).min(bytes.len()), "a key name is missing before the operator".into()));
        }

        // Attribute.
        let mut attr = None;
        if bytes[pos] == b'{' {
            let Some(close) = text[pos + 1..].find('}').map(|i| pos + 1 + i) else {
                return Err(err(pos, bytes.len(), format!("the `{{` after `{name}` is never closed with `}}`")));
            };
            attr = Some(&text[pos + 1..close]);
            pos = close + 1;
        }
        let key_label = match attr {
            Some(a) => format!("{name}{{{a}}}"),
            None => name.to_string(),
        };

        // Operator.
        while pos < bytes.len() && is_ws(bytes[pos]) {
            pos += 1;
        }
        let rest = &bytes[pos..];
        let op = if rest.starts_with(b"==") {
            Op::Match
        } else if rest.starts_with(b"!=") {
            Op::NoMatch
        } else if rest.starts_with(b"+=") {
            Op::Add
        } else if rest.starts_with(b"-=") {
            Op::Remove
        } else if rest.starts_with(b"=") {
            Op::Assign
        } else if rest.starts_with(b":=") {
            Op::AssignFinal
        } else {
            let found = text[pos..].chars().next().map_or("the end of the rule".to_string(), |c| format!("`{c}`"));
            return Err(err(
                pos,
                pos,
                format!("expected an operator (`==` or `!=`) after `{key_label}`, found {found}"),
            ));
        };
        pos += op.text().len();
        while pos < bytes.len() && is_ws(bytes[pos]) {
            pos += 1;
        }
        let value_start = pos;
        let value = parse_value(text, pos);
        let end = match &value {
            Ok((_, _, end)) => *end,
            Err(_) => bytes.len(),
        };

        // The key itself decides first: an action key is refused whatever its value.
        let field = classify(name, attr, op).map_err(|message| err(start, end, message))?;
        let (value, case_insensitive, end) = value.map_err(|(at, message)| err(at, bytes.len(), message))?;
        if value_start == end {
            // Unreachable: parse_value consumes at least the quotes.
            return Err(err(value_start, end, "missing value".into()));
        }
        // udev's parser rewrites a value of exactly `?*` ("not empty") into a
        // match of the empty string with the operator inverted: `KEY=="?*"` is
        // `KEY!=""` and `KEY!="?*"` is `KEY==""` (udev-rules.c,
        // `rule_line_add_token`). It changes nothing for one-valued keys, but
        // for TAG and TAGS ("any tag passes") it does: no tag is ever empty, so
        // `TAG=="?*"` matches every device, tagless ones too, and `TAG!="?*"`
        // none.
        let not_empty = value == "?*";
        let value = if not_empty { String::new() } else { value };
        let pattern = Pattern::new(&value, case_insensitive, field == Field::Subsystem);
        let negated = (op == Op::NoMatch) != not_empty;
        keys.push(Key { field, negated, value, pattern, span: start..end });
        pos = end;
    }
    if keys.is_empty() {
        return Err(RuleError {
            key: None,
            column: 1,
            snippet: None,
            message: format!("the rule is empty; it needs at least one key such as SUBSYSTEM==\"tty\" ({SUPPORTED})"),
        });
    }
    Ok(Rule { keys })
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX - 3).collect();
        out.push_str("...");
        out
    }
}

/// Parses a quoted value at `pos`: returns the value, whether it is case
/// insensitive, and the byte position after the closing quote; or the byte
/// position of the problem and a message.
fn parse_value(text: &str, pos: usize) -> Result<(String, bool, usize), (usize, String)> {
    let bytes = text.as_bytes();
    let (mut escaped, mut insensitive) = (false, false);
    let mut i = pos;
    while i < bytes.len() && bytes[i] != b'"' && i < pos + 2 {
        match bytes[i] {
            b'e' if !escaped => escaped = true,
            b'i' if !insensitive => insensitive = true,
            _ => break,
        }
        i += 1;
    }
    if bytes.get(i) != Some(&b'"') {
        let what = text[pos..].chars().next().map_or("nothing".to_string(), |c| format!("`{c}`"));
        return Err((
            pos,
            format!("the value must be in double quotes (optionally prefixed by `e` or `i`), found {what}"),
        ));
    }
    let open = i;
    let mut value = String::new();
    i += 1;
    if !escaped {
        // Only \" is an escape.
        let mut from = i;
        loop {
            match bytes.get(i) {
                None => return Err((open, "the value's opening `\"` is never closed".into())),
                Some(b'"') => break,
                Some(b'\\') if bytes.get(i + 1) == Some(&b'"') => {
                    value.push_str(&text[from..i]);
                    value.push('"');
                    i += 2;
                    from = i;
                }
                Some(_) => i += 1,
            }
        }
        value.push_str(&text[from..i]);
        return Ok((value, insensitive, i + 1));
    }
    // e"...": find the closing quote (a backslash skips the next byte), then unescape.
    let body_start = i;
    loop {
        match bytes.get(i) {
            None => return Err((open, "the value's opening `\"` is never closed".into())),
            Some(b'"') => break,
            Some(b'\\') => {
                if i + 1 >= bytes.len() {
                    return Err((open, "the value's opening `\"` is never closed".into()));
                }
                i += 2;
            }
            Some(_) => i += 1,
        }
    }
    let body = &text[body_start..i];
    let mut chars = body.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            value.push(c);
            continue;
        }
        let bad = |message: &str| (body_start + at, format!("invalid escape in e\"...\" value: {message}"));
        let Some((_, e)) = chars.next() else {
            return Err(bad("trailing backslash"));
        };
        let simple = match e {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            '\'' => Some('\''),
            's' => Some(' '),
            _ => None,
        };
        if let Some(s) = simple {
            value.push(s);
            continue;
        }
        let mut take = |n: usize, radix: u32| -> Option<u32> {
            let mut v = 0u32;
            for _ in 0..n {
                let (_, d) = chars.next()?;
                v = v * radix + d.to_digit(radix)?;
            }
            Some(v)
        };
        let code = match e {
            'x' => take(2, 16).ok_or_else(|| bad("`\\x` needs two hex digits"))?,
            'u' => take(4, 16).ok_or_else(|| bad("`\\u` needs four hex digits"))?,
            'U' => take(8, 16).ok_or_else(|| bad("`\\U` needs eight hex digits"))?,
            '0'..='7' => {
                let rest = take(2, 8).ok_or_else(|| bad("an octal escape needs three octal digits"))?;
                let v = e.to_digit(8).unwrap_or(0) * 64 + rest;
                if v > 255 {
                    return Err(bad("octal escapes go up to \\377"));
                }
                v
            }
            other => return Err(bad(&format!("unknown escape `\\{other}`"))),
        };
        if code == 0 {
            return Err(bad("NUL characters are not allowed"));
        }
        if matches!(e, 'x' | '0'..='7') && code > 0x7f {
            // udev inserts the raw byte, which is not valid UTF-8 on its own.
            return Err(bad("byte escapes above \\x7f are not valid UTF-8; write the character or use \\u"));
        }
        value.push(char::from_u32(code).ok_or_else(|| bad("not a valid Unicode code point"))?);
    }
    Ok((value, insensitive, i + 1))
}

/// Maps a key to a field, or explains why it is refused.
fn classify(name: &str, attr: Option<&str>, op: Op) -> Result<Field, String> {
    let remove = "devsieve rules only match devices, remove it";
    let no_attr = |field: Field| -> Result<Field, String> {
        match attr {
            Some(a) => {
                Err(format!("{name} takes no {{attribute}}; write `{name}{}\"...\"` without `{{{a}}}`", op.text()))
            }
            None => Ok(field),
        }
    };
    let with_attr = |make: fn(String) -> Field| -> Result<Field, String> {
        match attr {
            None | Some("") => Err(format!("{name} needs a name in braces, e.g. `{name}{{idVendor}}==\"1a86\"`")),
            Some(a) if name != "ENV" && (a.starts_with('[') || a.contains(['%', '$'])) => Err(format!(
                "{name}{{{a}}}: substitutions and [subsystem/kernel] references in attribute names are not supported"
            )),
            Some(a) => Ok(make(a.to_string())),
        }
    };
    let field = match name {
        "KERNEL" => no_attr(Field::Kernel),
        "SUBSYSTEM" => no_attr(Field::Subsystem),
        "DRIVER" => no_attr(Field::Driver),
        "DEVPATH" => no_attr(Field::Devpath),
        "TAG" => no_attr(Field::Tag),
        "KERNELS" => no_attr(Field::Kernels),
        "SUBSYSTEMS" => no_attr(Field::Subsystems),
        "DRIVERS" => no_attr(Field::Drivers),
        "TAGS" => no_attr(Field::Tags),
        "ATTR" => with_attr(Field::Attr),
        "ATTRS" => with_attr(Field::Attrs),
        "ENV" => with_attr(Field::Env),
        "RUN" | "GOTO" | "LABEL" | "OWNER" | "GROUP" | "MODE" | "OPTIONS" | "SECLABEL" | "WAIT_FOR" => {
            return Err(format!("{name} is an action key; {remove}"));
        }
        "NAME" | "SYMLINK" if !op.is_match() => {
            return Err(format!("{name} is an action key; {remove}"));
        }
        "NAME" => {
            return Err(format!("NAME matches network interface names during an event; {remove}"));
        }
        "SYMLINK" => {
            return Err(format!("SYMLINK matching (device node links) is not supported; {remove}"));
        }
        "ACTION" => {
            return Err(format!(
                "ACTION matches the uevent action, and devsieve looks at devices, not events; {remove}"
            ));
        }
        "PROGRAM" | "RESULT" | "IMPORT" | "TEST" | "CONST" | "SYSCTL" => {
            return Err(format!("{name} looks at the host or runs something while udev handles an event; {remove}"));
        }
        _ => {
            let upper = name.to_ascii_uppercase();
            let known = [
                "KERNEL",
                "SUBSYSTEM",
                "DRIVER",
                "DEVPATH",
                "TAG",
                "ATTR",
                "ENV",
                "KERNELS",
                "SUBSYSTEMS",
                "DRIVERS",
                "ATTRS",
                "TAGS",
            ];
            let hint = if upper != name && known.contains(&upper.as_str()) {
                format!(" (keys are case sensitive: did you mean {upper}?)")
            } else {
                String::new()
            };
            return Err(format!("unknown key `{name}`{hint}; supported keys are {SUPPORTED}"));
        }
    }?;
    if !op.is_match() {
        return Err(format!("`{name}{}` assigns; {remove} or use `==` / `!=` to match", op.text()));
    }
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rule: &str) -> Vec<(Field, bool, String)> {
        parse(rule).unwrap().keys.into_iter().map(|k| (k.field, k.negated, k.value)).collect()
    }

    fn error(rule: &str) -> String {
        parse(rule).unwrap_err().to_string()
    }

    #[test]
    fn parses_akri_examples() {
        assert_eq!(
            keys(r#"KERNEL=="video[0-9]*",SUBSYSTEM=="video4linux", ATTR{idVendor}=="05a9""#),
            vec![
                (Field::Kernel, false, "video[0-9]*".into()),
                (Field::Subsystem, false, "video4linux".into()),
                (Field::Attr("idVendor".into()), false, "05a9".into()),
            ]
        );
        assert_eq!(
            keys(r#"ENV{a name}=="Keyboard that has a mouse", DRIVERS!="a driver""#),
            vec![
                (Field::Env("a name".into()), false, "Keyboard that has a mouse".into()),
                (Field::Drivers, true, "a driver".into()),
            ]
        );
    }

    #[test]
    fn whitespace_commas_and_spans() {
        let rule = parse(r#"  , KERNEL == "a" ,, TAGS!="x"KERNELS=="y"  "#).unwrap();
        assert_eq!(rule.keys.len(), 3);
        assert_eq!(&r#"  , KERNEL == "a" ,, TAGS!="x"KERNELS=="y"  "#[rule.keys[0].span.clone()], r#"KERNEL == "a""#);
        assert_eq!(rule.keys[1].field, Field::Tags);
        assert_eq!(rule.keys[2].field, Field::Kernels);
    }

    #[test]
    fn values_with_any_character() {
        assert_eq!(keys(r#"ATTR{product}=="USB2.0-Serial (v2), + more""#)[0].2, "USB2.0-Serial (v2), + more");
        assert_eq!(keys(r#"ATTR{version}==" 1.10""#)[0].2, " 1.10");
        assert_eq!(keys(r#"ENV{X}=="say \"hi\" \n""#)[0].2, r#"say "hi" \n"#);
        assert_eq!(keys(r#"ENV{X}==e"a\tb\x41\101\u00e9\s\\""#)[0].2, "a\tbAAé \\");
        assert_eq!(keys(r#"ENV{X}==e"q\"q""#)[0].2, "q\"q");
        let rule = parse(r#"ATTR{vendor}==i"great vendor""#).unwrap();
        assert!(rule.keys[0].pattern.matches("Great Vendor"));
        let rule = parse(r#"ATTR{vendor}==ei"A\x42""#).unwrap();
        assert!(rule.keys[0].pattern.matches("ab"));
    }

    #[test]
    fn refuses_bad_escapes() {
        assert!(error(r#"ENV{X}==e"\q""#).contains("unknown escape `\\q`"));
        assert!(error(r#"ENV{X}==e"\x00""#).contains("NUL"));
        assert!(error(r#"ENV{X}==e"\xff""#).contains("UTF-8"));
        assert!(error(r#"ENV{X}==e"\x4""#).contains("two hex digits"));
        assert!(error(r#"ENV{X}==ee"x""#).contains("double quotes"));
    }

    #[test]
    fn refuses_actions_with_position() {
        let e = error(r#"SUBSYSTEM=="tty", KERNEL=="ttyUSB*", RUN+="/bin/x""#);
        assert_eq!(
            e,
            "key 3 `RUN+=\"/bin/x\"` (column 38): RUN is an action key; devsieve rules only match devices, remove it"
        );
        let e = error(r#"SUBSYSTEM=="sound", KERNEL=="card[0-9]*", TAG+="akri_tag""#);
        assert!(e.starts_with("key 3 `TAG+=\"akri_tag\"` (column 43): `TAG+=` assigns"), "{e}");
        assert!(error(r#"ACTION=="add""#).contains("ACTION matches the uevent action"));
        assert!(error(r#"IMPORT{program}="v4l_id $devnode""#).starts_with("key 1 `IMPORT{program}"));
        // Unsupported keys are named even when their value is broken.
        assert!(error(r#"TEST{key}=="value"#).contains("TEST looks at the host"));
    }

    #[test]
    fn refuses_malformed_rules() {
        assert!(error("").contains("the rule is empty"));
        assert!(error("  ,  ").contains("the rule is empty"));
        assert_eq!(
            error(r#"KERNEL=="a", SUBSYSTEM"#),
            "key 2 `SUBSYSTEM` (column 14): `SUBSYSTEM` has no operator; write e.g. `SUBSYSTEM==\"value\"`"
        );
        assert!(error(r#"KERNEL=="abc"#).contains("(column 9): the value's opening `\"` is never closed"));
        assert!(error(r#"KERNEL==abc"#).contains("must be in double quotes"));
        assert!(error(r#"ATTR{idVendor=="1a86""#).contains("never closed with `}`"));
        assert!(error(r#"ATTR=="x""#).contains("ATTR needs a name in braces"));
        assert!(error(r#"KERNEL{x}=="x""#).contains("KERNEL takes no {attribute}"));
        assert!(error(r#"kernel=="x""#).contains("did you mean KERNEL?"));
        assert!(error(r#"FOO=="x""#).contains("unknown key `FOO`"));
        assert!(error(r#"=="x""#).contains("key name is missing"));
        assert!(error(r#"KERNEL~"x""#).contains("has no operator"));
        assert!(error(r#"ATTR{[usb/1-1]idVendor}=="x""#).contains("not supported"));
        // udev: `\\"` is a backslash then an escaped quote, so this never closes.
        assert!(error(r#"KERNEL=="a\\""#).contains("never closed"));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/udev_rule.rs): an operator with no
    /// key before a multi-byte character cut the error's snippet inside it.
    #[test]
    fn errors_never_cut_a_character() {
        let e = parse("=\u{7d555}\"**\"").unwrap_err();
        assert!(e.message.contains("key name is missing"), "{e:?}");
        assert_eq!(e.snippet.as_deref(), Some("=\u{7d555}"));
        for text in ["ATTR{é", "KERNEL==\"é", "é", "Ké=", "K!é", "=é", "ATTR{x}=é"] {
            let _ = parse(text);
        }
    }

    #[test]
    fn columns_count_characters() {
        let e = parse(r#"ENV{X}=="é", FOO=="x""#).unwrap_err();
        assert_eq!((e.key, e.column), (Some(2), 14));
    }
}
