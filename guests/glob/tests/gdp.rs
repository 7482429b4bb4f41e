//! generic-device-plugin's documented path examples and its own test cases
//! (deviceplugin/path_test.go), run through needs → select → group the way
//! the host drives a handler.

use devsieve_glob::{Config, Glob};
use devsieve_sdk::prelude::*;
use devsieve_sdk::{parse_config, testing::udev_node};
use serde_json::{Value, json};

/// A device group in a form tests can compare.
#[derive(Debug, PartialEq)]
struct G {
    id: String,
    /// (host, container, permissions); container `None` = same as host.
    nodes: Vec<(String, Option<String>, String)>,
    /// (host, container, read-only)
    mounts: Vec<(String, String, bool)>,
    share: u32,
    members: Vec<String>,
}

fn dev(host: &str) -> (String, Option<String>, String) {
    (host.into(), None, "mrw".into())
}
fn dev_at(host: &str, container: &str) -> (String, Option<String>, String) {
    (host.into(), Some(container.into()), "mrw".into())
}
fn g(id: &str, nodes: Vec<(String, Option<String>, String)>) -> G {
    let members = id.split('+').map(|s| s.split('#').next().unwrap().to_string()).collect();
    G { id: id.into(), nodes, mounts: vec![], share: 1, members }
}

/// A node as the host builds it for a path match.
fn path_node(path: &str, kind: &str) -> Node {
    let mut node = udev_node(path, "");
    node.origin = Origin::Path;
    node.devnode = Some(path.to_string());
    node.attributes = vec![("type".into(), kind.into())];
    node
}

struct Run {
    globs: Vec<String>,
    selected: Vec<String>,
    groups: Vec<G>,
}

fn parse(config: &Value) -> Result<Config, HandlerError> {
    parse_config::<Config>(&config.to_string())
}

/// needs, then select over `paths` (char devices), then group the selected.
fn run(config: Value, paths: &[&str]) -> Run {
    run_typed(config, &paths.iter().map(|p| (*p, "char")).collect::<Vec<_>>())
}

fn run_typed(config: Value, paths: &[(&str, &str)]) -> Run {
    let config = parse(&config).expect("config parses");
    let needs = Glob::needs(&config).expect("config is valid");
    assert!(needs.subsystems.is_empty() && !needs.all_udev && !needs.usbip, "glob asks for paths only");
    let nodes: Vec<Node> = paths.iter().map(|(p, kind)| path_node(p, kind)).collect();
    let all = devsieve_sdk::Snapshot::from_parts(nodes.clone(), (0..nodes.len() as u32).collect()).unwrap();
    // The host groups partition by partition: that must come to the same groups.
    assert_eq!(
        devsieve_sdk::testing::partitioned::<Glob>(&config, &all),
        devsieve_sdk::testing::whole::<Glob>(&config, &all),
        "grouped by partition, the groups differ"
    );
    let chosen: Vec<u32> = all.candidates().filter(|d| Glob::select(&config, *d)).map(|d| d.index()).collect();
    let snapshot = devsieve_sdk::Snapshot::from_parts(nodes, chosen.clone()).unwrap();
    let selected: Vec<Device<'_>> = snapshot.candidates().collect();
    let groups = Glob::group(&config, &selected).expect("group succeeds");
    let groups = groups
        .into_iter()
        .map(|group| G {
            members: group.members.iter().map(|&i| snapshot.device(i).devpath().to_string()).collect(),
            id: group.id,
            nodes: group.device_nodes.into_iter().map(|n| (n.host_path, n.container_path, n.permissions)).collect(),
            mounts: group.mounts.into_iter().map(|m| (m.host_path, m.container_path, m.read_only)).collect(),
            share: group.share,
        })
        .collect();
    Run { globs: needs.paths, selected: chosen.iter().map(|&i| paths[i as usize].0.to_string()).collect(), groups }
}

fn error(config: Value) -> HandlerError {
    match parse(&config) {
        Err(e) => e,
        Ok(config) => Glob::needs(&config).expect_err("config must be refused"),
    }
}

#[test]
fn video_single_path() {
    // --device='{"name": "video", "groups": [{"paths": [{"path": "/dev/video0"}]}]}'
    let run = run(json!({"groups": [{"paths": [{"path": "/dev/video0"}]}]}), &["/dev/video0"]);
    assert_eq!(run.globs, ["/dev/video0"]);
    assert_eq!(run.groups, vec![g("/dev/video0", vec![dev("/dev/video0")])]);
}

#[test]
fn serial_groups_ttyusb_and_ttyacm() {
    // {"name": "serial", "groups": [{"paths": [{"path": "/dev/ttyUSB*"}]}, {"paths": [{"path": "/dev/ttyACM*"}]}]}
    let config = json!({"groups": [
        {"paths": [{"path": "/dev/ttyUSB*"}]},
        {"paths": [{"path": "/dev/ttyACM*"}]},
    ]});
    let run = run(config, &["/dev/ttyUSB1", "/dev/ttyACM0", "/dev/ttyUSB0", "/dev/ttyS0", "/dev/tty1"]);
    assert_eq!(run.globs, ["/dev/ttyUSB*", "/dev/ttyACM*"]);
    assert_eq!(run.selected, ["/dev/ttyUSB1", "/dev/ttyACM0", "/dev/ttyUSB0"]);
    assert_eq!(
        run.groups,
        vec![
            g("/dev/ttyUSB0", vec![dev("/dev/ttyUSB0")]),
            g("/dev/ttyUSB1", vec![dev("/dev/ttyUSB1")]),
            g("/dev/ttyACM0", vec![dev("/dev/ttyACM0")]),
        ]
    );
}

#[test]
fn audio_capture_two_paths_make_one_device() {
    // {"name": "capture", "groups": [{"paths": [{"path": "/dev/snd/pcmC0D0c"}, {"path": "/dev/snd/controlC0"}]}]}
    let config = json!({"groups": [{"paths": [{"path": "/dev/snd/pcmC0D0c"}, {"path": "/dev/snd/controlC0"}]}]});
    let run = run(config, &["/dev/snd/controlC0", "/dev/snd/pcmC0D0c", "/dev/snd/pcmC0D0p"]);
    assert_eq!(
        run.groups,
        vec![g("/dev/snd/pcmC0D0c+/dev/snd/controlC0", vec![dev("/dev/snd/pcmC0D0c"), dev("/dev/snd/controlC0")])]
    );
}

#[test]
fn capture_cards_with_mount_paths_as_in_the_gdp_manifest() {
    // Every card's nodes appear in the container as card 0.
    let config = json!({"groups": [
        {"paths": [{"path": "/dev/snd/controlC0"}, {"path": "/dev/snd/pcmC0D0c"}]},
        {"paths": [
            {"path": "/dev/snd/controlC1", "mountPath": "/dev/snd/controlC0"},
            {"path": "/dev/snd/pcmC1D0c", "mountPath": "/dev/snd/pcmC0D0c"},
        ]},
        {"paths": [
            {"path": "/dev/snd/controlC2", "mountPath": "/dev/snd/controlC0"},
            {"path": "/dev/snd/pcmC2D0c", "mountPath": "/dev/snd/pcmC0D0c"},
        ]},
    ]});
    let run = run(config, &["/dev/snd/controlC0", "/dev/snd/pcmC0D0c", "/dev/snd/controlC1", "/dev/snd/pcmC1D0c"]);
    assert_eq!(
        run.groups,
        vec![
            g("/dev/snd/controlC0+/dev/snd/pcmC0D0c", vec![dev("/dev/snd/controlC0"), dev("/dev/snd/pcmC0D0c")]),
            g(
                "/dev/snd/controlC1+/dev/snd/pcmC1D0c",
                vec![
                    dev_at("/dev/snd/controlC1", "/dev/snd/controlC0"),
                    dev_at("/dev/snd/pcmC1D0c", "/dev/snd/pcmC0D0c")
                ]
            ),
        ],
        "card 2 is absent, so its group has no device"
    );
}

#[test]
fn globs_in_one_group_pair_up_in_sorted_order() {
    let config = json!({"groups": [{"paths": [{"path": "/dev/snd/controlC*"}, {"path": "/dev/snd/pcmC*D0c"}]}]});
    let run = run(
        config,
        &["/dev/snd/pcmC1D0c", "/dev/snd/controlC1", "/dev/snd/controlC0", "/dev/snd/pcmC0D0c", "/dev/snd/controlC2"],
    );
    // Three controls but two capture nodes: the shorter list caps the group.
    assert_eq!(
        run.groups,
        vec![
            g("/dev/snd/controlC0+/dev/snd/pcmC0D0c", vec![dev("/dev/snd/controlC0"), dev("/dev/snd/pcmC0D0c")]),
            g("/dev/snd/controlC1+/dev/snd/pcmC1D0c", vec![dev("/dev/snd/controlC1"), dev("/dev/snd/pcmC1D0c")]),
        ]
    );
}

#[test]
fn fuse_count_10_is_one_device_shared_ten_times() {
    // {"name": "fuse", "groups": [{"count": 10, "paths": [{"path": "/dev/fuse"}]}]}
    let run = run(json!({"groups": [{"count": 10, "paths": [{"path": "/dev/fuse"}]}]}), &["/dev/fuse"]);
    assert_eq!(run.groups, vec![G { share: 10, ..g("/dev/fuse", vec![dev("/dev/fuse")]) }]);
}

#[test]
fn mount_path_renames_every_match() {
    // path_test.go "multiple": all ttyUSB* appear as /dev/ttyUSB0 in the container.
    let config = json!({"groups": [{"paths": [{"path": "/dev/ttyUSB*", "mountPath": "/dev/ttyUSB0"}]}]});
    let run = run(config, &["/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB2", "/dev/ttyUSB3"]);
    let expected: Vec<G> = (0..4)
        .map(|i| {
            let host = format!("/dev/ttyUSB{i}");
            g(&host, vec![dev_at(&host, "/dev/ttyUSB0")])
        })
        .collect();
    assert_eq!(run.groups, expected);
}

#[test]
fn mount_path_ending_in_slash_is_a_directory() {
    // path_test.go "multiple with mount directory".
    let config = json!({"groups": [{"paths": [{"path": "/dev/ttyUSB*", "mountPath": "/dev/serial/"}]}]});
    let run = run(config, &["/dev/ttyUSB0", "/dev/ttyUSB1"]);
    assert_eq!(
        run.groups,
        vec![
            g("/dev/ttyUSB0", vec![dev_at("/dev/ttyUSB0", "/dev/serial/ttyUSB0")]),
            g("/dev/ttyUSB1", vec![dev_at("/dev/ttyUSB1", "/dev/serial/ttyUSB1")]),
        ]
    );
}

#[test]
fn mount_type_is_a_read_only_bind_mount() {
    let config = json!({"groups": [{"paths": [
        {"path": "/dev/dri/renderD128"},
        {"path": "/opt/vendor/firmware", "type": "Mount", "mountPath": "/firmware", "readOnly": true},
        {"path": "/run/udev", "type": "Mount"},
    ]}]});
    let run =
        run_typed(config, &[("/dev/dri/renderD128", "char"), ("/opt/vendor/firmware", "dir"), ("/run/udev", "dir")]);
    assert_eq!(
        run.groups,
        vec![G {
            id: "/dev/dri/renderD128+/opt/vendor/firmware+/run/udev".into(),
            nodes: vec![dev("/dev/dri/renderD128")],
            mounts: vec![
                ("/opt/vendor/firmware".into(), "/firmware".into(), true),
                ("/run/udev".into(), "/run/udev".into(), false),
            ],
            share: 1,
            members: vec!["/dev/dri/renderD128".into(), "/opt/vendor/firmware".into(), "/run/udev".into()],
        }]
    );
}

#[test]
fn permissions_are_passed_through_and_default_to_mrw() {
    let config =
        json!({"groups": [{"paths": [{"path": "/dev/ttyUSB0", "permissions": "r"}, {"path": "/dev/ttyUSB1"}]}]});
    let run = run(config, &["/dev/ttyUSB0", "/dev/ttyUSB1"]);
    assert_eq!(
        run.groups[0].nodes,
        vec![("/dev/ttyUSB0".into(), None, "r".into()), ("/dev/ttyUSB1".into(), None, "mrw".into())]
    );
}

#[test]
fn limit_lets_one_match_serve_several_devices() {
    // gdp's doc: "if one path in the group matches 5 devices and another
    // matches 1 device but has a limit of 10, then the group will provide 5
    // pairs of devices."
    let config = json!({"groups": [{"paths": [
        {"path": "/dev/video*"},
        {"path": "/dev/dri/renderD128", "limit": 10},
    ]}]});
    let videos: Vec<String> = (0..5).map(|i| format!("/dev/video{i}")).collect();
    let mut paths: Vec<&str> = videos.iter().map(String::as_str).collect();
    paths.push("/dev/dri/renderD128");
    let run = run(config, &paths);
    let expected: Vec<G> = videos
        .iter()
        .map(|v| g(&format!("{v}+/dev/dri/renderD128"), vec![dev(v), dev("/dev/dri/renderD128")]))
        .collect();
    assert_eq!(run.groups, expected);
}

#[test]
fn limit_caps_the_devices_a_shared_match_serves() {
    let config = json!({"groups": [{"paths": [
        {"path": "/dev/video*"},
        {"path": "/dev/dri/renderD128", "limit": 2},
    ]}]});
    let run = run(config, &["/dev/video0", "/dev/video1", "/dev/video2", "/dev/dri/renderD128"]);
    let ids: Vec<&str> = run.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["/dev/video0+/dev/dri/renderD128", "/dev/video1+/dev/dri/renderD128"]);
}

#[test]
fn limit_on_every_path_repeats_matches_cyclically() {
    // Two cards, one shared node with limit 3: the natural length (2) wins.
    let config = json!({"groups": [{"paths": [
        {"path": "/dev/a*", "limit": 3},
        {"path": "/dev/b", "limit": 3},
    ]}]});
    let run = run(config, &["/dev/a0", "/dev/a1", "/dev/b"]);
    let ids: Vec<&str> = run.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["/dev/a0+/dev/b", "/dev/a1+/dev/b"]);
}

#[test]
fn a_required_path_that_matches_nothing_means_no_device() {
    // path_test.go "only one exists".
    let config = json!({"groups": [{"paths": [{"path": "/dev/does/not/exist"}, {"path": "/dev/does/exist"}]}]});
    let run = run(config, &["/dev/does/exist"]);
    assert_eq!(run.selected, ["/dev/does/exist"]);
    assert_eq!(run.groups, vec![]);
}

#[test]
fn optional_paths_some_missing() {
    // path_test.go "optional paths - some missing".
    let config = json!({"groups": [{"paths": [
        {"path": "/dev/ttyS0", "optional": true},
        {"path": "/dev/ttyUSB0", "optional": true},
        {"path": "/dev/ttyUSB1", "optional": true},
    ]}]});
    let run = run(config, &["/dev/ttyUSB0"]);
    assert_eq!(run.groups, vec![g("/dev/ttyUSB0", vec![dev("/dev/ttyUSB0")])]);
}

#[test]
fn optional_paths_all_present() {
    let config = json!({"groups": [{"paths": [
        {"path": "/dev/ttyS0", "optional": true},
        {"path": "/dev/ttyUSB0", "optional": true},
        {"path": "/dev/ttyUSB1", "optional": true},
    ]}]});
    let run = run(config, &["/dev/ttyUSB1", "/dev/ttyS0", "/dev/ttyUSB0"]);
    assert_eq!(
        run.groups,
        vec![g(
            "/dev/ttyS0+/dev/ttyUSB0+/dev/ttyUSB1",
            vec![dev("/dev/ttyS0"), dev("/dev/ttyUSB0"), dev("/dev/ttyUSB1")]
        )]
    );
}

#[test]
fn optional_paths_all_missing() {
    let config = json!({"groups": [{"paths": [
        {"path": "/dev/ttyS0", "optional": true},
        {"path": "/dev/ttyUSB0", "optional": true},
    ]}]});
    assert_eq!(run(config, &["/dev/ttyACM0"]).groups, vec![]);
}

#[test]
fn optional_path_beside_a_required_one() {
    let config = json!({"groups": [{"paths": [
        {"path": "/dev/video*"},
        {"path": "/dev/media*", "optional": true},
    ]}]});
    let run = run(config, &["/dev/video0", "/dev/video1", "/dev/media0"]);
    assert_eq!(
        run.groups,
        vec![
            g("/dev/video0+/dev/media0", vec![dev("/dev/video0"), dev("/dev/media0")]),
            g("/dev/video1", vec![dev("/dev/video1")]),
        ]
    );
    // Without its required path the group has no device.
    let config = json!({"groups": [{"paths": [{"path": "/dev/video*"}, {"path": "/dev/media*", "optional": true}]}]});
    assert_eq!(run_typed(config, &[("/dev/media0", "char")]).groups, vec![]);
}

#[test]
fn the_same_path_in_two_groups_gets_distinct_ids() {
    let config = json!({"groups": [{"paths": [{"path": "/dev/ttyUSB*"}]}, {"paths": [{"path": "/dev/ttyUSB0"}]}]});
    let run = run(config, &["/dev/ttyUSB0"]);
    let ids: Vec<&str> = run.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["/dev/ttyUSB0", "/dev/ttyUSB0#1"]);
}

#[test]
fn needs_lists_each_glob_once() {
    let config = json!({"groups": [{"paths": [{"path": "/dev/ttyUSB*"}]}, {"count": 2, "paths": [{"path": "/dev/ttyUSB*"}, {"path": "/dev/fuse"}]}]});
    assert_eq!(run(config, &[]).globs, ["/dev/ttyUSB*", "/dev/fuse"]);
}

#[test]
fn needs_writes_the_globs_in_the_hosts_syntax() {
    // The host's `glob` crate has no `\` escapes, reads `[^0]` as a class of
    // `^` and `0`, and lists `.` and `..` for a component starting with `.`.
    let paths = [r"/dev/video[^0]", r"/dev/a\*", r"/dev/.x*", r"/dev/tty\USB*", "/dev/ttyUSB*", r"/dev/[\]x]"];
    let config = json!({"groups": [{"paths": paths.map(|p| json!({"path": p, "optional": true}))}]});
    let config = parse(&config).expect("config parses");
    let needs = Glob::needs(&config).expect("config is valid");
    assert_eq!(needs.paths, ["/dev/video[!0]", "/dev/a[*]", "/dev/[.]x*", "/dev/ttyUSB*", "/dev/[]x]"]);
}

#[test]
fn select_ignores_udev_nodes_and_non_matching_paths() {
    let config = parse(&json!({"groups": [{"paths": [{"path": "/dev/tty*"}]}]})).unwrap();
    let mut udev = udev_node("/devices/virtual/tty/tty0", "tty");
    udev.devnode = Some("/dev/tty0".into());
    let nodes =
        vec![udev, path_node("/dev/tty0", "char"), path_node("/dev/snd/tty", "char"), path_node("/dev/pts/0", "char")];
    let snapshot = devsieve_sdk::Snapshot::from_parts(nodes, vec![0, 1, 2, 3]).unwrap();
    let verdicts: Vec<bool> = snapshot.candidates().map(|d| Glob::select(&config, d)).collect();
    assert_eq!(verdicts, [false, true, false, false]);
}

#[test]
fn group_refuses_an_invalid_config_too() {
    let config = parse(&json!({"groups": [{"paths": [{"path": "dev/fuse"}]}]})).unwrap();
    assert!(Glob::group(&config, &[]).is_err());
}

// ---- validation ----

fn assert_field(config: Value, field: &str, says: &str) {
    let e = error(config);
    assert_eq!(e.field.as_deref(), Some(field), "{}", e.message);
    assert!(e.message.contains(says), "message `{}` should mention `{says}`", e.message);
}

#[test]
fn empty_groups() {
    assert_field(json!({"groups": []}), "groups", "at least one group");
}

#[test]
fn missing_groups() {
    let e = error(json!({}));
    assert!(e.message.contains("groups"), "{}", e.message);
}

#[test]
fn group_without_paths() {
    assert_field(json!({"groups": [{"count": 2}]}), "groups[0].paths", "at least one path");
}

#[test]
fn empty_path() {
    assert_field(
        json!({"groups": [{"paths": [{"path": "/dev/fuse"}, {"path": ""}]}]}),
        "groups[0].paths[1].path",
        "empty",
    );
}

#[test]
fn relative_path() {
    assert_field(
        json!({"groups": [{"paths": [{"path": "/dev/fuse"}]}, {"paths": [{"path": "/dev/a"}, {"path": "dev/ttyUSB*"}]}]}),
        "groups[1].paths[1].path",
        "absolute",
    );
}

#[test]
fn malformed_glob() {
    assert_field(
        json!({"groups": [{"paths": [{"path": "/dev/video[0-"}]}]}),
        "groups[0].paths[0].path",
        "not a valid glob",
    );
}

#[test]
fn bad_type() {
    assert_field(
        json!({"groups": [{"paths": [{"path": "/dev/fuse", "type": "device"}]}]}),
        "groups[0].paths[0].type",
        "`Device`",
    );
}

#[test]
fn bad_permissions() {
    assert_field(
        json!({"groups": [{"paths": [{"path": "/dev/fuse", "permissions": "rwx"}]}]}),
        "groups[0].paths[0].permissions",
        "`x`",
    );
    assert_field(
        json!({"groups": [{"paths": [{"path": "/dev/fuse", "permissions": "rr"}]}]}),
        "groups[0].paths[0].permissions",
        "`r` is given twice",
    );
}

#[test]
fn count_zero() {
    assert_field(json!({"groups": [{"count": 0, "paths": [{"path": "/dev/fuse"}]}]}), "groups[0].count", "at least 1");
}

#[test]
fn limit_zero() {
    assert_field(
        json!({"groups": [{"paths": [{"path": "/dev/fuse", "limit": 0}]}]}),
        "groups[0].paths[0].limit",
        "at least 1",
    );
}

#[test]
fn relative_mount_path() {
    assert_field(
        json!({"groups": [{"paths": [{"path": "/dev/fuse", "mountPath": "fuse"}]}]}),
        "groups[0].paths[0].mountPath",
        "absolute",
    );
}

#[test]
fn usb_group_points_to_usb_id() {
    assert_field(json!({"groups": [{"usb": [{"vendor": "1a86", "product": "7523"}]}]}), "groups[0].usb", "usb-id");
}

#[test]
fn unknown_fields_are_named() {
    let e = error(json!({"groups": [{"paths": [{"path": "/dev/fuse", "mountpath": "/x"}]}]}));
    assert_eq!(e.field.as_deref(), Some("groups[0].paths[0].mountpath"), "{}", e.message);
    assert!(e.message.contains("mountpath"), "{}", e.message);
    let e = error(json!({"name": "fuse", "groups": [{"paths": [{"path": "/dev/fuse"}]}]}));
    assert!(e.message.contains("name"), "{}", e.message);
}

#[test]
fn wrong_value_types_are_named() {
    let e = error(json!({"groups": [{"paths": [{"path": "/dev/fuse", "readOnly": "yes"}]}]}));
    assert_eq!(e.field.as_deref(), Some("groups[0].paths[0].readOnly"), "{}", e.message);
}

#[test]
fn group_output_does_not_depend_on_selection_order() {
    let config =
        parse(&json!({"groups": [{"paths": [{"path": "/dev/snd/controlC*"}, {"path": "/dev/snd/pcmC*D0c"}]}]}))
            .unwrap();
    let paths = ["/dev/snd/controlC0", "/dev/snd/controlC1", "/dev/snd/pcmC0D0c", "/dev/snd/pcmC1D0c"];
    let nodes: Vec<Node> = paths.iter().map(|p| path_node(p, "char")).collect();
    let ids = |order: Vec<u32>| {
        let snapshot = devsieve_sdk::Snapshot::from_parts(nodes.clone(), order).unwrap();
        let selected: Vec<Device<'_>> = snapshot.candidates().collect();
        Glob::group(&config, &selected).unwrap().into_iter().map(|g| g.id).collect::<Vec<_>>()
    };
    let expected = ["/dev/snd/controlC0+/dev/snd/pcmC0D0c", "/dev/snd/controlC1+/dev/snd/pcmC1D0c"];
    assert_eq!(ids(vec![0, 1, 2, 3]), expected);
    assert_eq!(ids(vec![3, 2, 1, 0]), expected);
}
