//! Integration tests: the real `devsieve` binary against real peers. One
//! binary (cases are modules) keeps link time down.

mod agent;
mod benchmarks;
mod common;
mod configmap;
mod custom_handler;
mod examples;
mod hostile;
mod hotplug;
mod kubelet;
mod oci;
mod udev_cases;
mod usbip;
