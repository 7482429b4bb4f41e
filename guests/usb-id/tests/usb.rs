//! usb-id on synthetic udev snapshots shaped like real sysfs trees, driven
//! through needs → select → group the way the host does.

use devsieve_sdk::prelude::*;
use devsieve_sdk::{Snapshot, parse_config, testing::udev_node};
use devsieve_usb_id::{Config, UsbId};
use serde_json::{Value, json};

const PCI: &str = "/devices/pci0000:00/0000:00:14.0";

/// One node of a tree under construction.
struct N {
    node: Node,
}

fn plain(devpath: &str, subsystem: &str) -> N {
    N { node: udev_node(devpath, subsystem) }
}

fn usb_device(devpath: &str, vid: &str, pid: &str, serial: Option<&str>, bus: u32, dev: u32) -> N {
    let mut node = udev_node(devpath, "usb");
    node.devtype = Some("usb_device".into());
    node.driver = Some("usb".into());
    node.devnode = Some(format!("/dev/bus/usb/{bus:03}/{dev:03}"));
    let mut attributes = vec![
        ("busnum".to_string(), bus.to_string()),
        ("devnum".to_string(), dev.to_string()),
        ("idProduct".to_string(), pid.to_string()),
        ("idVendor".to_string(), vid.to_string()),
    ];
    if let Some(serial) = serial {
        attributes.push(("serial".into(), serial.into()));
    }
    attributes.sort();
    node.attributes = attributes;
    N { node }
}

fn interface(devpath: &str) -> N {
    let mut node = udev_node(devpath, "usb");
    node.devtype = Some("usb_interface".into());
    N { node }
}

fn with_node(devpath: &str, subsystem: &str, devnode: &str) -> N {
    let mut node = udev_node(devpath, subsystem);
    node.devnode = Some(devnode.into());
    N { node }
}

/// Orders nodes deepest first (parents after children) and links each to
/// the node whose devpath is its longest proper prefix.
fn tree(nodes: Vec<N>) -> Vec<Node> {
    let mut nodes: Vec<Node> = nodes.into_iter().map(|n| n.node).collect();
    nodes.sort_by(|a, b| {
        b.devpath.matches('/').count().cmp(&a.devpath.matches('/').count()).then(a.devpath.cmp(&b.devpath))
    });
    let paths: Vec<String> = nodes.iter().map(|n| n.devpath.clone()).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        node.parent = paths
            .iter()
            .enumerate()
            .filter(|(_, p)| node.devpath.starts_with(&format!("{p}/")))
            .max_by_key(|(_, p)| p.len())
            .map(|(j, _)| {
                assert!(j > i, "parent after child");
                j as u32
            });
    }
    nodes
}

/// The host's side, roughly: hubs and the PCI controller above them.
fn base() -> Vec<N> {
    vec![
        plain("/devices/pci0000:00", ""),
        plain(PCI, "pci"),
        usb_device(&format!("{PCI}/usb3"), "1d6b", "0003", Some("0000:00:14.0"), 3, 1),
        usb_device(&format!("{PCI}/usb1"), "1d6b", "0002", Some("0000:00:14.0"), 1, 1),
    ]
}

/// A CH340 serial adapter (no serial number) on 3-3, with its interface,
/// usb-serial port and tty.
fn ch340(port: &str, dev: u32, tty: &str) -> Vec<N> {
    let d = format!("{PCI}/usb3/{port}");
    vec![
        usb_device(&d, "1a86", "7523", None, 3, dev),
        interface(&format!("{d}/{port}:1.0")),
        plain(&format!("{d}/{port}:1.0/{tty}"), "usb-serial"),
        with_node(&format!("{d}/{port}:1.0/{tty}/tty/{tty}"), "tty", &format!("/dev/{tty}")),
    ]
}

/// A Prusa-style 3D printer: CDC ACM, with a serial number.
fn printer(port: &str, dev: u32, serial: &str, tty: &str) -> Vec<N> {
    let d = format!("{PCI}/usb1/{port}");
    vec![
        usb_device(&d, "2c99", "0002", Some(serial), 1, dev),
        interface(&format!("{d}/{port}:1.0")),
        with_node(&format!("{d}/{port}:1.0/tty/{tty}"), "tty", &format!("/dev/{tty}")),
        interface(&format!("{d}/{port}:1.1")),
    ]
}

/// A Sonoff Zigbee dongle: CP210x 10c4:ea60.
fn zigbee() -> Vec<N> {
    let d = format!("{PCI}/usb1/1-3");
    vec![
        usb_device(&d, "10c4", "ea60", Some("c8d6f3a1e2b4ed11a0c4e1b2c3d4e5f6"), 1, 7),
        interface(&format!("{d}/1-3:1.0")),
        plain(&format!("{d}/1-3:1.0/ttyUSB1"), "usb-serial"),
        with_node(&format!("{d}/1-3:1.0/ttyUSB1/tty/ttyUSB1"), "tty", "/dev/ttyUSB1"),
    ]
}

/// A UVC webcam with a microphone: two video nodes and a sound card.
fn webcam() -> Vec<N> {
    let d = format!("{PCI}/usb1/1-4");
    vec![
        usb_device(&d, "046d", "082d", Some("A1B2C3D4"), 1, 5),
        interface(&format!("{d}/1-4:1.0")),
        with_node(&format!("{d}/1-4:1.0/video4linux/video0"), "video4linux", "/dev/video0"),
        with_node(&format!("{d}/1-4:1.0/video4linux/video1"), "video4linux", "/dev/video1"),
        interface(&format!("{d}/1-4:1.1")),
        interface(&format!("{d}/1-4:1.2")),
        plain(&format!("{d}/1-4:1.2/sound/card1"), "sound"),
        with_node(&format!("{d}/1-4:1.2/sound/card1/pcmC1D0c"), "sound", "/dev/snd/pcmC1D0c"),
        with_node(&format!("{d}/1-4:1.2/sound/card1/controlC1"), "sound", "/dev/snd/controlC1"),
    ]
}

fn all(parts: Vec<Vec<N>>) -> Vec<Node> {
    tree(parts.into_iter().flatten().collect())
}

#[derive(Debug, PartialEq)]
struct G {
    id: String,
    nodes: Vec<String>,
    env: Vec<(String, String)>,
    share: u32,
    members: Vec<String>,
}

struct Run {
    needs: Requirements,
    /// devpaths the handler selected
    selected: Vec<String>,
    groups: Vec<G>,
    permissions: Vec<String>,
}

fn parse(config: &Value) -> Result<Config, HandlerError> {
    parse_config::<Config>(&config.to_string())
}

fn run(config: Value, nodes: Vec<Node>) -> Run {
    let config = parse(&config).expect("config parses");
    let needs = UsbId::needs(&config).expect("config is valid");
    // Like the host: candidates are the devices of the asked-for subsystems.
    let candidates: Vec<u32> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| needs.subsystems.contains(&n.subsystem))
        .map(|(i, _)| i as u32)
        .collect();
    let snapshot = Snapshot::from_parts(nodes.clone(), candidates).unwrap();
    // The host groups partition by partition: that must come to the same groups.
    assert_eq!(
        devsieve_sdk::testing::partitioned::<UsbId>(&config, &snapshot),
        devsieve_sdk::testing::whole::<UsbId>(&config, &snapshot),
        "grouped by partition, the groups differ"
    );
    let chosen: Vec<u32> = snapshot.candidates().filter(|d| UsbId::select(&config, *d)).map(|d| d.index()).collect();
    let snapshot = Snapshot::from_parts(nodes, chosen.clone()).unwrap();
    let selected: Vec<Device<'_>> = snapshot.candidates().collect();
    let groups = UsbId::group(&config, &selected).expect("group succeeds");
    let name = |i: u32| snapshot.device(i).devpath().to_string();
    let permissions = groups.iter().flat_map(|g| g.device_nodes.iter().map(|n| n.permissions.clone())).collect();
    let groups = groups
        .into_iter()
        .map(|g| {
            assert!(g.device_nodes.iter().all(|n| n.container_path.is_none()));
            assert!(g.mounts.is_empty());
            G {
                members: g.members.iter().map(|&i| name(i)).collect(),
                id: g.id,
                nodes: g.device_nodes.into_iter().map(|n| n.host_path).collect(),
                env: g.env,
                share: g.share,
            }
        })
        .collect();
    Run { needs, selected: chosen.into_iter().map(name).collect(), groups, permissions }
}

fn error(config: Value) -> HandlerError {
    match parse(&config) {
        Err(e) => e,
        Ok(config) => UsbId::needs(&config).expect_err("config must be refused"),
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ids(run: &Run) -> Vec<&str> {
    run.groups.iter().map(|g| g.id.as_str()).collect()
}

// ---- needs ----

#[test]
fn needs_usb_only_without_children() {
    let run = run(json!({"usb": [{"vendor": "1a86", "product": "7523"}]}), all(vec![base()]));
    assert_eq!(run.needs.subsystems, ["usb"]);
    for a in ["idVendor", "idProduct", "serial", "busnum", "devnum", "product", "manufacturer"] {
        assert!(run.needs.attributes.iter().any(|x| x == a), "{a}");
    }
    assert!(!run.needs.all_udev && run.needs.paths.is_empty());
}

#[test]
fn needs_child_subsystems_with_children() {
    let run = run(json!({"usb": [{"vendor": "1a86", "product": "7523"}], "includeChildren": true}), all(vec![base()]));
    assert_eq!(run.needs.subsystems, ["usb", "tty", "video4linux", "sound", "hidraw", "usbmisc"]);
}

// ---- generic-device-plugin dialect ----

#[test]
fn ch340_gdp_example() {
    // {"name": "ch340", "groups": [{"usb": [{"vendor": "1a86", "product": "7523"}]}]}
    let run =
        run(json!({"usb": [{"vendor": "1a86", "product": "7523"}]}), all(vec![base(), ch340("3-3", 4, "ttyUSB0")]));
    let d = format!("{PCI}/usb3/3-3");
    assert_eq!(run.selected, std::slice::from_ref(&d));
    assert_eq!(
        run.groups,
        vec![G {
            id: d.clone(),
            nodes: vec!["/dev/bus/usb/003/004".into()],
            env: env(&[
                ("USB_BUSID", "3-3"),
                ("USB_DEVNODE", "/dev/bus/usb/003/004"),
                ("USB_PRODUCT_ID", "7523"),
                ("USB_VENDOR_ID", "1a86"),
            ]),
            share: 1,
            members: vec![d],
        }]
    );
    assert_eq!(run.permissions, ["rwm"]);
}

#[test]
fn ch340_with_children_gets_its_tty_but_not_its_interface() {
    let config = json!({"usb": [{"vendor": "1a86", "product": "7523"}], "includeChildren": true});
    let run = run(config, all(vec![base(), ch340("3-3", 4, "ttyUSB0")]));
    let d = format!("{PCI}/usb3/3-3");
    let tty = format!("{d}/3-3:1.0/ttyUSB0/tty/ttyUSB0");
    assert_eq!(run.selected, [tty.clone(), d.clone()], "the interface has no devnode, the root hub does not match");
    assert_eq!(
        run.groups,
        vec![G {
            id: d.clone(),
            nodes: vec!["/dev/bus/usb/003/004".into(), "/dev/ttyUSB0".into()],
            env: env(&[
                ("USB_BUSID", "3-3"),
                ("USB_CHILD_DEVNODES", "/dev/ttyUSB0"),
                ("USB_DEVNODE", "/dev/bus/usb/003/004"),
                ("USB_PRODUCT_ID", "7523"),
                ("USB_VENDOR_ID", "1a86"),
            ]),
            share: 1,
            members: vec![d, tty],
        }]
    );
}

#[test]
fn two_ch340s_are_two_groups_named_by_devpath() {
    let config = json!({"usb": [{"vendor": "1a86", "product": "7523"}], "includeChildren": true, "count": 2});
    let run = run(config, all(vec![base(), ch340("3-3.4.1", 9, "ttyUSB3"), ch340("3-2", 3, "ttyUSB0")]));
    assert_eq!(ids(&run), [format!("{PCI}/usb3/3-2"), format!("{PCI}/usb3/3-3.4.1")]);
    assert_eq!(run.groups[0].nodes, ["/dev/bus/usb/003/003", "/dev/ttyUSB0"]);
    assert_eq!(run.groups[1].nodes, ["/dev/bus/usb/003/009", "/dev/ttyUSB3"]);
    assert!(run.groups[1].env.contains(&("USB_BUSID".into(), "3-3.4.1".into())));
    assert!(run.groups.iter().all(|g| g.share == 2));
}

#[test]
fn hex_ids_with_or_without_0x_in_any_case() {
    for (vendor, product) in
        [("1a86", "7523"), ("0x1a86", "0x7523"), ("1A86", "7523"), ("0X1A86", "0x7523"), (" 1a86", "7523 ")]
    {
        let run = run(
            json!({"usb": [{"vendor": vendor, "product": product}]}),
            all(vec![base(), ch340("3-3", 4, "ttyUSB0")]),
        );
        assert_eq!(run.groups.len(), 1, "{vendor}:{product}");
    }
}

#[test]
fn short_hex_ids_are_zero_extended() {
    // The root hub's product is 0003.
    let run = run(json!({"usb": [{"vendor": "1d6b", "product": "3"}]}), all(vec![base()]));
    assert_eq!(ids(&run), ["1d6b:0003:0000:00:14.0"]);
}

#[test]
fn other_ids_do_not_match() {
    let run =
        run(json!({"usb": [{"vendor": "1a86", "product": "7522"}]}), all(vec![base(), ch340("3-3", 4, "ttyUSB0")]));
    assert!(run.selected.is_empty() && run.groups.is_empty());
}

#[test]
fn several_usb_specs_match_any() {
    let config = json!({"usb": [{"vendor": "1a86", "product": "7523"}, {"vendor": "10c4", "product": "ea60"}]});
    let run = run(config, all(vec![base(), ch340("3-3", 4, "ttyUSB0"), zigbee(), webcam()]));
    assert_eq!(ids(&run), [format!("{PCI}/usb3/3-3").as_str(), "10c4:ea60:c8d6f3a1e2b4ed11a0c4e1b2c3d4e5f6"]);
}

#[test]
fn printer_selected_by_serial() {
    let config = json!({"usb": [{"vendor": "2c99", "product": "0002", "serial": "CZPX1234X004XK12345"}], "includeChildren": true});
    let nodes = all(vec![
        base(),
        printer("1-1", 2, "CZPX1234X004XK12345", "ttyACM0"),
        printer("1-2", 3, "CZPX9999X004XK99999", "ttyACM1"),
    ]);
    let run = run(config, nodes);
    let d = format!("{PCI}/usb1/1-1");
    assert_eq!(
        run.groups,
        vec![G {
            id: "2c99:0002:CZPX1234X004XK12345".into(),
            nodes: vec!["/dev/bus/usb/001/002".into(), "/dev/ttyACM0".into()],
            env: env(&[
                ("USB_BUSID", "1-1"),
                ("USB_CHILD_DEVNODES", "/dev/ttyACM0"),
                ("USB_DEVNODE", "/dev/bus/usb/001/002"),
                ("USB_PRODUCT_ID", "0002"),
                ("USB_SERIAL", "CZPX1234X004XK12345"),
                ("USB_VENDOR_ID", "2c99"),
            ]),
            share: 1,
            members: vec![d.clone(), format!("{d}/1-1:1.0/tty/ttyACM0")],
        }]
    );
}

#[test]
fn printers_without_serial_filter_are_one_group_each_named_by_serial() {
    let config = json!({"usb": [{"vendor": "2c99", "product": "0002", "serial": ""}], "includeChildren": true});
    let nodes = all(vec![
        base(),
        printer("1-1", 2, "CZPX1234X004XK12345", "ttyACM0"),
        printer("1-2", 3, "CZPX9999X004XK99999", "ttyACM1"),
    ]);
    let run = run(config, nodes);
    assert_eq!(ids(&run), ["2c99:0002:CZPX1234X004XK12345", "2c99:0002:CZPX9999X004XK99999"]);
    assert_eq!(run.groups[1].nodes, ["/dev/bus/usb/001/003", "/dev/ttyACM1"]);
}

#[test]
fn duplicate_serials_fall_back_to_devpaths() {
    let config = json!({"usb": [{"vendor": "2c99", "product": "0002"}]});
    let nodes = all(vec![base(), printer("1-1", 2, "0001", "ttyACM0"), printer("1-2", 3, "0001", "ttyACM1")]);
    let run = run(config, nodes);
    assert_eq!(ids(&run), [format!("{PCI}/usb1/1-1"), format!("{PCI}/usb1/1-2")]);
}

#[test]
fn serial_must_match_exactly() {
    let config = json!({"usb": [{"vendor": "2c99", "product": "0002", "serial": "czpx1234x004xk12345"}]});
    let run = run(config, all(vec![base(), printer("1-1", 2, "CZPX1234X004XK12345", "ttyACM0")]));
    assert!(run.groups.is_empty());
}

#[test]
fn webcam_brings_video_and_sound_nodes() {
    let config = json!({"usb": [{"vendor": "046d", "product": "082d"}], "includeChildren": true, "permissions": "rw"});
    let run = run(config, all(vec![base(), webcam(), ch340("3-3", 4, "ttyUSB0")]));
    let d = format!("{PCI}/usb1/1-4");
    assert_eq!(run.groups.len(), 1);
    let group = &run.groups[0];
    assert_eq!(group.id, "046d:082d:A1B2C3D4");
    assert_eq!(
        group.nodes,
        ["/dev/bus/usb/001/005", "/dev/snd/controlC1", "/dev/snd/pcmC1D0c", "/dev/video0", "/dev/video1"]
    );
    assert_eq!(
        group.members,
        [
            d.clone(),
            format!("{d}/1-4:1.2/sound/card1/controlC1"),
            format!("{d}/1-4:1.2/sound/card1/pcmC1D0c"),
            format!("{d}/1-4:1.0/video4linux/video0"),
            format!("{d}/1-4:1.0/video4linux/video1"),
        ]
    );
    assert!(group.env.contains(&(
        "USB_CHILD_DEVNODES".into(),
        "/dev/snd/controlC1 /dev/snd/pcmC1D0c /dev/video0 /dev/video1".into()
    )));
    assert!(!run.selected.contains(&format!("{d}/1-4:1.2/sound/card1")), "a card without a devnode is not selected");
    assert!(run.permissions.iter().all(|p| p == "rw"));
}

#[test]
fn webcam_without_children_is_just_the_usb_node() {
    let run = run(json!({"usb": [{"vendor": "046d", "product": "082d"}]}), all(vec![base(), webcam()]));
    assert_eq!(run.groups[0].nodes, ["/dev/bus/usb/001/005"]);
    assert!(!run.groups[0].env.iter().any(|(k, _)| k == "USB_CHILD_DEVNODES"));
}

#[test]
fn a_matching_device_without_devnode_gets_no_group() {
    let mut nodes = all(vec![base(), ch340("3-3", 4, "ttyUSB0")]);
    for n in &mut nodes {
        if n.devpath.ends_with("/3-3") {
            n.devnode = None;
        }
    }
    let run = run(json!({"usb": [{"vendor": "1a86", "product": "7523"}], "includeChildren": true}), nodes);
    assert!(run.groups.is_empty());
}

#[test]
fn a_device_under_a_matching_hub_belongs_to_the_nearest_match() {
    // A hub 1a40:0101 with a CH340 below it; both are asked for.
    let hub = format!("{PCI}/usb3/3-3");
    let mut parts = vec![usb_device(&hub, "1a40", "0101", None, 3, 2), interface(&format!("{hub}/3-3:1.0"))];
    let d = format!("{hub}/3-3.1");
    parts.extend(vec![
        usb_device(&d, "1a86", "7523", None, 3, 5),
        interface(&format!("{d}/3-3.1:1.0")),
        plain(&format!("{d}/3-3.1:1.0/ttyUSB0"), "usb-serial"),
        with_node(&format!("{d}/3-3.1:1.0/ttyUSB0/tty/ttyUSB0"), "tty", "/dev/ttyUSB0"),
    ]);
    let config = json!({"usb": [{"vendor": "1a86", "product": "7523"}, {"vendor": "1a40", "product": "0101"}], "includeChildren": true});
    let run = run(config, all(vec![base(), parts]));
    assert_eq!(ids(&run), [hub.clone(), d.clone()]);
    assert_eq!(run.groups[0].nodes, ["/dev/bus/usb/003/002"], "the hub holds only its own node");
    assert_eq!(run.groups[1].nodes, ["/dev/bus/usb/003/005", "/dev/ttyUSB0"]);
}

// ---- usbip-device-plugin dialect ----

#[test]
fn zigbee_selector_with_yaml_hex_numbers() {
    // selector: {vendor: 0x10c4, product: 0xea60} arrives as numbers.
    let config = json!({"selector": {"vendor": 0x10c4, "product": 0xea60}, "includeChildren": true});
    let run = run(config, all(vec![base(), zigbee(), ch340("3-3", 4, "ttyUSB0")]));
    assert_eq!(ids(&run), ["10c4:ea60:c8d6f3a1e2b4ed11a0c4e1b2c3d4e5f6"]);
    assert_eq!(run.groups[0].nodes, ["/dev/bus/usb/001/007", "/dev/ttyUSB1"]);
}

#[test]
fn yubikey_selector_as_in_the_usbip_readme() {
    let yubikey = || vec![usb_device(&format!("{PCI}/usb1/1-6"), "1050", "0407", None, 1, 9)];
    // YAML `vendor: 0x1050` is 4176.
    let run1 = run(json!({"selector": {"vendor": 4176, "product": 1031}}), all(vec![base(), yubikey()]));
    assert_eq!(ids(&run1), [format!("{PCI}/usb1/1-6")]);
    // A string is hex text in this dialect too.
    let run2 = run(json!({"selector": {"vendor": "1050", "product": "0x0407"}}), all(vec![base(), yubikey()]));
    assert_eq!(ids(&run2), ids(&run1));
    // And the decimal number 1050 is 0x041a: no match.
    let run3 = run(json!({"selector": {"vendor": 1050, "product": 1031}}), all(vec![base(), yubikey()]));
    assert!(run3.groups.is_empty());
}

#[test]
fn selector_with_serial() {
    let config = json!({"selector": {"vendor": 0x2c99, "product": 2, "serial": "CZPX9999X004XK99999"}});
    let nodes = all(vec![
        base(),
        printer("1-1", 2, "CZPX1234X004XK12345", "ttyACM0"),
        printer("1-2", 3, "CZPX9999X004XK99999", "ttyACM1"),
    ]);
    assert_eq!(ids(&run(config, nodes)), ["2c99:0002:CZPX9999X004XK99999"]);
}

// ---- devices USB/IP servers export ----

/// A device as a USB/IP server lists it: origin usbip, no device node.
fn remote(server: &str, busid: &str, vid: &str, pid: &str) -> N {
    let mut node = udev_node(&format!("usbip://{server}/{busid}"), "usb");
    node.origin = Origin::Usbip;
    node.kernel = busid.into();
    node.devtype = Some("usb_device".into());
    node.attributes = vec![
        ("busnum".to_string(), "1".to_string()),
        ("devnum".to_string(), "2".to_string()),
        ("idProduct".to_string(), pid.to_string()),
        ("idVendor".to_string(), vid.to_string()),
    ];
    N { node }
}

#[test]
fn remote_devices_are_grouped_by_server_and_busid() {
    let nodes = || {
        all(vec![
            base(),
            ch340("3-3", 4, "ttyUSB0"),
            vec![remote("10.0.0.5:3240", "1-1", "1a86", "7523"), remote("10.0.0.6:3240", "1-1", "1a86", "7523")],
        ])
    };
    let run = run(json!({"usb": [{"vendor": "1a86", "product": "7523"}]}), nodes());
    assert!(run.needs.usbip, "usb-id takes USB/IP devices");
    // Two identical remote sticks keep apart by server, the local one by devpath.
    assert_eq!(
        ids(&run),
        [format!("{PCI}/usb3/3-3"), "usbip://10.0.0.5:3240/1-1".into(), "usbip://10.0.0.6:3240/1-1".into()]
    );
    let remote_group = &run.groups[1];
    assert!(remote_group.nodes.is_empty(), "nothing to grant before the agent attaches it");
    assert_eq!(remote_group.members, ["usbip://10.0.0.5:3240/1-1"]);
    let env: Vec<(&str, &str)> = remote_group.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        env,
        [
            ("USBIP_SERVER", "10.0.0.5:3240"),
            ("USB_BUSID", "1-1"),
            ("USB_PRODUCT_ID", "7523"),
            ("USB_VENDOR_ID", "1a86")
        ]
    );
}

#[test]
fn usbip_selectors_pin_a_server_and_a_busid_and_zero_matches_anything() {
    let nodes = || {
        all(vec![
            base(),
            ch340("3-3", 4, "ttyUSB0"),
            vec![
                remote("usbip.example.com:3240", "1-1", "1050", "0407"),
                remote("usbip.example.com:3240", "1-2", "20a0", "4230"),
                remote("other.example.com:3240", "1-1", "1050", "0407"),
            ],
        ])
    };
    let pinned = json!({"selectors": [{"server": "usbip.example.com:3240", "vendor": 0x1050, "product": 0x0407}]});
    assert_eq!(ids(&run(pinned, nodes())), ["usbip://usbip.example.com:3240/1-1"]);
    // A zero or empty field matches anything; a server pins to its devices (never local ones).
    let any = json!({"selectors": [{"server": "usbip.example.com:3240", "vendor": 0, "product": ""}]});
    assert_eq!(ids(&run(any, nodes())), ["usbip://usbip.example.com:3240/1-1", "usbip://usbip.example.com:3240/1-2"]);
    let by_bus = json!({"selectors": [{"busId": "1-1"}, {"bus_id": "3-3"}]});
    assert_eq!(
        ids(&run(by_bus, nodes())),
        [
            format!("{PCI}/usb3/3-3"),
            "usbip://other.example.com:3240/1-1".into(),
            "usbip://usbip.example.com:3240/1-1".into()
        ]
    );
    // usbip-device-plugin's numbers: 0x1050 arrives as 4176.
    let numbers = json!({"selector": {"vendor": 4176, "product": 1031, "server": "other.example.com:3240"}});
    assert_eq!(ids(&run(numbers, nodes())), ["usbip://other.example.com:3240/1-1"]);
}

#[test]
fn selector_and_selectors_errors() {
    assert_field(json!({"selector": {"vendor": 1}, "selectors": []}), None, "not both");
    assert_field(json!({"selectors": []}), Some("selectors"), "at least one");
    assert_field(json!({"selectors": [{"server": "host"}]}), Some("selectors[0].server"), "HOST:PORT");
    assert_field(json!({"selectors": [{"vendor": 70000}]}), Some("selectors[0].vendor"), "16-bit");
    // Under `usb:` an id must be given.
    assert_field(json!({"usb": [{"product": "7523"}]}), Some("usb[0].vendor"), "missing: give the vendor id");
}

// ---- validation ----

fn assert_field(config: Value, field: Option<&str>, says: &str) {
    let e = error(config);
    assert_eq!(e.field.as_deref(), field, "{}", e.message);
    assert!(e.message.contains(says), "message `{}` should mention `{says}`", e.message);
}

#[test]
fn decimal_number_under_usb_asks_to_quote() {
    let e = error(json!({"usb": [{"vendor": 1209, "product": "000f"}]}));
    assert_eq!(e.field.as_deref(), Some("usb[0].vendor"));
    assert!(e.message.contains("Quote it"), "{}", e.message);
    assert!(e.message.contains("\"1209\""), "{}", e.message);
    assert!(e.message.contains("\"04b9\""), "1209 is 0x04b9: {}", e.message);
    // YAML's 0x1a86 became 6790: the hint names the hex the user wrote.
    let e = error(json!({"usb": [{"vendor": "1a86", "product": 0x7523}]}));
    assert_eq!(e.field.as_deref(), Some("usb[0].product"));
    assert!(e.message.contains("\"7523\""), "{}", e.message);
}

#[test]
fn both_or_neither_dialect() {
    assert_field(
        json!({"usb": [{"vendor": "1a86", "product": "7523"}], "selector": {"vendor": 1, "product": 2}}),
        None,
        "not both",
    );
    assert_field(json!({"includeChildren": true}), None, "selector");
    assert_field(json!({"usb": []}), Some("usb"), "at least one");
}

#[test]
fn ids_must_fit_16_bits() {
    assert_field(json!({"selector": {"vendor": 65536, "product": 1}}), Some("selector.vendor"), "16-bit");
    assert_field(json!({"selector": {"vendor": -1, "product": 1}}), Some("selector.vendor"), "16-bit");
    assert_field(json!({"usb": [{"vendor": "1a860", "product": "1"}]}), Some("usb[0].vendor"), "16-bit");
    assert_field(json!({"selector": {"vendor": "0x10000", "product": 1}}), Some("selector.vendor"), "16-bit");
}

#[test]
fn malformed_hex() {
    assert_field(json!({"usb": [{"vendor": "1a86", "product": "75g3"}]}), Some("usb[0].product"), "hex");
    assert_field(json!({"usb": [{"vendor": "0x", "product": "7523"}]}), Some("usb[0].vendor"), "hex");
    assert_field(json!({"usb": [{"vendor": "", "product": "7523"}]}), Some("usb[0].vendor"), "hex");
    assert_field(json!({"selector": {"vendor": 1.5, "product": 1}}), Some("selector.vendor"), "not a USB id");
}

#[test]
fn serial_must_be_text() {
    assert_field(
        json!({"usb": [{"vendor": "1a86", "product": "7523", "serial": 1234}]}),
        Some("usb[0].serial"),
        "quote",
    );
}

#[test]
fn missing_product() {
    let e = error(json!({"usb": [{"vendor": "1a86"}]}));
    assert_eq!(e.field.as_deref(), Some("usb[0].product"), "{}", e.message);
    assert!(e.message.contains("missing: give the product id"), "{}", e.message);
}

#[test]
fn count_and_permissions() {
    assert_field(json!({"usb": [{"vendor": "1a86", "product": "7523"}], "count": 0}), Some("count"), "at least 1");
    assert_field(
        json!({"usb": [{"vendor": "1a86", "product": "7523"}], "permissions": "rwx"}),
        Some("permissions"),
        "`x`",
    );
}

#[test]
fn unknown_fields_are_refused() {
    let e = error(json!({"usb": [{"vendor": "1a86", "product": "7523"}], "include_children": true}));
    assert!(e.message.contains("include_children"), "{}", e.message);
    let e = error(json!({"selector": {"vendor": 1, "product": 2, "busid": "1-1"}}));
    assert_eq!(e.field.as_deref(), Some("selector.busid"), "{}", e.message);
}

#[test]
fn select_and_group_refuse_nothing_silently() {
    let config = parse(&json!({"usb": [{"vendor": 1, "product": "1"}]})).unwrap();
    let nodes = all(vec![base()]);
    let snapshot = Snapshot::from_parts(nodes, vec![0, 1]).unwrap();
    assert!(snapshot.candidates().all(|d| !UsbId::select(&config, d)));
    assert!(UsbId::group(&config, &[]).is_err());
}

#[test]
fn group_output_does_not_depend_on_selection_order() {
    let config = parse(&json!({"usb": [{"vendor": "046d", "product": "082d"}, {"vendor": "1a86", "product": "7523"}], "includeChildren": true})).unwrap();
    let nodes = all(vec![base(), webcam(), ch340("3-3", 4, "ttyUSB0")]);
    let everything = Snapshot::from_parts(nodes.clone(), (0..nodes.len() as u32).collect()).unwrap();
    let chosen: Vec<u32> = everything.candidates().filter(|d| UsbId::select(&config, *d)).map(|d| d.index()).collect();
    let summary = |order: Vec<u32>| {
        let snapshot = Snapshot::from_parts(nodes.clone(), order).unwrap();
        let selected: Vec<Device<'_>> = snapshot.candidates().collect();
        UsbId::group(&config, &selected)
            .unwrap()
            .into_iter()
            .map(|g| (g.id, g.members, g.device_nodes.into_iter().map(|n| n.host_path).collect::<Vec<_>>(), g.env))
            .collect::<Vec<_>>()
    };
    let forward = summary(chosen.clone());
    let backward = summary(chosen.into_iter().rev().collect());
    assert_eq!(forward.len(), 2);
    assert_eq!(forward, backward);
    assert_eq!(
        forward[1].2,
        ["/dev/bus/usb/001/005", "/dev/snd/controlC1", "/dev/snd/pcmC1D0c", "/dev/video0", "/dev/video1"]
    );
}
