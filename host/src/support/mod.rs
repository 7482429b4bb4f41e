//! Small pieces every stage uses and none owns: digests, atomic files,
//! backoff, durations, the path check, kubelet names, and how an error chain reads.

pub mod backoff;
pub mod digest;
pub mod duration;
pub mod files;
pub mod names;
pub mod paths;

/// `error: cause: cause`, each cause said once: a cause whose text the
/// message already holds (many messages quote their cause) is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("config.yaml: cannot read: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Silent {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let missing = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(error_chain(&Quoting { source: missing() }), "config.yaml: cannot read: no such file");
        assert_eq!(error_chain(&Silent { source: missing() }), "cannot start: no such file");
    }
}
