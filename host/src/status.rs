//! `devsieve status`: asks the running agent's local HTTP endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

use crate::ops::StatusReport;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no agent answers on {addr} ({source}); is `devsieve run` running with --listen {addr}?")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("{addr}: {reason}")]
    Http { addr: SocketAddr, reason: String },
}

/// `GET /status` from the agent at `addr`.
pub fn fetch(addr: SocketAddr) -> Result<StatusReport, StatusError> {
    let http = |reason: String| StatusError::Http { addr, reason };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| http(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| StatusError::Connect { addr, source: std::io::ErrorKind::TimedOut.into() })?
            .map_err(|source| StatusError::Connect { addr, source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/status")
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| http(e.to_string()))?;
        let code = response.status();
        let body = response.into_body().collect().await.map_err(|e| http(e.to_string()))?.to_bytes();
        if !code.is_success() {
            return Err(http(format!("/status answered {code}")));
        }
        serde_json::from_slice(&body).map_err(|e| http(format!("/status is not what this devsieve expects: {e}")))
    })
}
