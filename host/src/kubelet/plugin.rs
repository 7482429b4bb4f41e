//! One resource's `DevicePlugin` gRPC service, as the kubelet calls it.
//!
//! Every `ListAndWatch` stream follows the resource's device-list channel on
//! its own receiver: it sends the list it finds on connect, then every list
//! published after it, and ends when the kubelet closes it or the resource
//! goes away. No state shared between streams decides whether a change was
//! sent, so a stream opened after a kubelet restart misses nothing.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use devsieve_proto::v1beta1::device_plugin_server::DevicePlugin;
use devsieve_proto::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, DeviceSpec, Empty, HEALTHY, ListAndWatchResponse, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse, UNHEALTHY,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use super::allocate;
use crate::inventory::DeviceList;
use crate::metrics::Metrics;
use crate::model::Advertised;
use crate::support::names;

pub struct PluginService {
    pub resource: String,
    pub cdi: bool,
    pub devices: watch::Receiver<Arc<DeviceList>>,
    pub metrics: Arc<Metrics>,
    pub attacher: super::Attach,
    pub streams: Streams,
}

/// How a server's `ListAndWatch` streams are counted, and whom to tell when
/// one ends (the advertiser registers again when the kubelet lets go).
pub struct Streams {
    pub open: Arc<AtomicUsize>,
    pub socket: PathBuf,
    pub ended: mpsc::UnboundedSender<super::StreamEvent>,
}

/// Held by one open stream: counts it while it is open, and says so when
/// it ends, however it ends (the kubelet closes it, or drops the connection).
struct OpenStream {
    open: Arc<AtomicUsize>,
    socket: PathBuf,
    ended: mpsc::UnboundedSender<super::StreamEvent>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        let _ = self.ended.send(super::StreamEvent::Ended(std::mem::take(&mut self.socket)));
    }
}

/// What this plugin tells the kubelet it implements.
pub fn options() -> DevicePluginOptions {
    DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }
}

pub fn list_response(list: &DeviceList) -> ListAndWatchResponse {
    ListAndWatchResponse {
        devices: list
            .units
            .iter()
            .map(|(id, unit)| Device {
                id: id.clone(),
                health: if unit.healthy { HEALTHY } else { UNHEALTHY }.to_string(),
                topology: None,
            })
            .collect(),
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

impl PluginService {
    fn refused(&self, status: Status) -> Status {
        self.metrics.allocation(&self.resource, false);
        tracing::warn!(resource = %self.resource, error = %status.message(), "refused an allocation");
        status
    }

    /// Attaches the remote devices among `ids`' groups (each once) and adds
    /// their nodes to `response`: what a container gets only once attached.
    async fn attach_remote(
        &self,
        list: &DeviceList,
        ids: &[String],
        mut response: ContainerAllocateResponse,
    ) -> Result<ContainerAllocateResponse, Status> {
        let mut remote: Vec<(&Advertised, &str)> = Vec::new();
        for id in ids {
            let Some(unit) = list.units.get(id) else { continue };
            for member in unit.group.members.iter().filter(|m| m.starts_with("usbip://")) {
                if !remote.iter().any(|(_, m)| m == member) {
                    remote.push((&unit.group, member));
                }
            }
        }
        if remote.is_empty() {
            return Ok(response);
        }
        let attacher = match &self.attacher {
            Ok(attacher) => attacher,
            Err(why) => {
                return Err(self.refused(Status::failed_precondition(format!(
                    "{}: this node cannot attach USB/IP devices: {why}",
                    self.resource
                ))));
            }
        };
        for (position, (group, devpath)) in remote.into_iter().enumerate() {
            // Whichever unit a container holds, it holds the device.
            let unit_ids: Vec<String> =
                (0..group.share).map(|unit| names::unit_id(&group.handler_id, unit, group.share)).collect();
            let attached = attacher.attach(&self.resource, &unit_ids, devpath).await.map_err(|error| {
                self.refused(Status::unavailable(format!("{}: {}", self.resource, crate::support::error_chain(&error))))
            })?;
            for node in std::iter::once(&attached.devnode).chain(&attached.interface_nodes) {
                if !response.devices.iter().any(|d| &d.container_path == node) {
                    response.devices.push(DeviceSpec {
                        container_path: node.clone(),
                        host_path: node.clone(),
                        permissions: "rwm".into(),
                    });
                }
            }
            let suffix = if position == 0 { String::new() } else { format!("_{position}") };
            response.envs.insert(format!("USB_DEVNODE{suffix}"), attached.devnode.clone());
            if !attached.interface_nodes.is_empty() {
                response.envs.insert(format!("USB_CHILD_DEVNODES{suffix}"), attached.interface_nodes.join(" "));
            }
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(&self, _: Request<Empty>) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<ListStream>, Status> {
        tracing::debug!(resource = %self.resource, "kubelet opened ListAndWatch");
        self.streams.open.fetch_add(1, Ordering::SeqCst);
        let open = OpenStream {
            open: self.streams.open.clone(),
            socket: self.streams.socket.clone(),
            ended: self.streams.ended.clone(),
        };
        let stream = WatchStream::new(self.devices.clone()).map(move |list| {
            let _counted = &open;
            Ok(list_response(&list))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let list = self.devices.borrow().clone();
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|container| {
                let size = usize::try_from(container.allocation_size).unwrap_or(0);
                ContainerPreferredAllocationResponse {
                    device_i_ds: allocate::preferred(
                        &list,
                        &container.available_device_i_ds,
                        &container.must_include_device_i_ds,
                        size,
                    ),
                }
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(&self, request: Request<AllocateRequest>) -> Result<Response<AllocateResponse>, Status> {
        let list = self.devices.borrow().clone();
        let mut container_responses = Vec::new();
        for container in &request.into_inner().container_requests {
            let response = match allocate::container_response(&self.resource, &list, &container.devices_ids, self.cdi) {
                Ok(response) => response,
                Err(error) => return Err(self.refused(Status::failed_precondition(error.to_string()))),
            };
            let response = self.attach_remote(&list, &container.devices_ids, response).await?;
            container_responses.push(response);
        }
        self.metrics.allocation(&self.resource, true);
        Ok(Response::new(AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
