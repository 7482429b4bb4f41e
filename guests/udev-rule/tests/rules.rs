//! Data-driven parser tests: every rule in `rules/supported.txt` parses and
//! passes config validation; every rule in `rules/unsupported.txt` is refused
//! with an error that names the offending key.

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

#[test]
fn every_supported_rule_parses() {
    let text = include_str!("rules/supported.txt");
    let mut count = 0;
    for (line, rule_text) in lines(text) {
        let parsed =
            rule::parse(rule_text).unwrap_or_else(|e| panic!("supported.txt:{line}: `{rule_text}` was refused: {e}"));
        assert!(!parsed.keys.is_empty(), "supported.txt:{line}");
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
