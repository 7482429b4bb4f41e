//! The agent against a real Linux kernel: Debian's kernel booted under qemu
//! (software emulation) with the harness in this directory, running
//! `scenarios/agent.sh` — a USB/IP export attached through the real
//! `vhci_hcd` on `Allocate`, bytes through the granted tty, release when no
//! pod holds it, and real udev hotplug (see `src/main.rs` for each check).
//! `tests/qemu/setup` (run by `.ci/setup --tests`) installs qemu and the kernel.

use std::path::Path;
use std::process::Command;

#[test]
fn the_agent_attaches_through_a_real_vhci_hcd_and_sees_real_hotplug() {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    let driver = Path::new(env!("CARGO_BIN_EXE_devsieve-qemu-driver"));
    // The agent is the workspace's other binary, built beside this one by `cargo test --workspace`.
    let agent = driver.with_file_name("devsieve");
    assert!(
        agent.exists(),
        "{} is missing: run this test with `cargo test --workspace` (or `cargo build -p devsieve` first)",
        agent.display()
    );
    assert!(
        Command::new("sh").args(["-c", "command -v qemu-system-x86_64"]).output().is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 is not installed: run tests/qemu/setup (as root; `.ci/setup --tests` does)"
    );

    let scratch = tempfile::tempdir().unwrap();
    // Debug info is four fifths of a debug build: the guest unpacks what it is given into RAM.
    let bins = scratch.path().join("bins");
    std::fs::create_dir(&bins).unwrap();
    for binary in [&agent, &driver.to_path_buf()] {
        let stripped = bins.join(binary.file_name().unwrap());
        let status = Command::new("objcopy").arg("--strip-debug").arg(binary).arg(&stripped).status().unwrap();
        assert!(status.success(), "objcopy --strip-debug {}", binary.display());
    }
    let out = scratch.path().join("guest");
    let built = Command::new(harness.join("build-initramfs"))
        .arg(&out)
        .arg(bins.join("devsieve"))
        .arg(bins.join("devsieve-qemu-driver"))
        .output()
        .unwrap();
    assert!(built.status.success(), "build-initramfs: {}", String::from_utf8_lossy(&built.stderr));

    let share = scratch.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let booted = Command::new(harness.join("boot"))
        .arg(&out)
        .arg(harness.join("scenarios/agent.sh"))
        .arg(&share)
        .arg("600")
        .env("QEMU_APPEND", "dummy_hcd.num=2")
        .env("QEMU_MEMORY", "1024M")
        .env("QEMU_COLDPLUG", "usb,tty")
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&booted.stdout).into_owned() + &String::from_utf8_lossy(&booted.stderr);
    let steps: Vec<&str> = console.lines().filter(|l| l.starts_with("step ") || l.starts_with("granted")).collect();
    println!("{}", steps.join("\n"));
    assert!(booted.status.success(), "the guest scenario failed:\n{console}");
    assert!(console.contains("DRIVER OK"), "the driver did not finish:\n{console}");
}
