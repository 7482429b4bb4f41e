//! One resource's `DevicePlugin` gRPC service, as the kubelet calls it.
//!
//! Every `ListAndWatch` stream follows the resource's device-list channel on
//! its own receiver: it sends the list it finds on connect, then every list
//! published after it, and ends when the kubelet closes it or the resource
//! goes away. No state shared between streams decides whether a change was
//! sent, so a stream opened after a kubelet restart misses nothing.

use std::pin::Pin;
use std::sync::Arc;

use devsieve_proto::v1beta1::device_plugin_server::DevicePlugin;
use devsieve_proto::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device, DevicePluginOptions, Empty,
    HEALTHY, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse, UNHEALTHY,
};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use super::allocate;
use crate::inventory::DeviceList;
use crate::metrics::Metrics;

pub struct PluginService {
    pub resource: String,
    pub cdi: bool,
    pub devices: watch::Receiver<Arc<DeviceList>>,
    pub metrics: Arc<Metrics>,
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

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(&self, _: Request<Empty>) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<ListStream>, Status> {
        tracing::debug!(resource = %self.resource, "kubelet opened ListAndWatch");
        let stream = WatchStream::new(self.devices.clone()).map(|list| Ok(list_response(&list)));
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
        let result: Result<Vec<_>, _> = request
            .into_inner()
            .container_requests
            .iter()
            .map(|container| allocate::container_response(&self.resource, &list, &container.devices_ids, self.cdi))
            .collect();
        match result {
            Ok(container_responses) => {
                self.metrics.allocation(&self.resource, true);
                Ok(Response::new(AllocateResponse { container_responses }))
            }
            Err(error) => {
                self.metrics.allocation(&self.resource, false);
                tracing::warn!(resource = %self.resource, %error, "refused an allocation");
                Err(Status::failed_precondition(error.to_string()))
            }
        }
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
