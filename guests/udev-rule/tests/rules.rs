//! Data-driven parser tests: every rule in `rules/supported.txt` parses into
//! the keys written after it and passes config validation; every rule in
//! `rules/unsupported.txt` is refused with an error that names the offending
//! key.

use devsieve_sdk::{Handler, parse_config};
use devsieve_udev_rule::{Config, UdevRule, rule};

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
}

fn config_for(rule: &str) -> String {
    format!(r#"{{"udevRules": ["{}"]}}"#, rule.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A parsed rule in supported.txt's notation: `Field OP value` per key, in
/// order, the value as a Rust string literal (`i`-prefixed if case-insensitive).
fn notation(parsed: &rule::Rule) -> String {
    let key = |k: &rule::Key| {
        let op = if k.negated { "!=" } else { "==" };
        let i = if k.pattern.case_insensitive() { "i" } else { "" };
        format!("{:?} {op} {i}{:?}", k.field, k.value)
    };
    parsed.keys.iter().map(key).collect::<Vec<_>>().join(", ")
}

#[test]
fn every_supported_rule_parses() {
    let text = include_str!("rules/supported.txt");
    let mut count = 0;
    for (line, entry) in lines(text) {
        let (rule_text, expected) =
            entry.split_once(" => ").unwrap_or_else(|| panic!("supported.txt:{line}: expected `rule => parse`"));
        let parsed =
            rule::parse(rule_text).unwrap_or_else(|e| panic!("supported.txt:{line}: `{rule_text}` was refused: {e}"));
        assert_eq!(notation(&parsed), expected, "supported.txt:{line}: `{rule_text}` parsed differently");
        // Each key's span is that key's whole text, spans in order.
        let mut end = 0;
        for (k, key) in parsed.keys.iter().enumerate() {
            let own = &rule_text[key.span.clone()];
            let alone = rule::Rule { keys: vec![key.clone()] };
            let reparsed = rule::parse(own).map(|r| notation(&r));
            assert_eq!(reparsed, Ok(notation(&alone)), "supported.txt:{line}: key {} spans `{own}`", k + 1);
            assert!(key.span.start >= end, "supported.txt:{line}: key {} overlaps the one before", k + 1);
            end = key.span.end;
        }
        // And through the handler's config validation.
        let config: Config = parse_config(&config_for(rule_text)).unwrap();
        UdevRule::needs(&config).unwrap_or_else(|e| panic!("supported.txt:{line}: needs refused: {e:?}"));
        count += 1;
    }
    assert!(count >= 30, "only {count} supported rules were read");
}

#[test]
fn every_unsupported_rule_is_refused_naming_the_key() {
    let text = include_str!("rules/unsupported.txt");
    let mut count = 0;
    for (line, entry) in lines(text) {
        let (key, rule_text) =
            entry.split_once(" => ").unwrap_or_else(|| panic!("unsupported.txt:{line}: expected `KEY => rule`"));
        let error = rule::parse(rule_text).expect_err(&format!("unsupported.txt:{line}: `{rule_text}` was accepted"));
        let snippet = error.snippet.clone().unwrap_or_default();
        assert!(snippet.starts_with(key), "unsupported.txt:{line}: error does not point at {key}: {error}");
        let message = error.to_string();
        assert!(message.contains(key), "unsupported.txt:{line}: error does not name {key}: {message}");
        assert!(message.starts_with(&format!("key {}", error.key.unwrap())), "unsupported.txt:{line}: {message}");
        // The handler reports it against the rule's index.
        let config: Config = parse_config(&config_for(rule_text)).unwrap();
        let refused = UdevRule::needs(&config).expect_err(&format!("unsupported.txt:{line}: needs accepted it"));
        assert_eq!(refused.field.as_deref(), Some("udevRules[0]"), "unsupported.txt:{line}");
        assert_eq!(refused.message, message);
        count += 1;
    }
    assert!(count >= 30, "only {count} unsupported rules were read");
}
