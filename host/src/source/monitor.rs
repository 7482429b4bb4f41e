//! udev events: a libudev monitor (netlink) on a thread of its own that
//! hands each event on as a plain [`UdevEvent`], and says when the monitor
//! is down and up again so the evaluation can fall back to re-enumeration.
//!
//! The thread blocks in `poll(2)` without a timeout: an agent whose devices
//! do not change does not wake up.

use std::os::fd::AsFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};

use crate::model::{Action, UdevEvent};
use crate::support::backoff::Backoff;

/// What the monitor thread reports.
#[derive(Debug)]
pub enum MonitorReport {
    /// Listening: every event from now on will be reported.
    Up,
    /// The monitor failed; events are being missed until the next `Up`.
    Down(String),
    Event(UdevEvent),
}

/// Opening the monitor again after it failed.
const REOPEN: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// Opens monitors; a trait so the retry logic can be tested without netlink.
pub trait MonitorOpener: Send + 'static {
    type Monitor: MonitorSocket;
    fn open(&mut self) -> std::io::Result<Self::Monitor>;
}

/// A listening monitor: block until events arrive, then take them.
pub trait MonitorSocket {
    /// Blocks until at least one event is ready.
    fn wait(&mut self) -> std::io::Result<()>;
    /// The events ready now; an error if some were lost.
    fn drain(&mut self) -> std::io::Result<Vec<UdevEvent>>;
}

/// The real libudev monitor.
pub struct Libudev;

pub struct LibudevMonitor(udev::MonitorSocket);

impl MonitorOpener for Libudev {
    type Monitor = LibudevMonitor;
    fn open(&mut self) -> std::io::Result<LibudevMonitor> {
        Ok(LibudevMonitor(udev::MonitorBuilder::new()?.listen()?))
    }
}

impl MonitorSocket for LibudevMonitor {
    fn wait(&mut self) -> std::io::Result<()> {
        let fd = self.0.as_fd();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        loop {
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
            let revents = fds[0].revents();
            if revents.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) {
                return Err(std::io::Error::other(format!("monitor socket reported {revents:?}")));
            }
            return Ok(());
        }
    }

    fn drain(&mut self) -> std::io::Result<Vec<UdevEvent>> {
        let events = self.0.iter().filter_map(|event| convert(&event)).collect();
        // The iterator ends on the first receive that fails; the crate drops
        // its error. ENOBUFS means the kernel dropped events for us (the
        // socket buffer overflowed): what we know is stale.
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) {
            return Err(std::io::Error::other(format!("events were lost ({error}); re-enumerating")));
        }
        Ok(events)
    }
}

fn convert(event: &udev::Event) -> Option<UdevEvent> {
    let action = match event.event_type() {
        udev::EventType::Add => Action::Add,
        udev::EventType::Change => Action::Change,
        udev::EventType::Remove => Action::Remove,
        udev::EventType::Bind => Action::Bind,
        udev::EventType::Unbind => Action::Unbind,
        udev::EventType::Unknown => return None,
    };
    let device = event.device();
    Some(UdevEvent {
        action,
        devpath: device.devpath().to_string_lossy().into_owned(),
        syspath: device.syspath().to_path_buf(),
        subsystem: device.subsystem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    })
}

/// Runs the monitor on a new thread, reporting through `report` until it
/// returns false (the receiver is gone). A monitor that fails is opened
/// again with backoff.
pub fn spawn<O: MonitorOpener>(
    opener: O,
    report: impl FnMut(MonitorReport) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("devsieve-udev".into()).spawn(move || run(opener, report, std::thread::sleep))
}

fn run<O: MonitorOpener>(mut opener: O, mut report: impl FnMut(MonitorReport) -> bool, sleep: impl Fn(Duration)) {
    let mut reopen = REOPEN;
    loop {
        let mut monitor = match opener.open() {
            Ok(monitor) => monitor,
            Err(error) => {
                if !report(MonitorReport::Down(format!("cannot open the udev monitor: {error}"))) {
                    return;
                }
                sleep(reopen.next_delay());
                continue;
            }
        };
        reopen.reset();
        if !report(MonitorReport::Up) {
            return;
        }
        loop {
            if let Err(error) = monitor.wait() {
                if !report(MonitorReport::Down(format!("the udev monitor failed: {error}"))) {
                    return;
                }
                break;
            }
            let events = match monitor.drain() {
                Ok(events) => events,
                Err(error) => {
                    if !report(MonitorReport::Down(format!("the udev monitor failed: {error}"))) {
                        return;
                    }
                    break;
                }
            };
            for event in events {
                if !report(MonitorReport::Event(event)) {
                    return;
                }
            }
        }
        sleep(reopen.peek());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Opens fail or succeed as scripted; a monitor yields one event, then fails.
    struct Scripted(VecDeque<bool>);
    struct OneEvent(bool);

    impl MonitorOpener for Scripted {
        type Monitor = OneEvent;
        fn open(&mut self) -> std::io::Result<OneEvent> {
            match self.0.pop_front() {
                Some(true) => Ok(OneEvent(false)),
                _ => Err(std::io::Error::other("no netlink here")),
            }
        }
    }

    impl MonitorSocket for OneEvent {
        fn wait(&mut self) -> std::io::Result<()> {
            if std::mem::replace(&mut self.0, true) { Err(std::io::Error::other("socket closed")) } else { Ok(()) }
        }
        fn drain(&mut self) -> std::io::Result<Vec<UdevEvent>> {
            Ok(vec![UdevEvent {
                action: Action::Add,
                devpath: "/devices/x".into(),
                syspath: "/sys/devices/x".into(),
                subsystem: "tty".into(),
            }])
        }
    }

    #[test]
    fn a_failing_monitor_is_reported_down_and_reopened_with_backoff() {
        let mut reports = Vec::new();
        let slept = std::cell::RefCell::new(Vec::new());
        let mut budget = 8;
        run(
            Scripted([false, false, true, true].into()),
            |r| {
                reports.push(match r {
                    MonitorReport::Up => "up".to_string(),
                    MonitorReport::Down(e) => format!("down: {e}"),
                    MonitorReport::Event(e) => format!("event {}", e.devpath),
                });
                budget -= 1;
                budget > 0
            },
            |d| slept.borrow_mut().push(d),
        );
        assert_eq!(
            reports,
            [
                "down: cannot open the udev monitor: no netlink here",
                "down: cannot open the udev monitor: no netlink here",
                "up",
                "event /devices/x",
                "down: the udev monitor failed: socket closed",
                "up",
                "event /devices/x",
                "down: the udev monitor failed: socket closed",
            ]
        );
        let first = REOPEN.peek();
        assert_eq!(slept.borrow()[..3], [first, first * 2, first], "backoff doubles while opening fails");
    }
}
