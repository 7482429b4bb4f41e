//! The kernel's USB/IP virtual host controller (`vhci_hcd`) as sysfs shows
//! it: reading which ports are free, and attaching and detaching a remote
//! device on one. This file owns the sysfs text formats, the kernel's errno
//! answers, and the choice of a free port; it knows nothing of how the
//! socket was connected or what the device is for.
//!
//! Everything goes through the small [`Vhci`] trait, so the choice of a port
//! is tested against a model of the kernel's rules; [`SysfsVhci`] is the one
//! implementation that touches the OS.
//!
//! What the kernel does, and this file relies on:
//! - `status`, `status.1` … hold one line per port of each controller; the
//!   port number in them is global (what `attach` and `detach` take).
//! - `attach` takes `"port sockfd devid speed"` in one `write(2)` and answers
//!   in that write's result: `EBUSY` for a port in use, `EINVAL` for an fd
//!   that is not a socket, a port out of range or a speed it does not support.
//!   The fd is looked up in the writing process, which may close it afterwards
//!   (the kernel keeps its own reference).
//! - The hub (high-speed or SuperSpeed) is chosen by the speed, and only the
//!   port's index within a hub is taken from the port number: a port of the
//!   other hub is not refused but silently becomes its twin on the right one.
//!   [`SysfsVhci::attach`] therefore refuses such a port itself.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

/// Where `vhci_hcd` puts its device under sysfs, in the order they are
/// tried: the platform bus, then the faux bus newer kernels may move it to.
const DEVICE_DIRS: [&str; 2] = ["devices/platform/vhci_hcd.0", "devices/faux/vhci_hcd.0"];

/// The header every status file starts with, as whitespace-separated words.
const STATUS_HEADER: [&str; 7] = ["hub", "port", "sta", "spd", "dev", "sockfd", "local_busid"];

/// `USB_SPEED_SUPER`: from this speed up a device goes on the SuperSpeed hub.
const USB_SPEED_SUPER: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum VhciError {
    #[error(
        "no USB/IP virtual host controller: neither {} nor {} has an `attach` file; \
         load the `vhci_hcd` kernel module on the node (`modprobe vhci-hcd`)",
        platform.display(), faux.display()
    )]
    NotFound { platform: PathBuf, faux: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} has no `status` file: it is not a vhci_hcd device directory", dir.display())]
    NoStatus { dir: PathBuf },
    #[error("{file} line {line}: {problem}: {text:?}")]
    Malformed { file: String, line: usize, problem: &'static str, text: String },
    #[error("cannot open {} for writing: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write {text:?} to {}: {source}", path.display())]
    Write { path: PathBuf, text: String, source: io::Error },
    #[error("vhci port {port} is already in use (another attacher took it): choose another free port")]
    PortBusy { port: u32 },
    #[error("vhci port {port} is on the {found} hub, but a device of speed {speed} needs a port of the {wanted} hub")]
    WrongHub { port: u32, speed: u32, wanted: Hub, found: Hub },
    #[error(
        "the kernel refused to attach port {port} at speed {speed}: the fd given is not a socket, \
         or the port is out of range, or the kernel does not support that speed \
         (kernels before SuperSpeed+ support refuse speed 6)"
    )]
    AttachRefused { port: u32, speed: u32, source: io::Error },
    #[error("the kernel refused to detach port {port}: nothing is attached there, or there is no such port")]
    DetachRefused { port: u32, source: io::Error },
    #[error("no free port left on the vhci {hub} hub: detach a device to make room")]
    NoFreePort { hub: Hub },
}

/// One of the two root hubs each vhci controller has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hub {
    /// `hs`: low-, full- and high-speed devices (USB 1 and 2).
    High,
    /// `ss`: SuperSpeed and SuperSpeed+ devices (USB 3).
    Super,
}

impl Hub {
    /// The hub the kernel puts a device of `speed` (a `usb_device_speed`) on.
    pub fn for_speed(speed: u32) -> Hub {
        if speed >= USB_SPEED_SUPER { Hub::Super } else { Hub::High }
    }
}

impl fmt::Display for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hub::High => "high-speed (hs)",
            Hub::Super => "SuperSpeed (ss)",
        })
    }
}

/// A vhci port's state (`sta`), the kernel's `VDEV_ST_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// `VDEV_ST_NULL` (4): nothing attached; the only state `attach` accepts.
    Free,
    /// `VDEV_ST_NOTASSIGNED` (5): attached, the device not yet enumerated.
    NotAssigned,
    /// `VDEV_ST_USED` (6): a device is attached.
    Used,
    /// `VDEV_ST_ERROR` (7): the connection failed; the port is being released.
    Error,
    /// A value this file does not know; treated as not free.
    Other(u32),
}

impl PortState {
    fn from_raw(raw: u32) -> PortState {
        match raw {
            4 => PortState::Free,
            5 => PortState::NotAssigned,
            6 => PortState::Used,
            7 => PortState::Error,
            other => PortState::Other(other),
        }
    }
}

/// One line of a status file: one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortStatus {
    pub hub: Hub,
    /// The global port number, what `attach` and `detach` take.
    pub port: u32,
    pub state: PortState,
    /// The attached device's `usb_device_speed` (0 when free).
    pub speed: u32,
    /// The remote device, `busnum << 16 | devnum` (0 when free).
    pub devid: u32,
    /// The fd number the attacher wrote, in its own process (0 when free).
    pub sockfd: u32,
    /// The attached device's bus id on this node, such as `3-1` (`0-0` when free).
    pub local_busid: String,
}

impl PortStatus {
    pub fn is_free(&self) -> bool {
        self.state == PortState::Free
    }
}

/// Parses one status file; `file_name` names it in errors. Strict: a line
/// that is not exactly the kernel's format is an error, since guessing at a
/// port's state could attach over a device that is in use.
pub fn parse_status(file_name: &str, text: &str) -> Result<Vec<PortStatus>, VhciError> {
    let malformed = |line: usize, problem: &'static str, text: &str| VhciError::Malformed {
        file: file_name.to_string(),
        line,
        problem,
        text: text.to_string(),
    };
    let mut lines = text.lines().enumerate().map(|(index, line)| (index + 1, line));
    match lines.next() {
        Some((_, header)) if header.split_whitespace().eq(STATUS_HEADER) => {}
        Some((number, header)) => {
            return Err(malformed(number, "expected the header `hub port sta spd dev sockfd local_busid`", header));
        }
        None => return Err(malformed(1, "empty, expected the header line", "")),
    }
    lines.map(|(number, line)| parse_port_line(line).map_err(|problem| malformed(number, problem, line))).collect()
}

/// One port line: `hs  0000 006 003 00010002 000003 2-1`.
fn parse_port_line(line: &str) -> Result<PortStatus, &'static str> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [hub, port, state, speed, devid, sockfd, local_busid] = fields[..] else {
        return Err("expected 7 fields: hub port sta spd dev sockfd local_busid");
    };
    let hub = match hub {
        "hs" => Hub::High,
        "ss" => Hub::Super,
        _ => return Err("the hub must be `hs` or `ss`"),
    };
    Ok(PortStatus {
        hub,
        port: decimal(port).ok_or("the port must be a decimal number")?,
        state: PortState::from_raw(decimal(state).ok_or("the state (sta) must be a decimal number")?),
        speed: decimal(speed).ok_or("the speed (spd) must be a decimal number")?,
        devid: hex(devid).ok_or("the device (dev) must be a hexadecimal number")?,
        sockfd: decimal(sockfd).ok_or("the sockfd must be a decimal number")?,
        local_busid: local_busid.to_string(),
    })
}

// Digits only: `u32::from_str` would also take a sign, which the kernel never writes.
fn decimal(field: &str) -> Option<u32> {
    (!field.is_empty() && field.bytes().all(|b| b.is_ascii_digit())).then(|| field.parse().ok()).flatten()
}

fn hex(field: &str) -> Option<u32> {
    (!field.is_empty() && field.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(field, 16).ok())
        .flatten()
}

/// The virtual host controller: the small trait in front of the OS.
pub trait Vhci: Send + Sync {
    /// Every port of every controller, in the order the kernel lists them.
    fn ports(&self) -> Result<Vec<PortStatus>, VhciError>;

    /// Attaches the remote device `devid` (`busnum << 16 | devnum` on the
    /// server) of `speed` to `port`, over `socket`: a connected TCP socket
    /// whose USB/IP import succeeded. `port` must be free and on the hub for
    /// `speed` ([`VhciError::PortBusy`], [`VhciError::WrongHub`] otherwise).
    /// The kernel keeps its own reference to the socket: the caller may close
    /// it afterwards.
    fn attach(&self, port: u32, socket: BorrowedFd<'_>, devid: u32, speed: u32) -> Result<(), VhciError>;

    /// Detaches whatever is attached to `port`.
    fn detach(&self, port: u32) -> Result<(), VhciError>;
}

/// Attaches a device to the first free port of the hub its speed needs and
/// returns that port. Another attacher (another agent, `usbip attach`) may
/// take a port between the read of the ports and the write: then the next
/// free port is tried.
pub fn attach_free_port(vhci: &dyn Vhci, socket: BorrowedFd<'_>, devid: u32, speed: u32) -> Result<u32, VhciError> {
    let hub = Hub::for_speed(speed);
    let mut free: Vec<u32> =
        vhci.ports()?.into_iter().filter(|p| p.hub == hub && p.is_free()).map(|p| p.port).collect();
    free.sort_unstable();
    for port in free {
        match vhci.attach(port, socket, devid, speed) {
            Ok(()) => return Ok(port),
            Err(VhciError::PortBusy { .. }) => continue,
            Err(error) => return Err(error),
        }
    }
    Err(VhciError::NoFreePort { hub })
}

/// `vhci_hcd` through its sysfs directory.
#[derive(Clone, Debug)]
pub struct SysfsVhci {
    dir: PathBuf,
}

impl SysfsVhci {
    /// Finds the controller under `sysfs_root` (`/sys` on a node).
    pub fn probe(sysfs_root: &Path) -> Result<SysfsVhci, VhciError> {
        for dir in DEVICE_DIRS.map(|dir| sysfs_root.join(dir)) {
            let attach = dir.join("attach");
            match std::fs::metadata(&attach) {
                Ok(_) => return Ok(SysfsVhci { dir }),
                Err(error) if matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
                // Something is there but cannot be looked at (permissions):
                // saying "load the module" would send a person the wrong way.
                Err(source) => return Err(VhciError::Read { path: attach, source }),
            }
        }
        let [platform, faux] = DEVICE_DIRS.map(|dir| sysfs_root.join(dir));
        Err(VhciError::NotFound { platform, faux })
    }

    /// `status`, `status.1`, `status.2` …, in controller order (numerically:
    /// `status.10` after `status.9`).
    fn status_files(&self) -> Result<Vec<PathBuf>, VhciError> {
        let read_error = |source| VhciError::Read { path: self.dir.clone(), source };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(read_error)? {
            let name = entry.map_err(read_error)?.file_name();
            let controller = match name.to_str() {
                Some("status") => 0,
                Some(name) => match name.strip_prefix("status.").and_then(decimal) {
                    Some(controller) => controller,
                    None => continue,
                },
                None => continue,
            };
            files.push((controller, self.dir.join(name)));
        }
        if !files.iter().any(|(controller, _)| *controller == 0) {
            return Err(VhciError::NoStatus { dir: self.dir.clone() });
        }
        files.sort();
        Ok(files.into_iter().map(|(_, path)| path).collect())
    }
}

impl SysfsVhci {
    /// The controller's sysfs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Vhci for SysfsVhci {
    fn ports(&self) -> Result<Vec<PortStatus>, VhciError> {
        let mut ports = Vec::new();
        for path in self.status_files()? {
            let text =
                std::fs::read_to_string(&path).map_err(|source| VhciError::Read { path: path.clone(), source })?;
            ports.extend(parse_status(&path.display().to_string(), &text)?);
        }
        Ok(ports)
    }

    fn attach(&self, port: u32, socket: BorrowedFd<'_>, devid: u32, speed: u32) -> Result<(), VhciError> {
        // The kernel would take a port of the other hub as its twin on the
        // speed's hub: the device would land on a port nobody asked for.
        let wanted = Hub::for_speed(speed);
        if let Some(status) = self.ports()?.into_iter().find(|p| p.port == port)
            && status.hub != wanted
        {
            return Err(VhciError::WrongHub { port, speed, wanted, found: status.hub });
        }
        let text = format!("{port} {} {devid} {speed}", socket.as_raw_fd());
        let path = self.dir.join("attach");
        write_attribute(&path, &text).map_err(|source| attach_error(path, text, port, speed, source))
    }

    fn detach(&self, port: u32) -> Result<(), VhciError> {
        let text = port.to_string();
        let path = self.dir.join("detach");
        write_attribute(&path, &text).map_err(|source| detach_error(path, text, port, source))
    }
}

/// A write failure, told apart from failing to open: only the write's errno
/// is the kernel's answer to the request.
enum WriteFailure {
    Open(io::Error),
    Write(io::Error),
}

/// Writes `text` to a sysfs attribute in exactly one `write(2)`: the kernel
/// parses each write as a whole request and answers in its result, so the
/// text must neither be split nor buffered past the call. Opened write-only,
/// never created or truncated: a missing file means a missing controller.
fn write_attribute(path: &Path, text: &str) -> Result<(), WriteFailure> {
    let mut file = OpenOptions::new().write(true).open(path).map_err(WriteFailure::Open)?;
    match file.write(text.as_bytes()) {
        Ok(written) if written == text.len() => Ok(()),
        Ok(written) => Err(WriteFailure::Write(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("the kernel took {written} of {} bytes", text.len()),
        ))),
        Err(error) => Err(WriteFailure::Write(error)),
    }
}

fn attach_error(path: PathBuf, text: String, port: u32, speed: u32, failure: WriteFailure) -> VhciError {
    let source = match failure {
        WriteFailure::Open(source) => return VhciError::Open { path, source },
        WriteFailure::Write(source) => source,
    };
    match Errno::from_io_error(&source) {
        Some(Errno::BUSY) => VhciError::PortBusy { port },
        Some(Errno::INVAL) => VhciError::AttachRefused { port, speed, source },
        _ => VhciError::Write { path, text, source },
    }
}

fn detach_error(path: PathBuf, text: String, port: u32, failure: WriteFailure) -> VhciError {
    let source = match failure {
        WriteFailure::Open(source) => return VhciError::Open { path, source },
        WriteFailure::Write(source) => source,
    };
    match Errno::from_io_error(&source) {
        Some(Errno::INVAL) => VhciError::DetachRefused { port, source },
        _ => VhciError::Write { path, text, source },
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::sync::Mutex;

    use super::*;
    use crate::attach::fake::{FakeVhci, free_port};

    const HEADER: &str = "hub port sta spd dev      sockfd local_busid";
    // Lines as a real kernel (Debian 12, 6.1) writes them.
    const FREE_HS: &str = "hs  0000 004 000 00000000 000000 0-0";
    const USED_HS: &str = "hs  0000 006 003 00010002 000003 2-1";

    /// A status file: the header, then `lines`.
    fn status_text(lines: &[String]) -> String {
        let mut text = format!("{HEADER}\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    fn free_line(hub: Hub, port: u32) -> String {
        let hub = if hub == Hub::Super { "ss" } else { "hs" };
        format!("{hub}  {port:04} 004 000 00000000 000000 0-0")
    }

    /// A connected TCP socket on loopback (and the listener that keeps it so).
    fn loopback_socket() -> (TcpListener, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener, stream)
    }

    // --- Parsing ---

    #[test]
    fn parses_the_kernels_free_and_used_lines() {
        let text = status_text(&[FREE_HS.into(), USED_HS.into(), "ss  0015 004 000 00000000 000000 0-0".into()]);
        let ports = parse_status("status", &text).unwrap();
        assert_eq!(ports.len(), 3);
        assert_eq!(ports[0], free_port(Hub::High, 0));
        assert!(ports[0].is_free());
        assert_eq!(
            ports[1],
            PortStatus {
                hub: Hub::High,
                port: 0,
                state: PortState::Used,
                speed: 3,
                devid: 0x0001_0002,
                sockfd: 3,
                local_busid: "2-1".into()
            }
        );
        assert!(!ports[1].is_free());
        assert_eq!((ports[2].hub, ports[2].port, ports[2].is_free()), (Hub::Super, 15, true));
    }

    #[test]
    fn only_the_null_state_is_free() {
        let with_state = |sta: &str| {
            let text = status_text(&[format!("hs  0003 {sta} 003 00010002 000003 2-1")]);
            parse_status("status", &text).unwrap().remove(0)
        };
        assert_eq!(with_state("004").state, PortState::Free);
        assert!(with_state("004").is_free());
        for (sta, state) in [
            ("005", PortState::NotAssigned),
            ("006", PortState::Used),
            ("007", PortState::Error),
            ("009", PortState::Other(9)),
        ] {
            let port = with_state(sta);
            assert_eq!(port.state, state);
            assert!(!port.is_free(), "state {sta} is not free");
        }
    }

    #[test]
    fn a_header_alone_is_no_ports() {
        assert!(parse_status("status", &format!("{HEADER}\n")).unwrap().is_empty());
    }

    #[test]
    fn malformed_lines_name_the_file_and_line() {
        let cases = [
            (String::new(), 1),
            ("prt sta spd bus dev socket local_busid\n".to_string(), 1),
            (status_text(&[FREE_HS.into(), "hs  0001 004 000 00000000 000000".into()]), 3),
            (status_text(&["xs  0000 004 000 00000000 000000 0-0".into()]), 2),
            (status_text(&["hs  +001 004 000 00000000 000000 0-0".into()]), 2),
            (status_text(&["hs  0000 004 000 0000000g 000000 0-0".into()]), 2),
            (status_text(&["hs  99999999999 004 000 00000000 000000 0-0".into()]), 2),
            (status_text(&[FREE_HS.into(), "hs  0000 004 000 00000000 000000 0-0 extra".into()]), 3),
            (status_text(&[FREE_HS.into(), String::new(), FREE_HS.into()]), 3),
        ];
        for (text, expected_line) in cases {
            let error = parse_status("status.1", &text).expect_err(&text);
            let VhciError::Malformed { file, line, .. } = &error else { panic!("{text:?}: {error:?}") };
            assert_eq!((file.as_str(), *line), ("status.1", expected_line), "{text:?}");
            assert!(error.to_string().starts_with(&format!("status.1 line {expected_line}: ")), "{error}");
        }
    }

    #[test]
    fn the_speed_picks_the_hub() {
        // usb_device_speed: UNKNOWN, LOW, FULL, HIGH, WIRELESS, SUPER, SUPER_PLUS.
        let hubs: Vec<Hub> = (0..=6).map(Hub::for_speed).collect();
        use Hub::{High, Super};
        assert_eq!(hubs, [High, High, High, High, High, Super, Super]);
    }

    // --- SysfsVhci over a directory tree ---

    /// A vhci device directory under `root` at `dir` with `attach`, `detach`
    /// and the given status files (name, text).
    fn vhci_tree(root: &Path, dir: &str, status: &[(&str, String)]) -> PathBuf {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("attach"), "").unwrap();
        std::fs::write(dir.join("detach"), "").unwrap();
        std::fs::write(dir.join("nports"), "240\n").unwrap();
        for (name, text) in status {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    /// One controller with two ports per hub: hs 0, 1 and ss 2, 3.
    fn one_controller() -> Vec<(&'static str, String)> {
        let lines =
            [free_line(Hub::High, 0), free_line(Hub::High, 1), free_line(Hub::Super, 2), free_line(Hub::Super, 3)];
        vec![("status", status_text(&lines))]
    }

    #[test]
    fn probes_the_platform_bus_then_the_faux_bus() {
        let root = tempfile::tempdir().unwrap();
        let faux = vhci_tree(root.path(), "devices/faux/vhci_hcd.0", &one_controller());
        assert_eq!(SysfsVhci::probe(root.path()).unwrap().dir(), faux);

        let platform = vhci_tree(root.path(), "devices/platform/vhci_hcd.0", &one_controller());
        assert_eq!(SysfsVhci::probe(root.path()).unwrap().dir(), platform, "the platform bus comes first");
    }

    #[test]
    fn a_directory_without_attach_is_not_a_controller() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("devices/platform/vhci_hcd.0")).unwrap();
        let faux = vhci_tree(root.path(), "devices/faux/vhci_hcd.0", &one_controller());
        assert_eq!(SysfsVhci::probe(root.path()).unwrap().dir(), faux);
    }

    #[test]
    fn without_a_controller_the_error_names_both_places_and_the_module() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("devices/platform")).unwrap();
        let error = SysfsVhci::probe(root.path()).unwrap_err();
        assert!(matches!(error, VhciError::NotFound { .. }), "{error:?}");
        let message = error.to_string();
        for place in ["devices/platform/vhci_hcd.0", "devices/faux/vhci_hcd.0"] {
            assert!(message.contains(&root.path().join(place).display().to_string()), "{message}");
        }
        assert!(message.contains("vhci_hcd` kernel module"), "{message}");
    }

    #[test]
    fn reads_every_status_file_in_controller_order() {
        let root = tempfile::tempdir().unwrap();
        // Named so that a lexical order (status.10 before status.2) would be wrong.
        let files = [("status", 0), ("status.1", 30), ("status.2", 60), ("status.10", 300)]
            .map(|(name, port)| (name, status_text(&[free_line(Hub::High, port)])));
        let mut status = files.to_vec();
        status.push(("status.orig", "not a status file".into()));
        vhci_tree(root.path(), "devices/platform/vhci_hcd.0", &status);
        let vhci = SysfsVhci::probe(root.path()).unwrap();
        let ports: Vec<u32> = vhci.ports().unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [0, 30, 60, 300]);
    }

    #[test]
    fn a_malformed_status_file_is_named_by_its_path() {
        let root = tempfile::tempdir().unwrap();
        let mut status = one_controller();
        status.push(("status.1", status_text(&["hs  0030 004 000".into()])));
        let dir = vhci_tree(root.path(), "devices/platform/vhci_hcd.0", &status);
        let error = SysfsVhci::probe(root.path()).unwrap().ports().unwrap_err();
        let expected = format!("{} line 2: ", dir.join("status.1").display());
        assert!(error.to_string().starts_with(&expected), "{error}");
    }

    #[test]
    fn a_controller_without_status_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        vhci_tree(root.path(), "devices/platform/vhci_hcd.0", &[]);
        let error = SysfsVhci::probe(root.path()).unwrap().ports().unwrap_err();
        assert!(matches!(error, VhciError::NoStatus { .. }), "{error:?}");
    }

    #[test]
    fn attach_and_detach_write_the_kernels_text() {
        let root = tempfile::tempdir().unwrap();
        let dir = vhci_tree(root.path(), "devices/platform/vhci_hcd.0", &one_controller());
        let vhci = SysfsVhci::probe(root.path()).unwrap();
        let (_listener, socket) = loopback_socket();
        vhci.attach(3, socket.as_fd(), 0x0002_0005, 5).unwrap();
        let expected = format!("3 {} 131077 5", socket.as_raw_fd());
        assert_eq!(std::fs::read_to_string(dir.join("attach")).unwrap(), expected);
        vhci.detach(3).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("detach")).unwrap(), "3");
    }

    #[test]
    fn attach_refuses_a_port_of_the_other_hub_before_writing() {
        let root = tempfile::tempdir().unwrap();
        let dir = vhci_tree(root.path(), "devices/platform/vhci_hcd.0", &one_controller());
        let vhci = SysfsVhci::probe(root.path()).unwrap();
        let (_listener, socket) = loopback_socket();
        let error = vhci.attach(0, socket.as_fd(), 1, 6).unwrap_err();
        assert!(
            matches!(error, VhciError::WrongHub { port: 0, speed: 6, wanted: Hub::Super, found: Hub::High }),
            "{error:?}"
        );
        let error = vhci.attach(2, socket.as_fd(), 1, 3).unwrap_err();
        assert!(
            matches!(error, VhciError::WrongHub { port: 2, wanted: Hub::High, found: Hub::Super, .. }),
            "{error:?}"
        );
        assert_eq!(std::fs::read_to_string(dir.join("attach")).unwrap(), "", "nothing was written");
    }

    #[test]
    fn attach_neither_creates_nor_truncates_the_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = vhci_tree(root.path(), "devices/platform/vhci_hcd.0", &one_controller());
        let vhci = SysfsVhci::probe(root.path()).unwrap();
        let (_listener, socket) = loopback_socket();

        std::fs::write(dir.join("attach"), "#".repeat(40)).unwrap();
        vhci.attach(1, socket.as_fd(), 7, 3).unwrap();
        let text = format!("1 {} 7 3", socket.as_raw_fd());
        let written = std::fs::read_to_string(dir.join("attach")).unwrap();
        assert_eq!(written, format!("{text}{}", "#".repeat(40 - text.len())));

        std::fs::remove_file(dir.join("attach")).unwrap();
        let error = vhci.attach(1, socket.as_fd(), 7, 3).unwrap_err();
        let VhciError::Open { path, source } = &error else { panic!("{error:?}") };
        assert_eq!((path.as_path(), source.kind()), (dir.join("attach").as_path(), io::ErrorKind::NotFound));
        assert!(!dir.join("attach").exists());
    }

    #[test]
    fn the_kernels_errno_is_classified() {
        let write = |errno: Errno| WriteFailure::Write(io::Error::from_raw_os_error(errno.raw_os_error()));
        let path = || PathBuf::from("/sys/devices/platform/vhci_hcd.0/attach");
        let text = || "4 3 65538 3".to_string();

        let error = attach_error(path(), text(), 4, 3, write(Errno::BUSY));
        assert!(matches!(error, VhciError::PortBusy { port: 4 }), "{error:?}");
        let error = attach_error(path(), text(), 4, 3, write(Errno::INVAL));
        assert!(matches!(error, VhciError::AttachRefused { port: 4, speed: 3, .. }), "{error:?}");
        assert!(error.to_string().contains("port 4"), "{error}");
        let error = attach_error(path(), text(), 4, 3, write(Errno::AGAIN));
        let VhciError::Write { source, .. } = &error else { panic!("{error:?}") };
        assert_eq!(Errno::from_io_error(source), Some(Errno::AGAIN), "the cause is kept");
        assert!(error.to_string().contains("/sys/devices/platform/vhci_hcd.0/attach"), "{error}");
        let error =
            attach_error(path(), text(), 4, 3, WriteFailure::Open(io::Error::from(io::ErrorKind::PermissionDenied)));
        assert!(matches!(error, VhciError::Open { .. }), "{error:?}");

        let error = detach_error(path(), "4".into(), 4, write(Errno::INVAL));
        assert!(matches!(error, VhciError::DetachRefused { port: 4, .. }), "{error:?}");
        let error = detach_error(path(), "4".into(), 4, write(Errno::BUSY));
        assert!(matches!(error, VhciError::Write { .. }), "EBUSY means nothing special to detach: {error:?}");
    }

    #[test]
    fn attach_free_port_over_sysfs_writes_the_first_free_port_of_the_hub() {
        let root = tempfile::tempdir().unwrap();
        let lines = [USED_HS.to_string(), free_line(Hub::High, 1), free_line(Hub::Super, 2)];
        let dir = vhci_tree(root.path(), "devices/platform/vhci_hcd.0", &[("status", status_text(&lines))]);
        let vhci = SysfsVhci::probe(root.path()).unwrap();
        let (_listener, socket) = loopback_socket();
        assert_eq!(attach_free_port(&vhci, socket.as_fd(), 0x0001_0003, 3).unwrap(), 1);
        let expected = format!("1 {} 65539 3", socket.as_raw_fd());
        assert_eq!(std::fs::read_to_string(dir.join("attach")).unwrap(), expected);
    }

    /// A kernel where another attacher takes `stolen` after the ports were
    /// read and before our write reaches `attach`.
    struct RacingVhci {
        kernel: FakeVhci,
        stolen: u32,
        tried: Mutex<Vec<u32>>,
    }

    const THIEF_DEVID: u32 = 0x0009_0009;

    impl Vhci for RacingVhci {
        fn ports(&self) -> Result<Vec<PortStatus>, VhciError> {
            self.kernel.ports()
        }

        fn attach(&self, port: u32, socket: BorrowedFd<'_>, devid: u32, speed: u32) -> Result<(), VhciError> {
            self.tried.lock().unwrap().push(port);
            if port == self.stolen {
                self.kernel.occupy(port, THIEF_DEVID);
            }
            self.kernel.attach(port, socket, devid, speed)
        }

        fn detach(&self, port: u32) -> Result<(), VhciError> {
            self.kernel.detach(port)
        }
    }

    #[test]
    fn the_fake_marks_an_attached_port_used() {
        let vhci = FakeVhci::new(4);
        let (_listener, socket) = loopback_socket();
        vhci.attach(2, socket.as_fd(), 0x0001_0002, 3).unwrap();
        let status = vhci.port(2);
        assert_eq!(status.state, PortState::Used);
        assert_eq!((status.speed, status.devid, status.local_busid.as_str()), (3, 0x0001_0002, "3-3"));
        assert_eq!(i32::try_from(status.sockfd).unwrap(), socket.as_raw_fd());
        assert_eq!(vhci.used_ports(), [2]);

        vhci.attach(5, socket.as_fd(), 0x0001_0003, 5).unwrap();
        assert_eq!(vhci.port(5).local_busid, "4-2", "the second SuperSpeed port");
    }

    #[test]
    fn the_fake_refuses_what_the_kernel_refuses() {
        let vhci = FakeVhci::new(4);
        let (_listener, socket) = loopback_socket();
        vhci.attach(0, socket.as_fd(), 1, 3).unwrap();

        let error = vhci.attach(0, socket.as_fd(), 2, 3).unwrap_err();
        assert!(matches!(error, VhciError::PortBusy { port: 0 }), "{error:?}");
        assert_eq!(vhci.port(0).devid, 1, "the attached device stays");

        let file = tempfile::tempfile().unwrap();
        let error = vhci.attach(1, file.as_fd(), 2, 3).unwrap_err();
        assert!(matches!(error, VhciError::AttachRefused { port: 1, .. }), "a file is not a socket: {error:?}");

        let error = vhci.attach(1, socket.as_fd(), 2, 5).unwrap_err();
        assert!(matches!(error, VhciError::WrongHub { port: 1, wanted: Hub::Super, .. }), "{error:?}");
        let error = vhci.attach(4, socket.as_fd(), 2, 2).unwrap_err();
        assert!(matches!(error, VhciError::WrongHub { port: 4, wanted: Hub::High, .. }), "{error:?}");

        let error = vhci.attach(8, socket.as_fd(), 2, 3).unwrap_err();
        assert!(matches!(error, VhciError::AttachRefused { port: 8, .. }), "out of range: {error:?}");
        let error = vhci.attach(1, socket.as_fd(), 2, 0).unwrap_err();
        assert!(matches!(error, VhciError::AttachRefused { speed: 0, .. }), "unknown speed: {error:?}");

        assert_eq!(vhci.used_ports(), [0], "nothing refused was attached");
    }

    #[test]
    fn the_fake_detaches_only_a_used_port() {
        let vhci = FakeVhci::new(2);
        let (_listener, socket) = loopback_socket();
        vhci.attach(1, socket.as_fd(), 1, 3).unwrap();
        let error = vhci.detach(0).unwrap_err();
        assert!(matches!(error, VhciError::DetachRefused { port: 0, .. }), "a free port: {error:?}");
        let error = vhci.detach(9).unwrap_err();
        assert!(matches!(error, VhciError::DetachRefused { port: 9, .. }), "no such port: {error:?}");
        vhci.detach(1).unwrap();
        assert!(vhci.port(1).is_free());
        assert_eq!(vhci.port(1).local_busid, "0-0");
        assert!(vhci.detach(1).is_err(), "detached already");
    }

    #[test]
    fn attaches_to_the_lowest_free_port_of_the_speeds_hub() {
        let vhci = FakeVhci::new(4);
        vhci.occupy(0, 1);
        vhci.occupy(2, 2);
        let (_listener, socket) = loopback_socket();
        assert_eq!(attach_free_port(&vhci, socket.as_fd(), 0x0001_0004, 2).unwrap(), 1);
        assert_eq!(attach_free_port(&vhci, socket.as_fd(), 0x0001_0005, 3).unwrap(), 3);
        assert_eq!(vhci.port(1).devid, 0x0001_0004);
        assert_eq!(vhci.port(3).devid, 0x0001_0005);
    }

    #[test]
    fn a_port_taken_in_a_race_moves_the_attach_to_the_next() {
        let vhci = RacingVhci { kernel: FakeVhci::new(4), stolen: 0, tried: Mutex::new(Vec::new()) };
        let (_listener, socket) = loopback_socket();
        assert_eq!(attach_free_port(&vhci, socket.as_fd(), 0x0001_0002, 3).unwrap(), 1);
        assert_eq!(*vhci.tried.lock().unwrap(), [0, 1]);
        assert_eq!(vhci.kernel.port(0).devid, THIEF_DEVID, "the other attacher keeps its port");
        assert_eq!(vhci.kernel.port(1).devid, 0x0001_0002);
    }

    #[test]
    fn a_superspeed_plus_device_lands_on_a_superspeed_port() {
        let vhci = FakeVhci::new(4);
        let (_listener, socket) = loopback_socket();
        let port = attach_free_port(&vhci, socket.as_fd(), 0x0002_0002, 6).unwrap();
        assert_eq!(port, 4, "the first SuperSpeed port");
        let status = vhci.port(port);
        assert_eq!((status.hub, status.speed, status.local_busid.as_str()), (Hub::Super, 6, "4-1"));
    }

    #[test]
    fn a_full_hub_is_no_free_port_even_with_the_other_hub_free() {
        let vhci = FakeVhci::new(2);
        vhci.occupy(0, 1);
        let (_listener, socket) = loopback_socket();
        assert_eq!(attach_free_port(&vhci, socket.as_fd(), 2, 3).unwrap(), 1);
        let error = attach_free_port(&vhci, socket.as_fd(), 3, 3).unwrap_err();
        assert!(matches!(error, VhciError::NoFreePort { hub: Hub::High }), "{error:?}");
        assert!(error.to_string().contains("high-speed (hs) hub"), "{error}");
        assert_eq!(vhci.used_ports(), [0, 1], "the SuperSpeed ports stay free");
    }

    #[test]
    fn a_refusal_other_than_busy_stops_the_search() {
        let vhci = RacingVhci { kernel: FakeVhci::new(4), stolen: u32::MAX, tried: Mutex::new(Vec::new()) };
        let file = tempfile::tempfile().unwrap();
        let error = attach_free_port(&vhci, file.as_fd(), 1, 3).unwrap_err();
        assert!(matches!(error, VhciError::AttachRefused { port: 0, .. }), "{error:?}");
        assert_eq!(*vhci.tried.lock().unwrap(), [0], "a bad socket is bad on every port");
        assert!(vhci.kernel.used_ports().is_empty());
    }
}
