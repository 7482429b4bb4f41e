//! Matching, grouping and config checks on synthetic snapshots (children
//! before parents, as the host sends them).

use devsieve_sdk::testing::udev_node;
use devsieve_sdk::{DeviceGroup, Handler, HandlerError, Node, Snapshot, parse_config};
use devsieve_udev_rule::{Config, UdevRule};

const PCI: &str = "/devices/pci0000:00/0000:00:14.0";

struct N {
    devpath: String,
    subsystem: &'static str,
    parent: Option<u32>,
    devnode: Option<&'static str>,
    driver: Option<&'static str>,
    attributes: Vec<(&'static str, &'static str)>,
    properties: Vec<(&'static str, &'static str)>,
    tags: Vec<&'static str>,
}

fn n(devpath: impl Into<String>, subsystem: &'static str, parent: Option<u32>) -> N {
    N {
        devpath: devpath.into(),
        subsystem,
        parent,
        devnode: None,
        driver: None,
        attributes: Vec::new(),
        properties: Vec::new(),
        tags: Vec::new(),
    }
}

impl N {
    fn devnode(mut self, d: &'static str) -> Self {
        self.devnode = Some(d);
        self
    }
    fn driver(mut self, d: &'static str) -> Self {
        self.driver = Some(d);
        self
    }
    fn attr(mut self, k: &'static str, v: &'static str) -> Self {
        self.attributes.push((k, v));
        self
    }
    fn env(mut self, k: &'static str, v: &'static str) -> Self {
        self.properties.push((k, v));
        self
    }
    fn tag(mut self, t: &'static str) -> Self {
        self.tags.push(t);
        self
    }
    fn build(self) -> Node {
        let mut node = udev_node(&self.devpath, self.subsystem);
        node.parent = self.parent;
        node.devnode = self.devnode.map(str::to_string);
        node.driver = self.driver.map(str::to_string);
        let pairs = |v: Vec<(&str, &str)>| {
            let mut v: Vec<(String, String)> = v.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            v.sort();
            v
        };
        node.attributes = pairs(self.attributes);
        node.properties = pairs(self.properties);
        node.tags = self.tags.into_iter().map(str::to_string).collect();
        node
    }
}

/// A CH340 serial adapter (1a86:7523) behind a hub (05e3:0608).
/// 0 tty/ttyUSB0, 1 usb-serial ttyUSB0, 2 interface, 3 usb device, 4 hub, 5 root hub, 6 pci.
fn ch340() -> Vec<Node> {
    let dev = format!("{PCI}/usb3/3-3/3-3.4/3-3.4.1");
    vec![
        n(format!("{dev}/3-3.4.1:1.0/ttyUSB0/tty/ttyUSB0"), "tty", Some(1))
            .devnode("/dev/ttyUSB0")
            .env("ID_SERIAL", "1a86_USB2.0-Serial")
            .tag("systemd")
            .tag("uaccess")
            .build(),
        n(format!("{dev}/3-3.4.1:1.0/ttyUSB0"), "usb-serial", Some(2)).driver("ch341-uart").build(),
        n(format!("{dev}/3-3.4.1:1.0"), "usb", Some(3)).driver("ch341").attr("bInterfaceClass", "ff").build(),
        n(dev.clone(), "usb", Some(4))
            .devnode("/dev/bus/usb/003/031")
            .driver("usb")
            .attr("idVendor", "1a86")
            .attr("idProduct", "7523")
            .attr("product", "USB2.0-Serial")
            .attr("version", " 1.10  ")
            .tag("seat")
            .build(),
        n(format!("{PCI}/usb3/3-3/3-3.4"), "usb", Some(5))
            .devnode("/dev/bus/usb/003/002")
            .driver("usb")
            .attr("idVendor", "05e3")
            .attr("idProduct", "0608")
            .build(),
        n(format!("{PCI}/usb3"), "usb", Some(6))
            .driver("usb")
            .attr("idVendor", "1d6b")
            .attr("idProduct", "0003")
            .build(),
        n(PCI, "pci", None).driver("xhci_hcd").build(),
    ]
}

fn config(json: &str) -> Config {
    parse_config(json).unwrap()
}

fn rules_config(rules: &[&str]) -> Config {
    let rules: Vec<String> =
        rules.iter().map(|r| format!("\"{}\"", r.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    config(&format!(r#"{{"udevRules": [{}]}}"#, rules.join(",")))
}

/// Indices of the nodes the rules select (every node is a candidate).
fn selected(nodes: &[Node], config: &Config) -> Vec<u32> {
    let all: Vec<u32> = (0..nodes.len() as u32).collect();
    let snapshot = Snapshot::from_parts(nodes.to_vec(), all).unwrap();
    snapshot.candidates().filter(|d| UdevRule::select(config, *d)).map(|d| d.index()).collect()
}

fn select(nodes: &[Node], rules: &[&str]) -> Vec<u32> {
    selected(nodes, &rules_config(rules))
}

fn group(nodes: &[Node], config: &Config) -> Result<Vec<DeviceGroup>, HandlerError> {
    let chosen = selected(nodes, config);
    let snapshot = Snapshot::from_parts(nodes.to_vec(), chosen).unwrap();
    let devices: Vec<_> = snapshot.candidates().collect();
    let groups = UdevRule::group(config, &devices);
    // The host groups partition by partition: that must come to the same groups.
    let all = Snapshot::from_parts(nodes.to_vec(), (0..nodes.len() as u32).collect()).unwrap();
    assert_eq!(
        devsieve_sdk::testing::partitioned::<UdevRule>(config, &all),
        devsieve_sdk::testing::whole::<UdevRule>(config, &all),
        "grouped by partition, the groups differ"
    );
    groups
}

#[test]
fn ch340_by_ancestor_attributes() {
    let nodes = ch340();
    // The device itself and everything below it; not the hub or the bus.
    assert_eq!(select(&nodes, &[r#"ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523""#]), vec![0, 1, 2, 3]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523""#]), vec![0]);
    // ATTR only looks at the device itself.
    assert_eq!(select(&nodes, &[r#"ATTR{idVendor}=="1a86""#]), vec![3]);
    assert_eq!(
        select(&nodes, &[r#"ATTRS{product}=="USB2.0-Serial", KERNEL=="ttyUSB[0-9]*", SUBSYSTEM=="tty""#]),
        vec![0]
    );
}

#[test]
fn parent_keys_must_match_on_the_same_device() {
    let nodes = ch340();
    // idVendor 1a86 is on the adapter, idProduct 0608 on the hub: Akri matches, udev does not.
    assert_eq!(select(&nodes, &[r#"ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="0608""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", KERNELS=="3-3.4", ATTRS{idVendor}=="1a86""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", KERNELS=="3-3.4.1", ATTRS{idVendor}=="1a86""#]), vec![0]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", KERNELS=="3-3.4", ATTRS{idVendor}=="05e3""#]), vec![0]);
    // SUBSYSTEMS and DRIVERS on one device too.
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", SUBSYSTEMS=="pci", DRIVERS=="ch341""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", SUBSYSTEMS=="pci", DRIVERS=="xhci_hcd""#]), vec![0]);
}

#[test]
fn negation() {
    let nodes = ch340();
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="usb", ATTR{idVendor}!="1a86""#]), vec![4, 5]);
    // A missing attribute fails ATTR!= (udev), a missing property is "" for ENV!=.
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", ATTR{idVendor}!="1a86""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="usb-serial", ENV{ID_SERIAL}!="x""#]), vec![1]);
    // ATTRS!= passes on any device of the chain whose value differs (the hub here), as in udev.
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", ATTRS{idVendor}!="1a86""#]), vec![0]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", ATTRS{nosuchthing}!="1a86""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"KERNEL!="ttyUSB*", SUBSYSTEM!="usb|pci""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"KERNEL!="3-*", SUBSYSTEM!="tty|pci""#]), vec![1, 5]);
    assert_eq!(select(&nodes, &[r#"DRIVER!="", SUBSYSTEM=="usb""#]), vec![2, 3, 4, 5]);
}

#[test]
fn alternatives_and_patterns() {
    let nodes = ch340();
    assert_eq!(select(&nodes, &[r#"KERNEL=="ttyACM*|ttyUSB*""#]), vec![0, 1]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="usb", ATTR{idVendor}=="1a86|05e3""#]), vec![3, 4]);
    assert_eq!(select(&nodes, &[r#"KERNEL=="3-3.4.?""#]), vec![3]);
    assert_eq!(select(&nodes, &[r#"KERNEL=="3-3.4*""#]), vec![2, 3, 4]);
    assert_eq!(select(&nodes, &[r#"DEVPATH=="*/usb3/*:1.0""#]), vec![2]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="usb", ATTR{idProduct}=="0[0-9][0-9][!0-7]""#]), vec![4]);
    assert_eq!(select(&nodes, &[r#"ATTR{idVendor}==i"1A86""#]), vec![3]);
    // Two rules: either matches.
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="pci""#, r#"SUBSYSTEM=="tty""#]), vec![0, 6]);
}

#[test]
fn env_tags_drivers() {
    let nodes = ch340();
    assert_eq!(select(&nodes, &[r#"ENV{ID_SERIAL}=="1a86_USB2.0-Serial""#]), vec![0]);
    assert_eq!(select(&nodes, &[r#"ENV{ID_SERIAL}=="?*""#]), vec![0]);
    assert_eq!(select(&nodes, &[r#"TAG=="uaccess""#]), vec![0]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", TAG!="uaccess""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", TAG!="seat""#]), vec![0]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", TAG=="seat""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", TAGS=="seat""#]), vec![0]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", TAGS=="sys*""#]), vec![0]);
    // udev reads `=="?*"` as `!=""`: for tags (any tag passes, none is
    // empty) every device matches, tagless ones too; `!="?*"` matches none.
    let all: Vec<u32> = (0..nodes.len() as u32).collect();
    assert_eq!(select(&nodes, &[r#"TAG=="?*""#]), all);
    assert_eq!(select(&nodes, &[r#"TAGS=="?*""#]), all);
    assert_eq!(select(&nodes, &[r#"TAG!="?*""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"TAGS!="?*""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"TAG=="?**""#]), vec![0, 3]);
    assert_eq!(select(&nodes, &[r#"ENV{ID_SERIAL}!="?*""#]), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(select(&nodes, &[r#"DRIVER=="ch341""#]), vec![2]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", DRIVERS=="ch341""#]), vec![0]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", DRIVER=="ch341""#]), Vec::<u32>::new());
}

#[test]
fn trailing_whitespace_of_attributes() {
    let nodes = ch340();
    // sysfs value is " 1.10  ": trailing whitespace goes unless the rule's value ends in whitespace.
    assert_eq!(select(&nodes, &[r#"ATTR{version}==" 1.10""#]), vec![3]);
    assert_eq!(select(&nodes, &[r#"ATTR{version}=="1.10""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"ATTR{version}==" 1.10 ""#]), Vec::<u32>::new());
    assert_eq!(select(&nodes, &[r#"ATTR{version}==" 1.10  ""#]), vec![3]);
    assert_eq!(select(&nodes, &[r#"ATTR{version}=="*1.10""#]), vec![3]);
    assert_eq!(select(&nodes, &[r#"SUBSYSTEM=="tty", ATTRS{version}==" 1.10""#]), vec![0]);
}

/// A webcam on 1-1 (two video nodes and a sound node) and another camera on
/// 1-10, whose devpath starts with 1-1's but which is not its child.
fn webcams() -> Vec<Node> {
    let cam = "Great Vendor Complex Camera";
    let one = format!("{PCI}/usb1/1-1");
    let ten = format!("{PCI}/usb1/1-10");
    vec![
        /* 0 */
        n(format!("{one}/1-1:1.0/video4linux/video0"), "video4linux", Some(3))
            .devnode("/dev/video0")
            .env("ID_SERIAL", cam)
            .build(),
        /* 1 */
        n(format!("{one}/1-1:1.0/video4linux/video1"), "video4linux", Some(3))
            .devnode("/dev/video1")
            .env("ID_SERIAL", cam)
            .build(),
        /* 2 */
        n(format!("{one}/1-1:1.3/sound/card1/pcmC1D0c"), "sound", Some(4))
            .devnode("/dev/snd/pcmC1D0c")
            .env("ID_SERIAL", cam)
            .build(),
        /* 3 */ n(format!("{one}/1-1:1.0"), "usb", Some(6)).build(),
        /* 4 */
        n(format!("{one}/1-1:1.3/sound/card1"), "sound", Some(5)).env("ID_SERIAL", cam).build(),
        /* 5 */ n(format!("{one}/1-1:1.3"), "usb", Some(6)).build(),
        /* 6 */
        n(one.clone(), "usb", Some(9)).devnode("/dev/bus/usb/001/002").env("ID_SERIAL", cam).build(),
        /* 7 */
        n(format!("{ten}/1-10:1.0/video4linux/video2"), "video4linux", Some(8))
            .devnode("/dev/video2")
            .env("ID_SERIAL", cam)
            .build(),
        /* 8 */
        n(ten.clone(), "usb", Some(9)).devnode("/dev/bus/usb/001/003").env("ID_SERIAL", "Other").build(),
        /* 9 */ n(format!("{PCI}/usb1"), "usb", Some(10)).build(),
        /* 10 */ n(PCI, "pci", None).build(),
    ]
}

fn env(group: &DeviceGroup) -> Vec<(&str, &str)> {
    group.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn group_recursive_webcam_and_prefix_boundary() {
    let nodes = webcams();
    let config = config(
        r#"{"udevRules": ["ENV{ID_SERIAL}==\"Great Vendor Complex Camera\""], "groupRecursive": true, "permissions": "rw", "capacity": 3}"#,
    );
    assert_eq!(selected(&nodes, &config), vec![0, 1, 2, 4, 6, 7]);
    let groups = group(&nodes, &config).unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");

    let cam = &groups[0];
    assert_eq!(cam.id, format!("{PCI}/usb1/1-1"));
    assert_eq!(cam.members, vec![6, 0, 1, 4, 2]);
    let paths: Vec<&str> = cam.device_nodes.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(paths, vec!["/dev/bus/usb/001/002", "/dev/video0", "/dev/video1", "/dev/snd/pcmC1D0c"]);
    assert!(cam.device_nodes.iter().all(|d| d.permissions == "rw" && d.container_path.is_none()));
    assert_eq!(cam.share, 3);
    assert_eq!(
        env(cam),
        vec![
            ("UDEV_DEVPATH", format!("{PCI}/usb1/1-1").as_str()),
            ("UDEV_DEVNODE_0", "/dev/bus/usb/001/002"),
            ("UDEV_DEVNODE_1", "/dev/video0"),
            ("UDEV_DEVNODE_2", "/dev/video1"),
            ("UDEV_DEVNODE_3", "/dev/snd/pcmC1D0c"),
        ]
    );

    // 1-10's camera is its own group: 1-1 is not its parent although the devpath is a prefix.
    let other = &groups[1];
    assert_eq!(other.id, format!("{PCI}/usb1/1-10/1-10:1.0/video4linux/video2"));
    assert_eq!(other.members, vec![7]);
    assert_eq!(env(other), vec![("UDEV_DEVPATH", other.id.as_str()), ("UDEV_DEVNODE_0", "/dev/video2")]);
}

#[test]
fn group_recursive_root_without_devnode_and_empty_groups() {
    let nodes = webcams();
    // card1 (no device node) is the root; its pcm node is the only device node.
    let sound = config(r#"{"udevRules": ["SUBSYSTEM==\"sound\""], "groupRecursive": true}"#);
    let groups = group(&nodes, &sound).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].id, format!("{PCI}/usb1/1-1/1-1:1.3/sound/card1"));
    assert_eq!(groups[0].members, vec![4, 2]);
    assert_eq!(env(&groups[0])[1], ("UDEV_DEVNODE_0", "/dev/snd/pcmC1D0c"));
    assert_eq!(groups[0].device_nodes[0].permissions, "rwm");
    assert_eq!(groups[0].share, 1);
    // A group without any device node is dropped, recursive or not.
    for recursive in [true, false] {
        let config = config(&format!(r#"{{"udevRules": ["KERNEL==\"card1\""], "groupRecursive": {recursive}}}"#));
        assert_eq!(selected(&nodes, &config), vec![4]);
        assert!(group(&nodes, &config).unwrap().is_empty());
    }
}

#[test]
fn flat_groups_one_per_device_node() {
    let nodes = webcams();
    let config = config(r#"{"udevRules": ["ENV{ID_SERIAL}==\"Great Vendor Complex Camera\""], "capacity": 2}"#);
    let groups = group(&nodes, &config).unwrap();
    let ids: Vec<u32> = groups.iter().map(|g| g.members[0]).collect();
    assert_eq!(ids, vec![0, 1, 2, 6, 7]); // card1 has no device node
    let video0 = &groups[0];
    assert_eq!(video0.id, format!("{PCI}/usb1/1-1/1-1:1.0/video4linux/video0"));
    assert_eq!(env(video0), vec![("UDEV_DEVPATH", video0.id.as_str()), ("UDEV_DEVNODE", "/dev/video0")]);
    assert_eq!(video0.device_nodes.len(), 1);
    assert_eq!(video0.device_nodes[0].host_path, "/dev/video0");
    assert_eq!(video0.device_nodes[0].permissions, "rwm");
    assert!(groups.iter().all(|g| g.share == 2 && g.members.len() == 1));
}

fn needs_error(json: &str) -> HandlerError {
    let config: Config = match parse_config(json) {
        Ok(config) => config,
        Err(error) => return error,
    };
    UdevRule::needs(&config).expect_err("config was accepted")
}

#[test]
fn config_validation() {
    let e = needs_error(r#"{"udevRules": []}"#);
    assert_eq!(e.field.as_deref(), Some("udevRules"));
    let e = needs_error(r#"{"udevRules": ["SUBSYSTEM==\"tty\"", "KERNEL==\"x\", GOTO=\"end\""]}"#);
    assert_eq!(e.field.as_deref(), Some("udevRules[1]"));
    assert!(e.message.starts_with("key 2 `GOTO=\"end\"` (column 14): GOTO is an action key"), "{}", e.message);
    for bad in ["rwx", "rr", "RW", "r w"] {
        let e = needs_error(&format!(r#"{{"udevRules": ["TAG==\"x\""], "permissions": "{bad}"}}"#));
        assert_eq!(e.field.as_deref(), Some("permissions"), "{bad}: {e:?}");
    }
    // An empty string means the default, as in generic-device-plugin.
    for good in ["", "r", "w", "m", "rw", "mwr", "rwm"] {
        let config = config(&format!(r#"{{"udevRules": ["TAG==\"x\""], "permissions": "{good}"}}"#));
        assert!(UdevRule::needs(&config).is_ok(), "{good}");
    }
    let e = needs_error(r#"{"udevRules": ["TAG==\"x\""], "capacity": 0}"#);
    assert_eq!(e.field.as_deref(), Some("capacity"));
    let e = needs_error(r#"{"udevRules": ["TAG==\"x\""], "groupRecursve": true}"#);
    assert!(e.message.contains("groupRecursve"), "{e:?}");
    let e = needs_error(r#"{"groupRecursive": true}"#);
    assert!(e.message.contains("udevRules"), "{e:?}");
    // group refuses an invalid config too; select selects nothing.
    let invalid = config(r#"{"udevRules": ["TAG+=\"x\""]}"#);
    let nodes = ch340();
    assert!(selected(&nodes, &invalid).is_empty());
    let snapshot = Snapshot::from_parts(nodes, vec![0]).unwrap();
    let devices: Vec<_> = snapshot.candidates().collect();
    assert_eq!(UdevRule::group(&invalid, &devices).unwrap_err().field.as_deref(), Some("udevRules[0]"));
}

#[test]
fn needs_narrows_subsystems_only_when_every_rule_pins_one() {
    let config = rules_config(&[
        r#"SUBSYSTEM=="tty", ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523""#,
        r#"SUBSYSTEM=="usb|tty", ENV{ID_SERIAL}=="x", ATTR{idVendor}=="1a86""#,
    ]);
    let needs = UdevRule::needs(&config).unwrap();
    assert!(!needs.all_udev);
    assert_eq!(needs.subsystems, vec!["tty", "usb"]);
    assert_eq!(needs.attributes, vec!["idProduct", "idVendor"]);
    assert_eq!(needs.properties, vec!["ID_SERIAL"]);
    assert!(needs.paths.is_empty() && !needs.usbip);

    for other in [
        r#"KERNEL=="ttyUSB*""#,
        r#"SUBSYSTEM=="video*""#,
        r#"SUBSYSTEM!="usb""#,
        r#"SUBSYSTEM=="|tty""#,
        r#"SUBSYSTEM==i"tty""#,
        r#"SUBSYSTEMS=="usb""#,
    ] {
        let config = rules_config(&[r#"SUBSYSTEM=="tty""#, other]);
        let needs = UdevRule::needs(&config).unwrap();
        assert!(needs.all_udev, "{other}");
        assert!(needs.subsystems.is_empty(), "{other}");
    }
}
