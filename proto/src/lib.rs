//! The kubelet's gRPC APIs, generated at build time from the `.proto` files
//! beside this crate: both the server and the client side of each, because
//! devsieve serves `DevicePlugin` and calls `Registration`, and the kubelet
//! simulator in `tests/` does the opposite. [`dial`] opens the Unix-socket
//! channel both of them call over. Beside them, [`usbip`]: the device-list
//! and import operations of the USB/IP protocol, which are not gRPC.

use std::io;
use std::path::Path;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Device-plugin API `v1beta1`: `Registration` (served by the kubelet) and
/// `DevicePlugin` (served by each plugin).
///
/// devsieve serves `DevicePlugin` and calls `Registration` as a client; the
/// kubelet simulator serves `Registration` and calls `DevicePlugin`.
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");

    /// The version a plugin sends in `RegisterRequest`.
    pub const VERSION: &str = "v1beta1";
    /// The kubelet's registration socket's file name in the plugin directory.
    pub const KUBELET_SOCKET: &str = "kubelet.sock";
    pub const HEALTHY: &str = "Healthy";
    pub const UNHEALTHY: &str = "Unhealthy";
}

pub mod usbip;

/// Pod-resources API `v1` (`PodResourcesLister`, served by the kubelet): which
/// devices pods hold.
///
/// Unused until the USB/IP attach work, which needs both sides: the agent will
/// call `PodResourcesLister` as a client to learn which pods hold its devices
/// (and detach a USB/IP device once no pod holds it), and the kubelet
/// simulator will serve it so that integration tests can say which pods hold what.
pub mod podresources {
    tonic::include_proto!("v1");
}

/// A gRPC channel to the Unix socket at `socket`, connected before it returns:
/// a socket that is missing or that nobody listens on is an error here, not at
/// the first call.
///
/// The `http://` URI inside is required by tonic and ignored by the connector,
/// which always connects to `socket`.
pub async fn dial(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://[::1]:0")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use tokio::net::UnixListener;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::transport::Server;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::v1beta1::registration_client::RegistrationClient;
    use crate::v1beta1::registration_server::{Registration, RegistrationServer};
    use crate::v1beta1::{Empty, RegisterRequest};

    /// Accepts a registration of `example.com/widget` and refuses any other.
    struct Kubelet;

    #[tonic::async_trait]
    impl Registration for Kubelet {
        async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
            match request.into_inner().resource_name.as_str() {
                "example.com/widget" => Ok(Response::new(Empty {})),
                other => Err(Status::invalid_argument(format!("not {other}"))),
            }
        }
    }

    fn request(resource: &str) -> RegisterRequest {
        RegisterRequest {
            version: v1beta1::VERSION.to_string(),
            endpoint: "widget.sock".to_string(),
            resource_name: resource.to_string(),
            options: None,
        }
    }

    /// The `io::Error` somewhere in `error`'s sources.
    fn io_error(error: &tonic::transport::Error) -> Option<&io::Error> {
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<io::Error>() {
                return Some(io);
            }
            source = cause.source();
        }
        None
    }

    #[tokio::test]
    async fn dial_reaches_the_server_on_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(v1beta1::KUBELET_SOCKET);
        let listener = UnixListener::bind(&socket).unwrap();
        let server = Server::builder()
            .add_service(RegistrationServer::new(Kubelet))
            .serve_with_incoming(UnixListenerStream::new(listener));
        let server = tokio::spawn(server);

        let mut client = RegistrationClient::new(dial(&socket).await.unwrap());
        client.register(request("example.com/widget")).await.unwrap();
        let refused = client.register(request("example.com/gadget")).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (tonic::Code::InvalidArgument, "not example.com/gadget"));
        server.abort();
    }

    #[tokio::test]
    async fn dial_fails_when_nobody_serves_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dial(&dir.path().join("missing.sock")).await.unwrap_err();
        assert_eq!(io_error(&missing).map(io::Error::kind), Some(io::ErrorKind::NotFound), "{missing:?}");

        // A socket file that nobody listens on any more.
        let dead = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let refused = dial(&dead).await.unwrap_err();
        assert_eq!(io_error(&refused).map(io::Error::kind), Some(io::ErrorKind::ConnectionRefused), "{refused:?}");
    }
}
