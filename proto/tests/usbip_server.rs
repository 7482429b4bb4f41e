//! The USB/IP client against real peers: the `usbip` crate serving simulated
//! CDC-ACM and HID devices on loopback, and Debian's `usbip` client (package
//! `usbip`) listing the same server — both must see the same devices.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use devsieve_proto::usbip::{self, ImportRefused, UsbipError};
use devsieve_usbip_server::{cdc_acm, hid_keyboard, serve};

const TIMEOUT: Duration = Duration::from_secs(5);

/// `usbip --tcp-port PORT list -r 127.0.0.1`: each device's busid and vendor:product.
fn debian_client_lists(server: SocketAddr) -> Vec<(String, String)> {
    // Debian installs it in /usr/sbin, which a user's PATH may not hold.
    let program = ["/usr/sbin/usbip", "/usr/bin/usbip"].into_iter().find(|p| std::path::Path::new(p).exists());
    let output = Command::new(program.unwrap_or("usbip"))
        .args(["--tcp-port", &server.port().to_string(), "list", "-r", "127.0.0.1"])
        .output()
        .expect("Debian's usbip client is not installed (package usbip); .ci/setup --tests installs it");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "usbip list failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    // A device's line: `      1-1: QinHeng Electronics : HL-340 USB-Serial adapter (1a86:7523)`;
    // its class (`: … (00/00/00)`) and interface (`0 - … (02/02/00)`) lines have no busid or ids.
    let mut listed: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let (busid, rest) = line.trim().split_once(": ")?;
            let ids = rest.rsplit_once('(')?.1.strip_suffix(')')?;
            (!busid.is_empty() && ids.contains(':')).then(|| (busid.to_string(), ids.to_string()))
        })
        .collect();
    listed.sort();
    listed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_and_debians_usbip_list_the_same_devices() {
    let server = serve(vec![cdc_acm("1-1", 0x1a86, 0x7523), hid_keyboard("1-2")]).await;
    let devices = usbip::list_devices(server, TIMEOUT).await.unwrap();
    let mut ours: Vec<(String, String)> =
        devices.iter().map(|d| (d.busid.clone(), format!("{:04x}:{:04x}", d.id_vendor, d.id_product))).collect();
    ours.sort();
    assert_eq!(ours, [("1-1".to_string(), "1a86:7523".to_string()), ("1-2".into(), "046d:c31c".into())]);
    let cdc = devices.iter().find(|d| d.busid == "1-1").unwrap();
    assert_eq!((cdc.busnum, cdc.devnum, cdc.speed), (1, 2, 3));
    assert_eq!(cdc.interfaces.len(), usize::from(cdc.num_interfaces));
    assert_eq!((cdc.interfaces[0].class, cdc.interfaces[0].subclass), (0x02, 0x02), "CDC, ACM");

    let debian = tokio::task::spawn_blocking(move || debian_client_lists(server)).await.unwrap();
    assert_eq!(debian, ours, "Debian's usbip and devsieve list the same busids and ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_device_is_held_until_its_connection_closes() {
    let server = serve(vec![cdc_acm("1-1", 0x1a86, 0x7523)]).await;
    let (connection, device) = usbip::import(server, "1-1", TIMEOUT).await.unwrap();
    assert_eq!((device.busid.as_str(), device.id_vendor, device.id_product), ("1-1", 0x1a86, 0x7523));
    assert!(usbip::list_devices(server, TIMEOUT).await.unwrap().is_empty(), "an imported device is not listed");

    let again = usbip::import(server, "1-1", TIMEOUT).await.unwrap_err();
    assert!(
        matches!(again, UsbipError::Refused { refused: ImportRefused::NotAvailable, ref busid, .. } if busid == "1-1"),
        "{again}"
    );
    let unknown = usbip::import(server, "9-9", TIMEOUT).await.unwrap_err();
    assert!(matches!(unknown, UsbipError::Refused { .. }), "{unknown}");

    drop(connection);
    for _ in 0..100 {
        if !usbip::list_devices(server, TIMEOUT).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the device was not listed again after its connection closed");
}
