//! `devsieve status`: asks the running agent's local HTTP endpoint what it
//! serves.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

use super::{DEFAULT_LISTEN, render};
use crate::ops::StatusReport;

/// Show the running agent's resources, device health and last evaluations.
#[derive(clap::Args)]
pub(super) struct Args {
    /// The agent's --listen address.
    #[arg(long, env = "DEVSIEVE_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Print the JSON the agent serves on /status.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let report = fetch(args.listen)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::status_table(&report, std::time::SystemTime::now()));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, thiserror::Error)]
enum StatusError {
    #[error("no agent answers on {addr} ({source}); is `devsieve run` running with --listen {addr}?")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("{addr}: {reason}")]
    Http { addr: SocketAddr, reason: String },
}

/// `GET /status` from the agent at `addr`.
fn fetch(addr: SocketAddr) -> Result<StatusReport, StatusError> {
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
