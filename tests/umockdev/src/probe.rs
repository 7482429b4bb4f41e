//! The `udev-probe` helper: what a libudev client sees, as text.
//!
//! `udev-probe [SUBSYSTEM | tag:TAG]...`
//!
//! Run under a testbed ([`crate::Testbed::command`]), it shows what the agent
//! would see: it binds a libudev monitor (`udev::MonitorBuilder`) matching the
//! subsystems and tags, enumerates the devices of the subsystems (all devices if
//! none; tags do not filter the enumeration), then prints every event the
//! monitor receives until it is killed or its stdin closes. A line `enumerate`
//! on stdin enumerates again. One line per record, fields separated by tabs:
//!
//! ```text
//! DEVICE      <devpath>  subsystem=<s>  devnode=<path|->  parent=<devpath|->  usb=<vid:pid|->  serial=<ID_SERIAL|->
//! ENUMERATED  <count>
//! LISTENING
//! EVENT       <action>   <devpath>  subsystem=…  devnode=…  parent=…  usb=…  serial=…
//! ```
//!
//! `usb=` is the `idVendor:idProduct` attributes of the nearest `usb_device`
//! ancestor (or the device itself), read through sysfs; `serial=` is the
//! device's own `ID_SERIAL` property. The monitor is bound *before* enumerating, so no event falls
//! between the two. With stdin at end of file (`< /dev/null`) it stops right
//! after `LISTENING`: an enumeration-only run.

use std::io::{self, BufRead as _, Write as _};
use std::os::fd::AsFd as _;
use std::process::ExitCode;

use rustix::event::{PollFd, PollFlags, poll};

/// Runs the probe with its command-line arguments (without the program name).
pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let filters: Vec<String> = args.into_iter().collect();
    match run(&filters) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("udev-probe: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(filters: &[String]) -> io::Result<()> {
    let socket = listen(filters)?;
    enumerate(filters)?;
    println!("LISTENING");
    io::stdout().flush()?;

    let stdin = io::stdin();
    let mut stdin_open = true;
    while stdin_open {
        let mut fds = [PollFd::new(&socket, PollFlags::IN), PollFd::from_borrowed_fd(stdin.as_fd(), PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
        let stdin_ready = !fds[1].revents().is_empty();
        // The socket is non-blocking: take every queued event.
        for event in socket.iter() {
            let action = event.action().map(|a| a.to_string_lossy().into_owned());
            println!("EVENT\t{}\t{}", action.as_deref().unwrap_or("-"), describe(&event));
        }
        io::stdout().flush()?;
        if stdin_ready {
            // End of file (the parent closed the pipe or went away) stops the probe.
            let mut line = String::new();
            stdin_open = !matches!(stdin.lock().read_line(&mut line), Ok(0) | Err(_));
            if line.trim() == "enumerate" {
                enumerate(filters)?;
                io::stdout().flush()?;
            }
        }
    }
    Ok(())
}

fn listen(filters: &[String]) -> io::Result<udev::MonitorSocket> {
    let mut builder = udev::MonitorBuilder::new()?;
    for filter in filters {
        builder = match filter.strip_prefix("tag:") {
            Some(tag) => builder.match_tag(tag)?,
            None => builder.match_subsystem(filter)?,
        };
    }
    builder.listen()
}

fn enumerate(filters: &[String]) -> io::Result<()> {
    let mut enumerator = udev::Enumerator::new()?;
    for subsystem in filters.iter().filter(|s| !s.starts_with("tag:")) {
        enumerator.match_subsystem(subsystem)?;
    }
    let mut count = 0;
    for device in enumerator.scan_devices()? {
        println!("DEVICE\t{}", describe(&device));
        count += 1;
    }
    println!("ENUMERATED\t{count}");
    Ok(())
}

fn describe(device: &udev::Device) -> String {
    let text =
        |value: Option<&std::ffi::OsStr>| value.map_or_else(|| "-".to_owned(), |v| v.to_string_lossy().into_owned());
    let usb = if device.devtype().is_some_and(|t| t == "usb_device") {
        Some(device.clone())
    } else {
        device.parent_with_subsystem_devtype("usb", "usb_device").ok().flatten()
    };
    let usb = usb.map_or_else(
        || "-".to_owned(),
        |usb| format!("{}:{}", text(usb.attribute_value("idVendor")), text(usb.attribute_value("idProduct"))),
    );
    format!(
        "{}\tsubsystem={}\tdevnode={}\tparent={}\tusb={usb}\tserial={}",
        device.devpath().to_string_lossy(),
        text(device.subsystem()),
        device.devnode().map_or_else(|| "-".to_owned(), |p| p.display().to_string()),
        device.parent().map_or_else(|| "-".to_owned(), |p| p.devpath().to_string_lossy().into_owned()),
        text(device.property_value("ID_SERIAL")),
    )
}
