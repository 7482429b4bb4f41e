//! A model of the kernel's vhci_hcd rules, for tests: ports per hub and
//! speed, EBUSY for a port in use, EINVAL for an fd that is not a socket,
//! status lines with local bus ids.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;

use rustix::fs::FileType;
use rustix::io::Errno;

use super::vhci::{Hub, PortState, PortStatus, Vhci, VhciError};

/// A free port as the kernel keeps it.
pub fn free_port(hub: Hub, port: u32) -> PortStatus {
    PortStatus { hub, port, state: PortState::Free, speed: 0, devid: 0, sockfd: 0, local_busid: "0-0".into() }
}

pub fn einval() -> io::Error {
    io::Error::from_raw_os_error(Errno::INVAL.raw_os_error())
}

/// The bus numbers the fake's hubs have on the node, for local bus ids.
pub const HS_BUS: u32 = 3;
pub const SS_BUS: u32 = 4;

/// One vhci controller as the kernel keeps it: `per_hub` high-speed
/// ports, then as many SuperSpeed ones, with the kernel's checks in its
/// order (port and speed, then the socket, then the port's state).
pub struct FakeVhci {
    per_hub: u32,
    ports: Mutex<Vec<PortStatus>>,
}

impl FakeVhci {
    pub fn new(per_hub: u32) -> Self {
        let hs = (0..per_hub).map(|port| free_port(Hub::High, port));
        let ss = (per_hub..2 * per_hub).map(|port| free_port(Hub::Super, port));
        FakeVhci { per_hub, ports: Mutex::new(hs.chain(ss).collect()) }
    }

    pub fn port(&self, port: u32) -> PortStatus {
        self.ports.lock().unwrap().iter().find(|p| p.port == port).cloned().unwrap()
    }

    /// Another attacher takes `port`.
    pub fn occupy(&self, port: u32, devid: u32) {
        let mut ports = self.ports.lock().unwrap();
        let status = ports.iter_mut().find(|p| p.port == port).unwrap();
        status.state = PortState::Used;
        status.devid = devid;
    }

    pub fn used_ports(&self) -> Vec<u32> {
        self.ports.lock().unwrap().iter().filter(|p| !p.is_free()).map(|p| p.port).collect()
    }
}

fn is_socket(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Socket)
}

impl Vhci for FakeVhci {
    fn ports(&self) -> Result<Vec<PortStatus>, VhciError> {
        Ok(self.ports.lock().unwrap().clone())
    }

    fn attach(&self, port: u32, socket: BorrowedFd<'_>, devid: u32, speed: u32) -> Result<(), VhciError> {
        let refused = || VhciError::AttachRefused { port, speed, source: einval() };
        let mut ports = self.ports.lock().unwrap();
        let Some(status) = ports.iter_mut().find(|p| p.port == port) else { return Err(refused()) };
        if !(1..=6).contains(&speed) {
            return Err(refused());
        }
        let wanted = Hub::for_speed(speed);
        if status.hub != wanted {
            return Err(VhciError::WrongHub { port, speed, wanted, found: status.hub });
        }
        if !is_socket(socket) {
            return Err(refused());
        }
        if !status.is_free() {
            return Err(VhciError::PortBusy { port });
        }
        let (bus, index) = match status.hub {
            Hub::High => (HS_BUS, port),
            Hub::Super => (SS_BUS, port - self.per_hub),
        };
        *status = PortStatus {
            state: PortState::Used,
            speed,
            devid,
            sockfd: u32::try_from(socket.as_raw_fd()).unwrap(),
            local_busid: format!("{bus}-{}", index + 1),
            ..status.clone()
        };
        Ok(())
    }

    fn detach(&self, port: u32) -> Result<(), VhciError> {
        let mut ports = self.ports.lock().unwrap();
        match ports.iter_mut().find(|p| p.port == port) {
            Some(status) if !status.is_free() => {
                *status = free_port(status.hub, port);
                Ok(())
            }
            _ => Err(VhciError::DetachRefused { port, source: einval() }),
        }
    }
}
