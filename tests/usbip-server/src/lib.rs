//! A USB/IP server for tests: the `usbip` crate serving simulated CDC-ACM
//! and HID devices on a free loopback port, with busids and USB versions
//! set as real devices have them. Debian's `usbip` client lists it
//! correctly (see the protocol client's tests).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use usbip::UsbDevice;

/// A CDC-ACM serial adapter (one interface) with these ids at `busid`.
pub fn cdc_acm(busid: &str, vendor: u16, product: u16) -> usbip::UsbDevice {
    let handler = Arc::new(Mutex::new(
        Box::new(usbip::cdc::UsbCdcAcmHandler::new()) as Box<dyn usbip::UsbInterfaceHandler + Send>
    ));
    let mut device = usbip::UsbDevice::new(2).with_interface(
        usbip::ClassCode::CDC as u8,
        usbip::cdc::CDC_ACM_SUBCLASS,
        0x00,
        Some("CDC ACM"),
        usbip::cdc::UsbCdcAcmHandler::endpoints(),
        handler,
    );
    named(&mut device, busid, vendor, product);
    device
}

/// A HID keyboard (046d:c31c) at `busid`.
pub fn hid_keyboard(busid: &str) -> usbip::UsbDevice {
    let handler = Arc::new(Mutex::new(
        Box::new(usbip::hid::UsbHidKeyboardHandler::new_keyboard()) as Box<dyn usbip::UsbInterfaceHandler + Send>
    ));
    let endpoint = usbip::UsbEndpoint { address: 0x81, attributes: 0x03, max_packet_size: 8, interval: 10 };
    let mut device = usbip::UsbDevice::new(3).with_interface(
        usbip::ClassCode::HID as u8,
        0x00,
        0x00,
        Some("Keyboard"),
        vec![endpoint],
        handler,
    );
    named(&mut device, busid, 0x046d, 0xc31c);
    device
}

/// The crate's defaults are busid `0-0-0` and USB version 0.0.0: set both, as real devices have them.
fn named(device: &mut usbip::UsbDevice, busid: &str, vendor: u16, product: u16) {
    device.bus_id = busid.into();
    device.bus_num = 1;
    device.path = format!("/sys/devices/platform/dummy_hcd.0/usb1/{busid}");
    device.vendor_id = vendor;
    device.product_id = product;
    device.usb_version = 0x0200u16.into(); // USB 2.0, as bcdUSB
}

/// Serves `devices` on a free loopback port until the test ends.
pub async fn serve(devices: Vec<UsbDevice>) -> SocketAddr {
    serve_changeable(devices).await.0
}

/// Serves `devices` on a free loopback port; the server, to add and remove
/// devices while it serves (`add_device`, `remove_device`).
pub async fn serve_changeable(devices: Vec<UsbDevice>) -> (SocketAddr, Arc<usbip::UsbIpServer>) {
    let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap();
    let server = Arc::new(usbip::UsbIpServer::new_simulated(devices));
    tokio::spawn(usbip::server(addr, server.clone()));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return (addr, server);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the usbip crate's server did not listen on {addr}");
}

/// Serves `devices` on a thread of its own (for tests that are not async):
/// the server's address. It serves until the test process ends.
pub fn serve_in_background(devices: Vec<UsbDevice>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        runtime.block_on(async move {
            tx.send(serve(devices).await).expect("the test waits for the address");
            std::future::pending::<()>().await
        })
    });
    rx.recv().expect("the server thread starts")
}
