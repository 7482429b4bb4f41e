//! Integration tests: the real `devsieve` binary against real peers. One
//! binary (cases are modules) keeps link time down.

mod agent;
mod benchmarks;
mod common;
mod configmap;
mod custom_handler;
mod examples;
mod faults;
mod hostile;
mod hotplug;
mod image;
mod kubelet;
mod migrate;
mod oci;
mod udev_cases;
mod usbip;
