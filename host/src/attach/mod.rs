//! Attaching remote USB devices to this node: handing USB/IP imports to the kernel's `vhci_hcd`.

pub mod vhci;
