//! The testbed driven from this (non-preloaded) test process, watched by the
//! crate's `udev-probe` binary started under it: a separate, preloaded process
//! with the real libudev, as the agent is.
//!
//! The testbed is process-wide: `Testbed::new` makes the tests of this binary
//! take turns.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use devsieve_umockdev::Testbed;
use devsieve_umockdev::records::ch340;

/// The probe binary, built by cargo for this integration test.
const PROBE: &str = env!("CARGO_BIN_EXE_udev-probe");
const WAIT: Duration = Duration::from_secs(10);

/// The probe under `testbed`, with these arguments.
fn probe_command(testbed: &Testbed, args: &[&str]) -> Command {
    let mut command = testbed.command(PROBE);
    command.args(args);
    command
}

/// The probe, running in a child process under the testbed.
struct Probe {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl Probe {
    fn start(testbed: &Testbed, args: &[&str]) -> Self {
        let mut child = probe_command(testbed, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the probe");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Self { stdin: child.stdin.take(), child, lines, seen: Vec::new() }
    }

    /// Waits for the next line starting with `prefix` and holding every one of
    /// `parts`; fails the test after `WAIT`, showing what the probe printed.
    fn expect(&mut self, prefix: &str, parts: &[&str]) -> (Instant, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) && parts.iter().all(|part| line.contains(part)) {
                        return (at, line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {prefix} line with {parts:?} within {WAIT:?}; probe printed:\n{}", self.seen.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("probe ended without a {prefix} line with {parts:?}; it printed:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// The next EVENT line, whatever it is.
    fn next_event(&mut self) -> (Instant, String) {
        self.expect("EVENT\t", &[])
    }

    /// Asks the probe to enumerate again; returns the DEVICE lines.
    fn enumerate(&mut self) -> Vec<String> {
        let stdin = self.stdin.as_mut().expect("probe stdin");
        stdin.write_all(b"enumerate\n").and_then(|()| stdin.flush()).expect("writing to the probe");
        let start = self.seen.len();
        self.expect("ENUMERATED", &[]);
        self.seen[start..].iter().filter(|l| l.starts_with("DEVICE")).cloned().collect()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> String {
    line.split('\t').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')).unwrap_or("").to_owned()
}

fn devpath(syspath: &str) -> &str {
    syspath.strip_prefix("/sys").unwrap_or(syspath)
}

/// Whether `line` is an EVENT (`action`) or DEVICE (`action` empty) line for `syspath`.
fn is_for(line: &str, action: &str, syspath: &str) -> bool {
    let record = if action.is_empty() { "DEVICE".to_owned() } else { format!("EVENT\t{action}") };
    line.starts_with(&format!("{record}\t{}\t", devpath(syspath)))
}

#[test]
fn hotplug_reaches_a_preloaded_child() {
    let testbed = Testbed::new().expect("testbed");
    assert!(testbed.sys_dir().is_dir(), "testbed at {:?}", testbed.root_dir());
    let first = testbed.add_from_string(&ch340(1, 0)).expect("first CH340");
    assert_eq!(first.len(), 4);

    // The child enumerates what was there when it started, parents included.
    let mut probe = Probe::start(&testbed, &["tty", "usb"]);
    let (_, tty0) = probe.expect("DEVICE", &["/tty/ttyUSB0\t"]);
    assert_eq!(field(&tty0, "subsystem"), "tty", "{tty0}");
    assert_eq!(field(&tty0, "devnode"), "/dev/ttyUSB0", "{tty0}");
    assert_eq!(field(&tty0, "serial"), "1a86_USB2.0-Serial_1", "{tty0}");
    assert_eq!(field(&tty0, "usb"), "1a86:7523", "parent chain: {tty0}");
    assert!(field(&tty0, "parent").ends_with("/1-1:1.0/ttyUSB0"), "{tty0}");
    probe.expect("LISTENING", &[]);
    assert_eq!(testbed.monitors(), 1, "the probe's monitor socket");

    // Plug in a second adapter: devices first, then `add` events parent-first.
    let second = testbed.add_from_string(&ch340(2, 1)).expect("second CH340");
    let (tty1, usb1) = (&second[0], &second[3]);
    let sent = Instant::now();
    for syspath in second.iter().rev() {
        assert_eq!(testbed.uevent(syspath, "add").expect("add uevent"), 1, "monitors reached");
    }
    // The usb-serial port is not in the probe's subsystems: usb, usb, then tty.
    let (at, usb_event) = probe.next_event();
    println!("emit -> child receipt (first of 4 add uevents): {:?}", at - sent);
    assert!(is_for(&usb_event, "add", usb1), "{usb_event}");
    assert!(is_for(&probe.next_event().1, "add", &second[2]));
    let (at, line) = probe.next_event();
    println!("emit -> child receipt (4 add uevents, tty last): {:?}", at - sent);
    assert!(is_for(&line, "add", tty1), "{line}");
    assert_eq!(field(&line, "devnode"), "/dev/ttyUSB1", "{line}");
    assert_eq!(field(&line, "serial"), "1a86_USB2.0-Serial_2", "event properties: {line}");
    assert_eq!(field(&line, "usb"), "1a86:7523", "parent chain of the event's device: {line}");
    let devices = probe.enumerate();
    assert!(devices.iter().any(|l| is_for(l, "", tty1)), "re-enumeration: {devices:#?}");

    // Unplug it: remove from the testbed, then `remove` events child-first.
    testbed.remove_device(usb1).expect("remove");
    let root = testbed.root_dir();
    assert!(!testbed.sys_dir().join(devpath(usb1).trim_start_matches('/')).exists());
    assert!(!root.join("dev/ttyUSB1").exists(), "device node left behind");
    assert!(root.join("sys/class/tty/ttyUSB1").symlink_metadata().is_err(), "class link left behind");
    let sent = Instant::now();
    for syspath in &second {
        assert_eq!(testbed.uevent(syspath, "remove").expect("remove uevent"), 1, "monitors reached");
    }
    let (at, line) = probe.next_event();
    println!("emit -> child receipt (remove): {:?}", at - sent);
    assert!(is_for(&line, "remove", tty1), "{line}");
    // Properties travel in the event; sysfs (parents, attributes) is gone.
    assert_eq!(field(&line, "devnode"), "/dev/ttyUSB1", "{line}");
    assert_eq!(field(&line, "serial"), "1a86_USB2.0-Serial_2", "{line}");
    assert_eq!(field(&line, "parent"), "-", "{line}");
    assert!(is_for(&probe.next_event().1, "remove", &second[2]));
    assert!(is_for(&probe.next_event().1, "remove", usb1));
    let devices = probe.enumerate();
    assert!(!devices.iter().any(|l| l.contains("/usb1/1-2")), "after removal: {devices:#?}");
    assert!(devices.iter().any(|l| is_for(l, "", &first[0])), "after removal: {devices:#?}");
}

#[test]
fn events_reach_only_bound_matching_monitors() {
    let testbed = Testbed::new().expect("testbed");
    let devices = testbed.add_from_string(&ch340(3, 2)).expect("CH340");
    let (tty, usb) = (&devices[0], &devices[3]);
    let serial = testbed
        .add_from_string("P: /devices/platform/serial8250/tty/ttyS0\nN: ttyS0\nE: SUBSYSTEM=tty\n")
        .expect("ttyS0");

    // Nobody listens yet: the event goes nowhere, and is not kept for later.
    assert_eq!(testbed.uevent(tty, "add").expect("uevent"), 0);

    // An enumeration-only run (stdin at EOF) started after the devices were added.
    let output = probe_command(&testbed, &["tty"]).stdin(Stdio::null()).output().expect("enumeration-only probe");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| is_for(l, "", tty)).unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(field(line, "usb"), "1a86:7523", "{line}");
    assert!(stdout.lines().any(|l| is_for(l, "", &serial[0])), "{stdout}");
    assert!(!stdout.lines().any(|l| is_for(l, "", usb)), "subsystem filter: {stdout}");

    // A monitor matching subsystem tty and tag uaccess (libudev's in-kernel
    // filters use the subsystem hash and tag bloom of the event header).
    let mut probe = Probe::start(&testbed, &["tty", "tag:uaccess"]);
    assert!(testbed.wait_for_monitors(1, WAIT), "the probe bound no monitor");
    // Only the tty's event, none for its parents: it still resolves them.
    let sent = Instant::now();
    testbed.uevent(tty, "add").expect("uevent");
    let (at, line) = probe.next_event();
    println!("emit -> child receipt (single add): {:?}", at - sent);
    assert!(is_for(&line, "add", tty), "{line}");
    assert_eq!(field(&line, "usb"), "1a86:7523", "{line}");
    // Filtered out in the child: ttyS0 has no uaccess tag, the usb device is not a tty.
    assert_eq!(testbed.uevent(&serial[0], "change").expect("uevent"), 1);
    assert_eq!(testbed.uevent(usb, "change").expect("uevent"), 1);
    testbed.uevent(tty, "change").expect("uevent");
    let (_, line) = probe.next_event();
    assert!(is_for(&line, "change", tty), "filtered events got through: {line}");

    // A closed monitor's socket refuses the connection and is cleaned up.
    drop(probe);
    assert_eq!(testbed.monitors(), 0);
    assert_eq!(testbed.uevent(tty, "remove").expect("uevent"), 0);
    let root = testbed.root_dir().to_owned();
    drop(testbed);
    assert!(!root.exists(), "{root:?} left behind");
}
