//! Durations as people write them in flags and config files.

use std::time::Duration;

/// A duration as people write one (`30s`, `500ms`, `2m`, `1h`, jiff's
/// friendly format); a bare number (`30`, `1.5`) is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let seconds;
    let bare_number = text.bytes().all(|b| b.is_ascii_digit() || b == b'.') && text.parse::<f64>().is_ok();
    let text = if bare_number {
        seconds = format!("{text}s");
        seconds.as_str()
    } else {
        text
    };
    let parsed: jiff::SignedDuration =
        text.parse().map_err(|source| DurationError::Syntax { text: text.into(), source })?;
    Duration::try_from(parsed).map_err(|_| DurationError::Negative(text.into()))
}

#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("{text:?} is not a duration such as 30s or 500ms: {source}")]
    Syntax { text: String, source: jiff::Error },
    #[error("{0:?} is negative")]
    Negative(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(parse_duration("30s").ok(), ms(30_000));
        assert_eq!(parse_duration("500ms").ok(), ms(500));
        assert_eq!(parse_duration("2m").ok(), ms(120_000));
        assert_eq!(parse_duration("1h").ok(), ms(3_600_000));
        assert_eq!(parse_duration("1.5s").ok(), ms(1_500));
        assert_eq!(parse_duration("7").ok(), ms(7_000), "a bare number is seconds");
        assert_eq!(parse_duration("0.5").ok(), ms(500));
        assert!(parse_duration("soon").unwrap_err().to_string().contains("30s or 500ms"));
        assert!(matches!(parse_duration("-3s"), Err(DurationError::Negative(_))));
    }
}
