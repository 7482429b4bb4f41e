//! The kubelet's gRPC APIs, generated at build time from the `.proto` files
//! beside this crate: both the server and the client side of each, because
//! devsieve serves `DevicePlugin` and calls `Registration`, and the kubelet
//! simulator in `tests/` does the opposite.

/// Device-plugin API `v1beta1`: `Registration` (served by the kubelet) and
/// `DevicePlugin` (served by each plugin).
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");

    /// The version a plugin sends in `RegisterRequest`.
    pub const VERSION: &str = "v1beta1";
    /// The kubelet's registration socket's file name in the plugin directory.
    pub const KUBELET_SOCKET: &str = "kubelet.sock";
    pub const HEALTHY: &str = "Healthy";
    pub const UNHEALTHY: &str = "Unhealthy";
}

/// Pod-resources API `v1`: which devices pods hold.
pub mod podresources {
    tonic::include_proto!("v1");
}
