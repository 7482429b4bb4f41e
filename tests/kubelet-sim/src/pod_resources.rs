//! The kubelet's pod-resources API (`PodResourcesLister`, v1) as a test
//! says it: which pod's container holds which device ids. `List` answers
//! what [`PodResourcesSim::hold`] set; nothing is derived from `Allocate`,
//! so a test decides exactly when a device stops being held.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use devsieve_proto::podresources::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use devsieve_proto::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices, ContainerResources,
    ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// Per pod, the `(resource, device ids)` its one container holds.
type Holdings = Arc<Mutex<BTreeMap<String, Vec<(String, Vec<String>)>>>>;

/// A pod-resources server on a Unix socket. Dropping it stops it.
pub struct PodResourcesSim {
    holdings: Holdings,
    _shutdown: oneshot::Sender<()>,
}

impl PodResourcesSim {
    /// Serves on `socket` (its directory is created). Call inside a Tokio runtime.
    pub fn start(socket: &Path) -> io::Result<Self> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let holdings = Holdings::default();
        let (shutdown, stopped) = oneshot::channel();
        let service = PodResourcesListerServer::new(Lister(holdings.clone()));
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(PodResourcesSim { holdings, _shutdown: shutdown })
    }

    /// `pod`'s container holds `ids` of `resource` (besides what it held).
    pub fn hold(&self, pod: &str, resource: &str, ids: &[String]) {
        let mut holdings = self.holdings.lock().unwrap_or_else(|p| p.into_inner());
        holdings.entry(pod.to_string()).or_default().push((resource.to_string(), ids.to_vec()));
    }

    /// `pod` is gone: it holds nothing.
    pub fn release(&self, pod: &str) {
        self.holdings.lock().unwrap_or_else(|p| p.into_inner()).remove(pod);
    }
}

struct Lister(Holdings);

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(&self, _: Request<ListPodResourcesRequest>) -> Result<Response<ListPodResourcesResponse>, Status> {
        let holdings = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pod_resources = holdings
            .into_iter()
            .map(|(pod, held)| PodResources {
                name: pod,
                namespace: "default".into(),
                containers: vec![ContainerResources {
                    name: "main".into(),
                    devices: held
                        .into_iter()
                        .map(|(resource_name, device_ids)| ContainerDevices {
                            resource_name,
                            device_ids,
                            topology: None,
                        })
                        .collect(),
                    cpu_ids: Vec::new(),
                }],
            })
            .collect();
        Ok(Response::new(ListPodResourcesResponse { pod_resources }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Ok(Response::new(AllocatableResourcesResponse::default()))
    }
}
