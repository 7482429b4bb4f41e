//! Names the kubelet and the API server see: extended resource names and
//! Kubernetes object names, validated as Kubernetes validates them, and
//! device ids derived from what a handler says identifies a device.

use super::digest::sha256_hex_of;

/// The longest device id the agent hands the kubelet.
pub const MAX_DEVICE_ID: usize = 63;

/// Why a name is not one Kubernetes accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} needs a domain: DOMAIN/NAME")]
    NoDomain(String),
    #[error("{0:?}: the name after the domain must be 1 to 63 characters")]
    NameLength(String),
    #[error(
        "{0:?}: the name after the domain may hold letters, digits, '-', '_' and '.', \
         and must start and end with a letter or digit"
    )]
    NameCharacters(String),
    #[error("{0:?}: the domain is too long to be used in a resource quota")]
    QuotaTooLong(String),
    #[error("{0:?} is not a valid domain (a lowercase DNS name such as devsieve.io)")]
    Domain(String),
    #[error("{0:?} is reserved for Kubernetes' own resources")]
    ReservedDomain(String),
    #[error("{0:?} may not start with `requests.` (reserved for quota)")]
    QuotaPrefix(String),
    #[error("must be a lowercase DNS label (letters, digits, `-`; at most 63)")]
    DnsLabel,
    #[error("must be a lowercase DNS subdomain (labels of letters, digits and `-`, joined by `.`)")]
    DnsSubdomain,
}

/// `domain/name` for a configured `name` (which may already carry a domain).
pub fn resource_name(domain: &str, name: &str) -> Result<String, NameError> {
    let full = if name.contains('/') { name.to_string() } else { format!("{domain}/{name}") };
    check_extended_resource_name(&full)?;
    Ok(full)
}

/// What the kubelet requires of a device plugin's resource name
/// (`IsExtendedResourceName`): a qualified name with a domain that is not
/// Kubernetes' own, usable in quota as `requests.<name>`.
pub fn check_extended_resource_name(full: &str) -> Result<(), NameError> {
    let Some((prefix, name)) = full.split_once('/') else {
        return Err(NameError::NoDomain(full.into()));
    };
    check_domain(prefix)?;
    if name.is_empty() || name.len() > 63 {
        return Err(NameError::NameLength(full.into()));
    }
    let bytes = name.as_bytes();
    let inner_ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !inner_ok || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err(NameError::NameCharacters(full.into()));
    }
    if format!("requests.{prefix}").len() > 253 {
        return Err(NameError::QuotaTooLong(full.into()));
    }
    Ok(())
}

/// A resource domain: a lowercase DNS subdomain that is not Kubernetes' own.
pub fn check_domain(domain: &str) -> Result<(), NameError> {
    if check_dns_subdomain(domain).is_err() {
        return Err(NameError::Domain(domain.into()));
    }
    if domain == "kubernetes.io"
        || domain.ends_with(".kubernetes.io")
        || domain == "k8s.io"
        || domain.ends_with(".k8s.io")
    {
        return Err(NameError::ReservedDomain(domain.into()));
    }
    if domain.starts_with("requests.") {
        return Err(NameError::QuotaPrefix(domain.into()));
    }
    Ok(())
}

/// An RFC 1123 label, as Kubernetes checks namespace names.
pub fn check_dns_label(label: &str) -> Result<(), NameError> {
    let b = label.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok { Ok(()) } else { Err(NameError::DnsLabel) }
}

/// An RFC 1123 subdomain, as Kubernetes checks ConfigMap names.
pub fn check_dns_subdomain(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 253 || name.split('.').any(|label| check_dns_label(label).is_err()) {
        return Err(NameError::DnsSubdomain);
    }
    Ok(())
}

/// A kubelet device id for a handler's group id: the id itself when it is
/// short and plain, otherwise its readable tail and a digest of the whole,
/// so the same device always gets the same id.
pub fn device_id(handler_id: &str) -> String {
    device_id_within(handler_id, MAX_DEVICE_ID)
}

/// The kubelet id of share unit `unit` (0-based) of a group shared `share`
/// times: the group's id when it is not shared, else `<id>-<unit>`, with the
/// id shortened so the whole still fits in [`MAX_DEVICE_ID`].
pub fn unit_id(handler_id: &str, unit: u32, share: u32) -> String {
    if share <= 1 {
        return device_id(handler_id);
    }
    let suffix = format!("-{unit}");
    format!("{}{suffix}", device_id_within(handler_id, MAX_DEVICE_ID - suffix.len()))
}

fn device_id_within(handler_id: &str, max: usize) -> String {
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
    };
    if plain(handler_id) {
        return handler_id.to_string();
    }
    let digest = sha256_hex_of(handler_id.as_bytes());
    let tail = handler_id.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    let readable: String =
        tail.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let readable = readable.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let keep = max - 17;
    let readable = &readable[..readable.len().min(keep)];
    if readable.is_empty() { digest[..16].to_string() } else { format!("{readable}-{}", &digest[..16]) }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_follow_the_kubelet() {
        assert_eq!(resource_name("devsieve.io", "printer").unwrap(), "devsieve.io/printer");
        assert_eq!(resource_name("devsieve.io", "akri.sh/cam-1").unwrap(), "akri.sh/cam-1");
        for bad in ["", "-x", "x-", "a b", "x".repeat(64).as_str(), "kubernetes.io/x", "Devsieve.IO/x", "a/b/c"] {
            assert!(resource_name("devsieve.io", bad).is_err(), "{bad:?} must be refused");
        }
        assert!(check_domain("sub.kubernetes.io").is_err());
        assert!(check_domain("requests.example.com").is_err());
    }

    #[test]
    fn device_ids_are_stable_short_and_plain() {
        assert_eq!(device_id("ttyUSB0"), "ttyUSB0");
        let long = "/devices/pci0000:00/0000:00:14.0/usb3/3-3/3-3.4/3-3.4.1";
        let id = device_id(long);
        assert_eq!(id, device_id(long));
        assert!(id.starts_with("3-3.4.1-") && id.len() <= MAX_DEVICE_ID, "{id}");
        assert_ne!(device_id("/devices/a/3-3.4.1"), id, "same tail, other device");
        let weird = device_id(&"é".repeat(100));
        assert!(weird.len() <= MAX_DEVICE_ID && weird.bytes().all(|b| b.is_ascii()), "{weird}");
    }

    #[test]
    fn shared_units_get_distinct_ids_that_fit() {
        assert_eq!(unit_id("dev-null", 0, 1), "dev-null");
        assert_eq!(unit_id("dev-null", 3, 10), "dev-null-3");
        let long = "x".repeat(63);
        assert_eq!(unit_id(&long, 0, 1), long, "an unshared 63-character id is kept");
        let ids: std::collections::HashSet<String> = (0..10_000).map(|u| unit_id(&long, u, 10_000)).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() <= MAX_DEVICE_ID), "every unit id fits");
        assert_eq!(unit_id(&long, 9_999, 10_000), unit_id(&long, 9_999, 10_000));
    }
}
