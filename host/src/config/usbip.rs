//! USB/IP in the config: the `usbip:` section, which servers to list and how
//! often. (usbip-device-plugin's own `config.yaml` is read in
//! [`super::peer`].)
//!
//! ```yaml
//! usbip:
//!   servers:
//!     - host: usbip.example.com   # a name or an address
//!       port: 3240                # the default
//!   refresh: 5s                   # how often each server is listed
//!   timeout: 3s                   # connect and answer, per request
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FieldError;
use crate::support::duration::{DurationError, parse_duration};

const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Listing more often than this would be polling, not refreshing.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// A USB/IP server, as the config names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    devsieve_proto::usbip::DEFAULT_PORT
}

impl fmt::Display for Server {
    /// `HOST:PORT`, an IPv6 address in brackets: the form devpaths
    /// (`usbip://HOST:PORT/BUSID`) and handler selectors use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The `usbip:` section, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct UsbipSettings {
    pub servers: Vec<Server>,
    /// How often each server's device list is asked for.
    pub refresh: Duration,
    /// How long a connection, and each answer on it, may take.
    pub timeout: Duration,
}

impl Default for UsbipSettings {
    fn default() -> Self {
        UsbipSettings { servers: Vec::new(), refresh: DEFAULT_REFRESH, timeout: DEFAULT_TIMEOUT }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsbipSettingsError {
    #[error("{0}")]
    Duration(#[from] DurationError),
    #[error("must be at least {MIN_REFRESH:?}")]
    TooShort,
    #[error("must be a host name or an address, without a scheme, port or path (write the port as `port:`)")]
    Host,
    #[error("port 0 is not a port")]
    Port,
    #[error("{0} is listed twice")]
    Duplicate(Server),
}

/// A duration as a config file writes one: `5s`, `500ms`, or a bare number of seconds.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Text(String),
    Seconds(f64),
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsbip {
    #[serde(default)]
    pub(super) servers: Vec<Server>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) refresh: Option<RawDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) timeout: Option<RawDuration>,
}

fn duration(raw: Option<RawDuration>, default: Duration) -> Result<Duration, UsbipSettingsError> {
    match raw {
        None => Ok(default),
        Some(RawDuration::Text(text)) => Ok(parse_duration(&text)?),
        Some(RawDuration::Seconds(seconds)) => Ok(parse_duration(&seconds.to_string())?),
    }
}

/// Checks a server's host and port.
fn check_server(server: &Server) -> Result<(), UsbipSettingsError> {
    let host = server.host.trim_start_matches('[').trim_end_matches(']');
    let plain = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        && (!host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok());
    if !plain {
        return Err(UsbipSettingsError::Host);
    }
    if server.port == 0 {
        return Err(UsbipSettingsError::Port);
    }
    Ok(())
}

/// The `usbip:` section checked, each error with the field it is about.
pub(super) fn check(raw: RawUsbip) -> Result<UsbipSettings, (String, UsbipSettingsError)> {
    let refresh = duration(raw.refresh, DEFAULT_REFRESH).map_err(|e| ("usbip.refresh".to_string(), e))?;
    if refresh < MIN_REFRESH {
        return Err(("usbip.refresh".into(), UsbipSettingsError::TooShort));
    }
    let timeout = duration(raw.timeout, DEFAULT_TIMEOUT).map_err(|e| ("usbip.timeout".to_string(), e))?;
    if timeout.is_zero() {
        return Err(("usbip.timeout".into(), UsbipSettingsError::TooShort));
    }
    let mut servers: Vec<Server> = Vec::with_capacity(raw.servers.len());
    for (i, mut server) in raw.servers.into_iter().enumerate() {
        let at = format!("usbip.servers[{i}]");
        check_server(&server).map_err(|e| (at.clone(), e))?;
        server.host = server.host.trim_start_matches('[').trim_end_matches(']').to_string();
        if servers.contains(&server) {
            return Err((at, UsbipSettingsError::Duplicate(server)));
        }
        servers.push(server);
    }
    Ok(UsbipSettings { servers, refresh, timeout })
}

impl From<UsbipSettingsError> for FieldError {
    fn from(error: UsbipSettingsError) -> Self {
        FieldError::Usbip(error)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, Locality};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/devsieve/config.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn servers_refresh_and_locality() {
        let config = parse(
            "usbip:\n  servers: [{host: usbip.example.com}, {host: '::1', port: 3241}]\n  refresh: 2s\n\
             resources:\n- name: stick\n  handler: usb-id\n  from: remote\n  config: {selector: {vendor: 0x1050, product: 0x0407}}\n\
             - name: local\n  handler: usb-id\n  config: {usb: [{vendor: '1a86', product: '7523'}]}\n",
        )
        .unwrap();
        assert_eq!(config.usbip.refresh, Duration::from_secs(2));
        assert_eq!(config.usbip.timeout, DEFAULT_TIMEOUT);
        let names: Vec<String> = config.usbip.servers.iter().map(Server::to_string).collect();
        assert_eq!(names, ["usbip.example.com:3240", "[::1]:3241"]);
        assert_eq!(config.resources[0].from, Locality::Remote);
        assert_eq!(config.resources[1].from, Locality::Local);
        assert!(parse("resources: []\n").unwrap().usbip.servers.is_empty());
    }

    #[test]
    fn bad_usbip_settings_name_their_field() {
        let cases = [
            ("usbip: {servers: [{host: 'http://x'}]}\nresources: []\n", "usbip.servers[0]: must be a host name"),
            ("usbip: {servers: [{host: x, port: 0}]}\nresources: []\n", "usbip.servers[0]: port 0"),
            (
                "usbip: {servers: [{host: x}, {host: x, port: 3240}]}\nresources: []\n",
                "usbip.servers[1]: x:3240 is listed twice",
            ),
            ("usbip: {servers: [{host: x}], refresh: 10ms}\nresources: []\n", "usbip.refresh: must be at least"),
            (
                "usbip: {servers: [{host: x}], refresh: soon}\nresources: []\n",
                "usbip.refresh: \"soon\" is not a duration",
            ),
            ("usbip: {servers: [{host: x}], every: 1s}\nresources: []\n", "unknown field `every`"),
            (
                "resources:\n- name: a\n  handler: usb-id\n  from: both\n",
                "resources[0] (\"a\").from: takes remote devices, but `usbip.servers` lists no server",
            ),
            ("resources:\n- name: a\n  handler: usb-id\n  from: far\n", "unknown variant `far`"),
            (
                "usbip: {servers: [{host: x}]}\nresources:\n- name: a\n  handler: usb-id\n  from: remote\n  cdi: true\n",
                "resources[0] (\"a\").cdi: a CDI name must resolve",
            ),
            (
                "resources:\n- name: a\n  handler: usb-id\n  extraDeviceNodes: [{hostPath: /etc/shadow}]\n",
                "extraDeviceNodes[0]: /etc/shadow lies outside the resource's allowed roots (/dev)",
            ),
            (
                "resources:\n- name: a\n  handler: usb-id\n  extraDeviceNodes: [{hostPath: /dev/x, permissions: rwx}]\n",
                "extraDeviceNodes[0]: \"rwx\" is not a permission set",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
