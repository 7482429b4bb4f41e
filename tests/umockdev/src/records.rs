//! umockdev records of common devices, for tests that plug them in.

/// A CH340 USB serial adapter (1a86:7523, as 3D printers carry) on port
/// `port` of bus 1, with its interface, usb-serial port and the tty
/// `ttyUSB<n>`; parents last, as `umockdev-record` writes them.
pub fn ch340(port: u32, n: u32) -> String {
    let usb = format!("/devices/pci0000:00/0000:00:14.0/usb1/1-{port}");
    let interface = format!("{usb}/1-{port}:1.0");
    format!(
        "P: {interface}/ttyUSB{n}/tty/ttyUSB{n}
N: ttyUSB{n}
E: DEVNAME=/dev/ttyUSB{n}
E: MAJOR=188
E: MINOR={n}
E: ID_SERIAL=1a86_USB2.0-Serial_{port}
E: TAGS=:systemd:uaccess:
E: SUBSYSTEM=tty

P: {interface}/ttyUSB{n}
E: DRIVER=ch341-uart
E: SUBSYSTEM=usb-serial
L: driver=../../../../../../bus/usb-serial/drivers/ch341-uart

P: {interface}
E: DEVTYPE=usb_interface
E: DRIVER=ch341
E: INTERFACE=255/1/2
E: SUBSYSTEM=usb
A: bInterfaceClass=ff
L: driver=../../../../../bus/usb/drivers/ch341

P: {usb}
N: bus/usb/001/{port:03}
E: DEVNAME=/dev/bus/usb/001/{port:03}
E: DEVTYPE=usb_device
E: DRIVER=usb
E: PRODUCT=1a86/7523/254
E: SUBSYSTEM=usb
A: idVendor=1a86
A: idProduct=7523
A: busnum=1
A: devnum={port}
A: serial=SER{port}
L: driver=../../../../bus/usb/drivers/usb
"
    )
}
