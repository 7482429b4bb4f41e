//! Integration tests: the real `devsieve` binary against real peers. One
//! binary (cases are modules) keeps link time down.

mod agent;
mod common;
mod examples;
mod hostile;
mod hotplug;
mod kubelet;
mod udev_cases;
