//! USB/IP's device-list and import operations, as the kernel documents them
//! (`Documentation/usb/usbip_protocol.rst`, version `0x0111`, big-endian):
//! what a USB/IP server (`usbipd`, TCP 3240) exports, and importing one of
//! its devices so that the kernel's `vhci_hcd` can attach it.
//!
//! The wire is not trusted: every count is bounded before anything is read
//! for it, every string must end in a NUL inside its field, and the async
//! client reads exactly what the reply announced, under a timeout per
//! operation. The decoding is sans-IO ([`decode_devlist`], [`decode_import`]),
//! so the same code serves the client, the tests and a fuzzer.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The protocol version every message carries.
pub const VERSION: u16 = 0x0111;
/// The port `usbipd` listens on.
pub const DEFAULT_PORT: u16 = 3240;

const OP_REQ_DEVLIST: u16 = 0x8005;
const OP_REP_DEVLIST: u16 = 0x0005;
const OP_REQ_IMPORT: u16 = 0x8003;
const OP_REP_IMPORT: u16 = 0x0003;

/// version, code, status.
const HEADER_LEN: usize = 8;
/// One exported device: path[256], busid[32], then 24 bytes of numbers.
const DEVICE_LEN: usize = 312;
/// class, subclass, protocol, padding.
const INTERFACE_LEN: usize = 4;
const PATH_LEN: usize = 256;
const BUSID_LEN: usize = 32;

/// More devices than one server's buses hold: a reply claiming more is refused
/// before anything is read for them.
pub const MAX_DEVICES: u32 = 1024;
/// A USB configuration has at most 32 interfaces.
pub const MAX_INTERFACES: u8 = 32;

/// A device a server exports, as its device list (or an import) describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportedDevice {
    /// The device's sysfs path on the server.
    pub path: String,
    /// `BUS-PORT[.PORT…]`, what an import names.
    pub busid: String,
    pub busnum: u32,
    pub devnum: u32,
    /// The kernel's `enum usb_device_speed`: 1 low, 2 full, 3 high, 4 wireless, 5 super, 6 super-plus.
    pub speed: u32,
    pub id_vendor: u16,
    pub id_product: u16,
    pub bcd_device: u16,
    pub device_class: u8,
    pub device_subclass: u8,
    pub device_protocol: u8,
    pub configuration_value: u8,
    pub num_configurations: u8,
    pub num_interfaces: u8,
    /// As listed (an import's reply lists none; a device bound but never
    /// imported lists none either, being unconfigured).
    pub interfaces: Vec<Interface>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interface {
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
}

/// What is wrong with a reply's bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the reply ends after {got} bytes, {needed} were announced")]
    Truncated { needed: usize, got: usize },
    #[error("protocol version {0:#06x}, not {VERSION:#06x}")]
    Version(u16),
    #[error("reply code {found:#06x}, expected {expected:#06x}")]
    Code { expected: u16, found: u16 },
    #[error("the device list answered status {0}")]
    ListStatus(u32),
    #[error("the device list claims {0} devices, more than {MAX_DEVICES}")]
    TooManyDevices(u32),
    #[error("device {busid:?} claims {count} interfaces, more than {MAX_INTERFACES}")]
    TooManyInterfaces { busid: String, count: u8 },
    #[error("its {0} is not NUL-terminated within its field")]
    Unterminated(&'static str),
    #[error("its {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} bytes follow the reply")]
    Trailing(usize),
}

/// Why a server refused an import (`OP_REP_IMPORT`'s status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportRefused {
    #[error("the device is not available (status 1)")]
    NotAvailable,
    #[error("the device is busy: another client has imported it (status 2)")]
    Busy,
    #[error("the device is in an error state (status 3)")]
    DeviceError,
    #[error("the server exports no such device (status 4; is it bound with `usbip bind`?)")]
    NoDevice,
    #[error("the server failed (status 5)")]
    Failed,
    #[error("the server answered status {0}")]
    Other(u32),
}

impl ImportRefused {
    fn from_status(status: u32) -> ImportRefused {
        match status {
            1 => ImportRefused::NotAvailable,
            2 => ImportRefused::Busy,
            3 => ImportRefused::DeviceError,
            4 => ImportRefused::NoDevice,
            5 => ImportRefused::Failed,
            other => ImportRefused::Other(other),
        }
    }
}

/// What an import's reply says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportReply {
    Imported(ExportedDevice),
    Refused(ImportRefused),
}

/// Why talking to a server failed; each names the server.
#[derive(Debug, thiserror::Error)]
pub enum UsbipError {
    #[error("USB/IP server {server}: cannot connect: {source}")]
    Connect { server: SocketAddr, source: std::io::Error },
    #[error("USB/IP server {server}: no answer to {operation} within {timeout:?}")]
    Timeout { server: SocketAddr, operation: &'static str, timeout: Duration },
    #[error("USB/IP server {server}: {operation}: {source}")]
    Io { server: SocketAddr, operation: &'static str, source: std::io::Error },
    #[error("USB/IP server {server}: {operation}: {source}")]
    Decode { server: SocketAddr, operation: &'static str, source: DecodeError },
    #[error("USB/IP server {server}: importing {busid}: {refused}")]
    Refused { server: SocketAddr, busid: String, refused: ImportRefused },
    #[error("busid {0:?} does not fit the 32-byte field (31 bytes and a NUL)")]
    BusidTooLong(String),
}

fn header(code: u16) -> [u8; HEADER_LEN] {
    let mut bytes = [0; HEADER_LEN];
    bytes[..2].copy_from_slice(&VERSION.to_be_bytes());
    bytes[2..4].copy_from_slice(&code.to_be_bytes());
    bytes
}

/// `OP_REQ_DEVLIST`.
pub fn devlist_request() -> [u8; HEADER_LEN] {
    header(OP_REQ_DEVLIST)
}

/// `OP_REQ_IMPORT` for `busid`.
pub fn import_request(busid: &str) -> Result<[u8; HEADER_LEN + BUSID_LEN], UsbipError> {
    if busid.len() >= BUSID_LEN || busid.contains('\0') {
        return Err(UsbipError::BusidTooLong(busid.into()));
    }
    let mut bytes = [0; HEADER_LEN + BUSID_LEN];
    bytes[..HEADER_LEN].copy_from_slice(&header(OP_REQ_IMPORT));
    bytes[HEADER_LEN..HEADER_LEN + busid.len()].copy_from_slice(busid.as_bytes());
    Ok(bytes)
}

/// Reads from a byte slice, refusing to read past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at + len;
        let slice =
            self.bytes.get(self.at..end).ok_or(DecodeError::Truncated { needed: end, got: self.bytes.len() })?;
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing(extra)),
        }
    }
}

/// The header's status, once version and code are what they must be.
fn decode_header(bytes: &[u8], expected: u16) -> Result<u32, DecodeError> {
    let version = u16::from_be_bytes([bytes[0], bytes[1]]);
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let found = u16::from_be_bytes([bytes[2], bytes[3]]);
    if found != expected {
        return Err(DecodeError::Code { expected, found });
    }
    Ok(u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]))
}

/// A NUL-terminated string filling a fixed field.
fn field_string(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
    let end = bytes.iter().position(|&b| b == 0).ok_or(DecodeError::Unterminated(field))?;
    String::from_utf8(bytes[..end].to_vec()).map_err(|_| DecodeError::NotUtf8(field))
}

/// One 312-byte device record (its interfaces follow it in a device list).
fn decode_device(bytes: &[u8]) -> Result<ExportedDevice, DecodeError> {
    let path = field_string(&bytes[..PATH_LEN], "path")?;
    let busid = field_string(&bytes[PATH_LEN..PATH_LEN + BUSID_LEN], "busid")?;
    let n = &bytes[PATH_LEN + BUSID_LEN..];
    let u32_at = |i: usize| u32::from_be_bytes(n[i..i + 4].try_into().expect("4 bytes"));
    let u16_at = |i: usize| u16::from_be_bytes([n[i], n[i + 1]]);
    Ok(ExportedDevice {
        path,
        busid,
        busnum: u32_at(0),
        devnum: u32_at(4),
        speed: u32_at(8),
        id_vendor: u16_at(12),
        id_product: u16_at(14),
        bcd_device: u16_at(16),
        device_class: n[18],
        device_subclass: n[19],
        device_protocol: n[20],
        configuration_value: n[21],
        num_configurations: n[22],
        num_interfaces: n[23],
        interfaces: Vec::new(),
    })
}

fn decode_interfaces(device: &mut ExportedDevice, bytes: &[u8]) {
    device.interfaces =
        bytes.chunks_exact(INTERFACE_LEN).map(|i| Interface { class: i[0], subclass: i[1], protocol: i[2] }).collect();
}

fn check_interfaces(device: &ExportedDevice) -> Result<usize, DecodeError> {
    if device.num_interfaces > MAX_INTERFACES {
        return Err(DecodeError::TooManyInterfaces { busid: device.busid.clone(), count: device.num_interfaces });
    }
    Ok(usize::from(device.num_interfaces) * INTERFACE_LEN)
}

fn check_device_count(ndev: u32) -> Result<usize, DecodeError> {
    if ndev > MAX_DEVICES {
        return Err(DecodeError::TooManyDevices(ndev));
    }
    Ok(ndev as usize)
}

/// A whole `OP_REP_DEVLIST`, nothing more.
pub fn decode_devlist(bytes: &[u8]) -> Result<Vec<ExportedDevice>, DecodeError> {
    let mut cursor = Cursor { bytes, at: 0 };
    let status = decode_header(cursor.take(HEADER_LEN)?, OP_REP_DEVLIST)?;
    if status != 0 {
        return Err(DecodeError::ListStatus(status));
    }
    let count = check_device_count(cursor.u32()?)?;
    let mut devices = Vec::with_capacity(count);
    for _ in 0..count {
        let mut device = decode_device(cursor.take(DEVICE_LEN)?)?;
        let interfaces = check_interfaces(&device)?;
        decode_interfaces(&mut device, cursor.take(interfaces)?);
        devices.push(device);
    }
    cursor.finish()?;
    Ok(devices)
}

/// A whole `OP_REP_IMPORT`: the device, or the status that refused it (a
/// refusal ends the reply after its header).
pub fn decode_import(bytes: &[u8]) -> Result<ImportReply, DecodeError> {
    let mut cursor = Cursor { bytes, at: 0 };
    let status = decode_header(cursor.take(HEADER_LEN)?, OP_REP_IMPORT)?;
    let reply = if status == 0 {
        ImportReply::Imported(decode_device(cursor.take(DEVICE_LEN)?)?)
    } else {
        ImportReply::Refused(ImportRefused::from_status(status))
    };
    cursor.finish()?;
    Ok(reply)
}

/// A connection to one server for one operation, every step under `timeout`.
struct Exchange {
    server: SocketAddr,
    stream: TcpStream,
    operation: &'static str,
    timeout: Duration,
}

impl Exchange {
    async fn open(server: SocketAddr, operation: &'static str, timeout: Duration) -> Result<Exchange, UsbipError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
            .await
            .map_err(|_| UsbipError::Timeout { server, operation: "connect", timeout })?
            .map_err(|source| UsbipError::Connect { server, source })?;
        Ok(Exchange { server, stream, operation, timeout })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), UsbipError> {
        let (server, operation, timeout) = (self.server, self.operation, self.timeout);
        tokio::time::timeout(timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| UsbipError::Timeout { server, operation, timeout })?
            .map_err(|source| UsbipError::Io { server, operation, source })
    }

    /// Exactly `len` more bytes, appended to `reply`; a reply that ends
    /// early says how much of it arrived.
    async fn read(&mut self, reply: &mut Vec<u8>, len: usize) -> Result<(), UsbipError> {
        let (server, operation, timeout) = (self.server, self.operation, self.timeout);
        let end = reply.len() + len;
        let mut filled = reply.len();
        reply.resize(end, 0);
        let stream = &mut self.stream;
        let fill = async {
            while filled < end {
                match stream.read(&mut reply[filled..end]).await? {
                    0 => break,
                    n => filled += n,
                }
            }
            Ok::<usize, std::io::Error>(filled)
        };
        match tokio::time::timeout(timeout, fill).await {
            Err(_) => Err(UsbipError::Timeout { server, operation, timeout }),
            Ok(Err(source)) => Err(UsbipError::Io { server, operation, source }),
            Ok(Ok(got)) if got < end => {
                Err(UsbipError::Decode { server, operation, source: DecodeError::Truncated { needed: end, got } })
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn decode_error(&self, source: DecodeError) -> UsbipError {
        UsbipError::Decode { server: self.server, operation: self.operation, source }
    }
}

/// The devices `server` exports. Each read is exact and bounded by what the
/// reply announced (and by [`MAX_DEVICES`], [`MAX_INTERFACES`]).
pub async fn list_devices(server: SocketAddr, timeout: Duration) -> Result<Vec<ExportedDevice>, UsbipError> {
    let mut exchange = Exchange::open(server, "listing devices", timeout).await?;
    exchange.send(&devlist_request()).await?;
    let mut reply = Vec::new();
    exchange.read(&mut reply, HEADER_LEN + 4).await?;
    let status = decode_header(&reply, OP_REP_DEVLIST).map_err(|e| exchange.decode_error(e))?;
    if status != 0 {
        return Err(exchange.decode_error(DecodeError::ListStatus(status)));
    }
    let ndev = u32::from_be_bytes(reply[HEADER_LEN..HEADER_LEN + 4].try_into().expect("4 bytes"));
    let count = check_device_count(ndev).map_err(|e| exchange.decode_error(e))?;
    for _ in 0..count {
        let at = reply.len();
        exchange.read(&mut reply, DEVICE_LEN).await?;
        let device = decode_device(&reply[at..]).map_err(|e| exchange.decode_error(e))?;
        let interfaces = check_interfaces(&device).map_err(|e| exchange.decode_error(e))?;
        exchange.read(&mut reply, interfaces).await?;
    }
    // What was read is exactly one reply: decode it as the tests and the fuzzer do.
    decode_devlist(&reply).map_err(|e| exchange.decode_error(e))
}

/// Imports `busid` from `server`: the connection (which the kernel takes
/// over once its socket is written to vhci_hcd's `attach`) and the device.
pub async fn import(
    server: SocketAddr,
    busid: &str,
    timeout: Duration,
) -> Result<(TcpStream, ExportedDevice), UsbipError> {
    let request = import_request(busid)?;
    let mut exchange = Exchange::open(server, "importing", timeout).await?;
    exchange.send(&request).await?;
    let mut reply = Vec::new();
    exchange.read(&mut reply, HEADER_LEN).await?;
    let status = decode_header(&reply, OP_REP_IMPORT).map_err(|e| exchange.decode_error(e))?;
    if status == 0 {
        exchange.read(&mut reply, DEVICE_LEN).await?;
    }
    match decode_import(&reply).map_err(|e| exchange.decode_error(e))? {
        ImportReply::Imported(device) => Ok((exchange.stream, device)),
        ImportReply::Refused(refused) => Err(UsbipError::Refused { server, busid: busid.into(), refused }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device record laid out as the kernel documents it, field by field.
    fn device_record(busid: &str, num_interfaces: u8) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut path = b"/sys/devices/platform/dummy_hcd.0/usb1/1-1".to_vec();
        path.resize(PATH_LEN, 0);
        bytes.extend(path);
        let mut id = busid.as_bytes().to_vec();
        id.resize(BUSID_LEN, 0);
        bytes.extend(id);
        bytes.extend(1u32.to_be_bytes()); // busnum
        bytes.extend(2u32.to_be_bytes()); // devnum
        bytes.extend(3u32.to_be_bytes()); // speed: high
        bytes.extend(0x1a86u16.to_be_bytes());
        bytes.extend(0x7523u16.to_be_bytes());
        bytes.extend(0x0264u16.to_be_bytes());
        bytes.extend([0xff, 0x00, 0x00, 1, 1, num_interfaces]);
        assert_eq!(bytes.len(), DEVICE_LEN);
        bytes
    }

    fn devlist(devices: &[(&str, u8)]) -> Vec<u8> {
        let mut bytes = vec![0x01, 0x11, 0x00, 0x05, 0, 0, 0, 0];
        bytes.extend((devices.len() as u32).to_be_bytes());
        for (busid, interfaces) in devices {
            bytes.extend(device_record(busid, *interfaces));
            for i in 0..*interfaces {
                bytes.extend([0x02, i, 0x01, 0x00]);
            }
        }
        bytes
    }

    #[test]
    fn requests_are_byte_exact() {
        assert_eq!(devlist_request(), [0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0]);
        let import = import_request("1-1").unwrap();
        assert_eq!(import[..8], [0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0]);
        assert_eq!(&import[8..11], b"1-1");
        assert!(import[11..].iter().all(|&b| b == 0));
        assert!(matches!(import_request(&"1".repeat(32)), Err(UsbipError::BusidTooLong(_))));
        assert!(import_request(&"1".repeat(31)).is_ok(), "31 bytes and the NUL fill the field");
    }

    #[test]
    fn a_device_list_decodes_field_by_field() {
        let devices = decode_devlist(&devlist(&[("1-1", 2), ("1-2", 0)])).unwrap();
        assert_eq!(devices.len(), 2);
        let first = &devices[0];
        assert_eq!(first.path, "/sys/devices/platform/dummy_hcd.0/usb1/1-1");
        assert_eq!((first.busid.as_str(), first.busnum, first.devnum, first.speed), ("1-1", 1, 2, 3));
        assert_eq!((first.id_vendor, first.id_product, first.bcd_device), (0x1a86, 0x7523, 0x0264));
        assert_eq!((first.device_class, first.num_configurations, first.num_interfaces), (0xff, 1, 2));
        assert_eq!(first.interfaces[1], Interface { class: 0x02, subclass: 1, protocol: 0x01 });
        assert!(devices[1].interfaces.is_empty(), "an unconfigured device lists no interfaces");
        assert_eq!(decode_devlist(&devlist(&[])).unwrap(), []);
    }

    #[test]
    fn bad_device_lists_are_refused_with_what_is_wrong() {
        let good = devlist(&[("1-1", 2)]);
        for cut in [0, 7, 11, 12, 100, good.len() - 1] {
            assert!(
                matches!(decode_devlist(&good[..cut]), Err(DecodeError::Truncated { got, .. }) if got == cut),
                "cut at {cut}"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(decode_devlist(&extra), Err(DecodeError::Trailing(1)));
        let mut version = good.clone();
        version[1] = 0x06;
        assert_eq!(decode_devlist(&version), Err(DecodeError::Version(0x0106)));
        let mut code = good.clone();
        code[3] = 0x03;
        assert_eq!(decode_devlist(&code), Err(DecodeError::Code { expected: 0x0005, found: 0x0003 }));
        let mut many = good.clone();
        many[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_devlist(&many), Err(DecodeError::TooManyDevices(u32::MAX)), "refused before reading");
        let mut interfaces = good.clone();
        interfaces[12 + DEVICE_LEN - 1] = 33;
        assert!(matches!(decode_devlist(&interfaces), Err(DecodeError::TooManyInterfaces { count: 33, .. })));
        let mut busid = good.clone();
        busid[12 + PATH_LEN..12 + PATH_LEN + BUSID_LEN].fill(b'1');
        assert_eq!(decode_devlist(&busid), Err(DecodeError::Unterminated("busid")));
        let mut path = good.clone();
        path[12..12 + PATH_LEN].fill(b'/');
        assert_eq!(decode_devlist(&path), Err(DecodeError::Unterminated("path")));
        let mut utf8 = good;
        utf8[12] = 0xff;
        assert_eq!(decode_devlist(&utf8), Err(DecodeError::NotUtf8("path")));
    }

    #[test]
    fn import_replies_give_the_device_or_a_distinct_refusal() {
        let mut imported = vec![0x01, 0x11, 0x00, 0x03, 0, 0, 0, 0];
        imported.extend(device_record("1-1", 0));
        let ImportReply::Imported(device) = decode_import(&imported).unwrap() else { panic!("not imported") };
        assert_eq!(device.busid, "1-1");
        let refusals: Vec<ImportRefused> = (1..=6)
            .map(|status: u32| {
                let mut reply = vec![0x01, 0x11, 0x00, 0x03];
                reply.extend(status.to_be_bytes());
                match decode_import(&reply).unwrap() {
                    ImportReply::Refused(refused) => refused,
                    other => panic!("status {status}: {other:?}"),
                }
            })
            .collect();
        use ImportRefused::*;
        assert_eq!(refusals, [NotAvailable, Busy, DeviceError, NoDevice, Failed, Other(6)]);
        assert!(Busy.to_string().contains("another client"));
        assert!(matches!(decode_import(&imported[..100]), Err(DecodeError::Truncated { .. })));
    }

    /// A server on loopback that answers each connection with `reply` (after
    /// reading the request), or never answers when `reply` is `None`.
    async fn server(reply: Option<Vec<u8>>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    // The whole request: a close with unread bytes would be a reset, not the reply.
                    let mut request = [0u8; HEADER_LEN + BUSID_LEN];
                    let _ = stream.read_exact(&mut request[..HEADER_LEN]).await;
                    if request[2..4] == OP_REQ_IMPORT.to_be_bytes() {
                        let _ = stream.read_exact(&mut request[HEADER_LEN..]).await;
                    }
                    match reply {
                        Some(reply) => {
                            let _ = stream.write_all(&reply).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_client_lists_and_imports_over_tcp() {
        let list = devlist(&[("1-1", 2), ("1-2", 1)]);
        let devices = list_devices(server(Some(list)).await, Duration::from_secs(5)).await.unwrap();
        assert_eq!(devices.iter().map(|d| d.busid.as_str()).collect::<Vec<_>>(), ["1-1", "1-2"]);

        let mut busy = vec![0x01, 0x11, 0x00, 0x03];
        busy.extend(2u32.to_be_bytes());
        let refused = import(server(Some(busy)).await, "1-1", Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(refused, UsbipError::Refused { refused: ImportRefused::Busy, .. }), "{refused}");
        assert!(refused.to_string().contains("importing 1-1"), "{refused}");
    }

    #[tokio::test]
    async fn a_silent_or_short_server_is_an_error_that_names_it() {
        let silent = server(None).await;
        let error = list_devices(silent, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(error, UsbipError::Timeout { .. }), "{error}");
        assert!(error.to_string().contains(&silent.to_string()), "{error}");

        // Closes mid-import: the header says imported, the device record is cut.
        let mut short = vec![0x01, 0x11, 0x00, 0x03, 0, 0, 0, 0];
        short.extend(&device_record("1-1", 0)[..100]);
        let error = import(server(Some(short)).await, "1-1", Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(error, UsbipError::Decode { source: DecodeError::Truncated { needed: 320, got: 108 }, .. }),
            "{error}"
        );

        // Claims a million devices: refused before reading any.
        let mut claims = vec![0x01, 0x11, 0x00, 0x05, 0, 0, 0, 0];
        claims.extend(1_000_000u32.to_be_bytes());
        let error = list_devices(server(Some(claims)).await, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(error, UsbipError::Decode { source: DecodeError::TooManyDevices(1_000_000), .. }));
    }
}
