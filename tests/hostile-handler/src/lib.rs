//! A handler that misbehaves the way its config says, to show the agent
//! contains it: it loops, allocates without end, traps, or grants what it
//! was not given.

use devsieve_sdk::prelude::*;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Misbehave {
    /// Behave: select everything, default groups.
    None,
    /// Spin forever in `select`.
    Loop,
    /// Grow memory towards 1 GiB in `select`.
    Allocate,
    /// Panic in `select`.
    Trap,
    /// Grant /etc/shadow, which is no node of any device it was given.
    Shadow,
    /// Mount /etc into the container.
    Mount,
    /// Stand alone, and grant /etc/shadow from `select`.
    AloneShadow,
    /// Stand alone, every device's group with one id.
    SameId,
    /// A key per device, then one group joining all of them.
    MixedKeys,
    /// A million groups (ids `g0` … `g999999`) for the first device.
    MillionGroups,
    /// One group whose env holds a 16 MiB value.
    HugeString,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    misbehave: Misbehave,
    #[serde(default)]
    paths: Vec<String>,
}

pub struct Hostile;

impl Handler for Hostile {
    const NAME: &'static str = "hostile";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = Config;

    fn needs(config: &Config) -> Result<Requirements, HandlerError> {
        Ok(Requirements::none().paths(config.paths.iter().cloned()))
    }

    fn select(config: &Config, _device: Device<'_>) -> bool {
        match config.misbehave {
            Misbehave::Loop => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Misbehave::Allocate => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                for _ in 0..1024 {
                    hoard.push(vec![1u8; 1 << 20]);
                }
                std::hint::black_box(&hoard);
                true
            }
            Misbehave::Trap => panic!("hostile handler panics on purpose"),
            _ => true,
        }
    }

    fn partition(config: &Config, device: Device<'_>) -> Partition {
        match config.misbehave {
            Misbehave::AloneShadow | Misbehave::SameId => Partition::Alone,
            Misbehave::MixedKeys => Partition::Key(device.devpath().to_string()),
            _ => Partition::All,
        }
    }

    fn group(config: &Config, selected: &[Device<'_>]) -> Result<Vec<DeviceGroup>, HandlerError> {
        let mut groups: Vec<DeviceGroup> = selected.iter().filter_map(|d| d.single_group("rw")).collect();
        match config.misbehave {
            Misbehave::AloneShadow => {
                for group in &mut groups {
                    group.device_nodes[0].host_path = "/etc/shadow".into();
                }
            }
            Misbehave::SameId => {
                for group in &mut groups {
                    group.id = "same".into();
                }
            }
            Misbehave::MixedKeys => {
                let mut all = groups.remove(0);
                for group in groups.drain(..) {
                    all.members.extend(group.members);
                    all.device_nodes.extend(group.device_nodes);
                }
                groups.push(all);
            }
            // Each names a device it was given, so only what it grants is wrong.
            Misbehave::Shadow => groups.push(DeviceGroup {
                id: "shadow".into(),
                members: selected.iter().take(1).map(Device::index).collect(),
                device_nodes: vec![DeviceNode {
                    host_path: "/etc/shadow".into(),
                    container_path: None,
                    permissions: "r".into(),
                }],
                mounts: vec![],
                env: vec![],
                share: 1,
            }),
            Misbehave::MillionGroups => {
                let Some(first) = groups.first().cloned() else { return Ok(groups) };
                groups = (0..1_000_000).map(|i| DeviceGroup { id: format!("g{i}"), ..first.clone() }).collect();
            }
            Misbehave::HugeString => {
                for group in &mut groups {
                    group.env.push(("HUGE".into(), "x".repeat(16 << 20)));
                }
            }
            Misbehave::Mount => groups.push(DeviceGroup {
                id: "etc".into(),
                members: selected.iter().take(1).map(Device::index).collect(),
                device_nodes: vec![],
                mounts: vec![Mount { host_path: "/etc".into(), container_path: "/host-etc".into(), read_only: true }],
                env: vec![],
                share: 1,
            }),
            _ => {}
        }
        Ok(groups)
    }
}

export_handler!(Hostile);
