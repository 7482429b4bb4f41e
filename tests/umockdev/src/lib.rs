//! A umockdev testbed an integration test drives at run time, watched by a
//! separate process (the agent under test) that uses the real libudev.
//!
//! The test process makes the testbed through libumockdev's C API and is *not*
//! preloaded; [`Testbed::command`] starts a program with the preload library and
//! `UMOCKDEV_DIR`, so that its libudev enumerates the testbed's sysfs and its
//! libudev monitors receive the uevents [`Testbed::uevent`] sends (this crate
//! sends those itself: see [`Testbed::uevent`] for why).
//!
//! ```no_run
//! use std::time::Duration;
//! use devsieve_umockdev::Testbed;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let testbed = Testbed::new()?;
//! testbed.add_from_string("P: /devices/platform/serial8250/tty/ttyS0\nN: ttyS0\nE: SUBSYSTEM=tty\n")?;
//! let mut agent = testbed.command("devsieve").arg("run").spawn()?;
//! // Events sent before the agent's monitor is bound are lost.
//! assert!(testbed.wait_for_monitors(1, Duration::from_secs(10)));
//! let added = testbed.add_from_string("P: /devices/platform/serial8250/tty/ttyS1\nN: ttyS1\nE: SUBSYSTEM=tty\n")?;
//! testbed.uevent(&added[0], "add")?;
//! testbed.remove_device(&added[0])?;
//! testbed.uevent(&added[0], "remove")?;
//! agent.kill()?;
//! # Ok(()) }
//! ```
//!
//! A testbed is process-wide (libumockdev sets `UMOCKDEV_DIR` in this process's
//! environment), so only one exists at a time: [`Testbed::new`] waits while
//! another thread holds one, which serialises tests in one test binary.

mod ffi;
pub mod probe;
pub mod records;
mod uevent;

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The preload library `umockdev-wrapper` puts in `LD_PRELOAD`.
const PRELOAD_SONAME: &str = "libumockdev-preload.so.0";
/// libumockdev's library directory, from pkg-config at build time.
const LIBDIR: &str = env!("DEVSIEVE_UMOCKDEV_LIBDIR");

/// Held by the live testbed, if any.
static ACTIVE: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds `ACTIVE` (a second testbed on it would deadlock).
    static HELD_HERE: Cell<bool> = const { Cell::new(false) };
}

/// What can go wrong driving a testbed.
#[derive(Debug)]
pub enum Error {
    /// `umockdev_testbed_new` returned NULL.
    Create,
    /// This thread already holds a testbed; there is one per process.
    AlreadyActive,
    /// libumockdev refused a record; its message.
    Record(String),
    /// No such device in the testbed (nor, for `uevent`, one seen before).
    NoDevice(String),
    /// A string for libumockdev held a NUL byte.
    Nul(String),
    /// Reading the testbed or sending a uevent failed.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create => f.write_str("umockdev_testbed_new failed"),
            Self::AlreadyActive => {
                f.write_str("this thread already holds a umockdev testbed (one per process at a time)")
            }
            Self::Record(message) => write!(f, "umockdev refused the record: {message}"),
            Self::NoDevice(syspath) => write!(f, "no device {syspath} in the testbed"),
            Self::Nul(text) => write!(f, "string with a NUL byte for umockdev: {text:?}"),
            Self::Io(error) => write!(f, "umockdev testbed: {error}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(error) => Some(error),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// A umockdev testbed: a temporary sysfs/dev tree, and uevents for the processes
/// started under it.
///
/// Dropping it removes its directory (libumockdev's finaliser does; a killed test
/// leaves `/tmp/umockdev.XXXXXX` behind). Stop the processes started by
/// [`Self::command`] first.
pub struct Testbed {
    raw: Option<ffi::RawTestbed>,
    root_dir: PathBuf,
    /// Last properties seen per devpath, for `remove` events after removal.
    known: RefCell<uevent::Known>,
    seqnum: Cell<u64>,
    _active: MutexGuard<'static, ()>,
}

impl fmt::Debug for Testbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Testbed").field("root_dir", &self.root_dir).finish_non_exhaustive()
    }
}

impl Testbed {
    /// Creates the testbed (`/tmp/umockdev.XXXXXX`). Waits while another thread
    /// holds one; fails if this thread does.
    pub fn new() -> Result<Self, Error> {
        if HELD_HERE.get() {
            return Err(Error::AlreadyActive);
        }
        // A test that panicked with a testbed poisons the lock; its testbed is gone.
        let active = ACTIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let raw = ffi::RawTestbed::new().ok_or(Error::Create)?;
        HELD_HERE.set(true);
        let root_dir = PathBuf::from(raw.root_dir());
        Ok(Self { raw: Some(raw), root_dir, known: RefCell::default(), seqnum: Cell::new(1), _active: active })
    }

    fn raw(&self) -> &ffi::RawTestbed {
        self.raw.as_ref().expect("the testbed lives until drop")
    }

    /// The testbed's directory, `UMOCKDEV_DIR` of the processes under it.
    pub fn root_dir(&self) -> &Path {
        &self.root_dir
    }

    /// The testbed's `sys/` directory: what preloaded processes see as `/sys`.
    pub fn sys_dir(&self) -> PathBuf {
        self.root_dir.join("sys")
    }

    /// Adds devices from a umockdev record (`P:`, `N:`, `E:`, `A:`, `L:` lines;
    /// devices separated by blank lines). Sends no uevent. Returns the syspaths
    /// (`/sys/devices/…`) of the devices, in record order.
    pub fn add_from_string(&self, record: &str) -> Result<Vec<String>, Error> {
        let data = ffi::c_string(record).ok_or_else(|| Error::Nul(record.to_owned()))?;
        self.raw().add_from_string(&data).map_err(Error::Record)?;
        let syspaths: Vec<String> = record
            .lines()
            .filter_map(|line| line.strip_prefix("P:"))
            .map(|devpath| format!("/sys{}", devpath.trim()))
            .collect();
        for syspath in &syspaths {
            self.properties(syspath)?;
        }
        Ok(syspaths)
    }

    /// Removes a device and its children from the testbed: their sysfs
    /// directories, `/sys/class` and `/sys/bus` links and `/dev` nodes. Sends no
    /// uevent.
    pub fn remove_device(&self, syspath: &str) -> Result<(), Error> {
        let devpath = devpath(syspath);
        if !self.sys_dir().join(devpath.trim_start_matches('/')).is_dir() {
            return Err(Error::NoDevice(syspath.to_owned()));
        }
        let c_syspath = format!("/sys{devpath}");
        let c_syspath = ffi::c_string(&c_syspath).ok_or(Error::Nul(c_syspath))?;
        self.raw().remove_device(&c_syspath);
        // libumockdev removes the directory tree but leaves the children's class
        // and bus links dangling and the `/dev` nodes in place; the kernel does not.
        let nodes: Vec<String> = self
            .known
            .borrow()
            .iter()
            .filter(|(known, _)| {
                known.strip_prefix(devpath.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .filter_map(|(_, properties)| properties.iter().find(|(key, _)| key == "DEVNAME"))
            .map(|(_, devname)| devname.clone())
            .collect();
        for devname in nodes {
            let node = self.root_dir.join(devname.trim_start_matches('/'));
            if node.symlink_metadata().is_ok() {
                std::fs::remove_file(node)?;
            }
        }
        let sys = self.sys_dir();
        for links in [sys.join("class"), sys.join("bus")] {
            remove_dangling_links(&links, 3)?;
        }
        Ok(())
    }

    /// Sends a uevent (`add`, `remove`, `change`, `bind`, `unbind`, …) for a
    /// device (`/sys/devices/…` or `/devices/…`) to every libudev monitor bound by
    /// processes under this testbed; returns how many monitors got it. Monitors
    /// bound later never see it (see [`Self::wait_for_monitors`]).
    ///
    /// The event carries what udevd would send: DEVPATH, SUBSYSTEM, SEQNUM and the
    /// device's `uevent` properties (the record's `E:` lines, DEVNAME as
    /// `/dev/…`, DRIVER from the `driver` link). For a device already removed
    /// from the testbed, the properties last seen for it are sent, so `remove`
    /// can follow [`Self::remove_device`] as it follows the kernel's removal.
    ///
    /// `umockdev_testbed_uevent` is not used: it looks the device up with this
    /// process's libudev, which without the preload library reads the real
    /// `/sys` and finds nothing.
    pub fn uevent(&self, syspath: &str, action: &str) -> Result<usize, Error> {
        let properties = match self.properties(syspath)? {
            Some(properties) => properties,
            None => self
                .known
                .borrow()
                .get(&devpath(syspath))
                .cloned()
                .ok_or_else(|| Error::NoDevice(syspath.to_owned()))?,
        };
        let seqnum = self.seqnum.get();
        self.seqnum.set(seqnum + 1);
        let message = uevent::message(action, seqnum, &properties);
        Ok(uevent::send_all(&self.root_dir, &message)?)
    }

    /// Reads a device's current properties and remembers them.
    fn properties(&self, syspath: &str) -> Result<Option<uevent::Properties>, Error> {
        let devpath = devpath(syspath);
        let properties = uevent::read_properties(&self.root_dir, &devpath)?;
        if let Some(properties) = &properties {
            self.known.borrow_mut().insert(devpath, properties.clone());
        }
        Ok(properties)
    }

    /// How many libudev monitors processes under this testbed have bound and not
    /// closed (a monitor exists from `MonitorBuilder::listen`).
    pub fn monitors(&self) -> usize {
        uevent::sockets(&self.root_dir).unwrap_or_default().iter().filter(|socket| uevent::is_live(socket)).count()
    }

    /// Waits until at least `count` monitors are bound; false on timeout.
    pub fn wait_for_monitors(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.monitors() >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A command running `program` in a separate process under this testbed: the
    /// umockdev preload library in `LD_PRELOAD` (ahead of any already there) and
    /// `UMOCKDEV_DIR`, as `umockdev-wrapper` does.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut preload = preload_library().into_os_string();
        if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
            preload.push(":");
            preload.push(existing);
        }
        let mut command = Command::new(program);
        command.env("LD_PRELOAD", preload).env("UMOCKDEV_DIR", &self.root_dir);
        command
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        drop(self.raw.take());
        // libumockdev's finaliser removes the directory; make sure of it.
        if self.root_dir.exists() {
            let _ = std::fs::remove_dir_all(&self.root_dir);
        }
        HELD_HERE.set(false);
    }
}

/// The preload library's path: in libumockdev's libdir if there, else the bare
/// soname for the dynamic loader to find.
pub fn preload_library() -> PathBuf {
    let path = Path::new(LIBDIR).join(PRELOAD_SONAME);
    if !LIBDIR.is_empty() && path.exists() { path } else { PathBuf::from(PRELOAD_SONAME) }
}

/// Removes symlinks whose target is gone, `depth` levels down from `dir`.
fn remove_dangling_links(dir: &Path, depth: u32) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_symlink() {
            if std::fs::metadata(&path).is_err() {
                std::fs::remove_file(&path)?;
            }
        } else if depth > 1 && entry.file_type()?.is_dir() {
            remove_dangling_links(&path, depth - 1)?;
        }
    }
    Ok(())
}

/// `/devices/…` from that or a syspath (`/sys/devices/…`).
fn devpath(path: &str) -> String {
    path.strip_prefix("/sys").filter(|rest| rest.starts_with('/')).unwrap_or(path).to_owned()
}
