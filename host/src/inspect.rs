//! `devsieve handler inspect FILE|REF`: fetch a handler as the agent would,
//! compile it, ask its metadata, and say what it is.

use serde::Serialize;

use crate::config::HandlerRef;
use crate::handler::{self, Runtime};
use crate::loader::{HandlerBytes, LoadError, Loader};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0}")]
    Reference(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Handler(#[from] handler::Error),
}

/// What `handler inspect` prints.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub reference: String,
    pub origin: String,
    /// The handler's own name and version (its `metadata()`).
    pub name: String,
    pub version: String,
    /// The WIT contract it was built for: `devsieve:handler@X.Y.Z`.
    pub contract: String,
    pub size: usize,
    /// `sha256:` of the component bytes (an OCI layer's digest).
    pub digest: String,
    /// For an OCI reference: the reference to put in a config, pinned by
    /// the manifest's digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// Fetches the handler `text` names. `text` is parsed like the config's
/// `handler:` field (relative paths from the working directory); tags are
/// allowed here, since this is how one learns the digest to pin.
pub async fn fetch(loader: &Loader, text: &str) -> Result<(HandlerRef, HandlerBytes), InspectError> {
    let reference = HandlerRef::parse(std::path::Path::new("."), text, true).map_err(InspectError::Reference)?;
    let bytes = loader.fetch(&reference).await?;
    Ok((reference, bytes))
}

/// Compiles the fetched handler and asks its metadata (outside any tokio runtime).
pub fn inspect(runtime: &Runtime, (reference, bytes): (HandlerRef, HandlerBytes)) -> Result<Inspection, InspectError> {
    let handler = runtime.load(&reference.to_string(), &bytes.bytes, &bytes.digest)?;
    let info = handler.info();
    Ok(Inspection {
        reference: reference.to_string(),
        origin: bytes.origin.clone(),
        name: info.name.clone(),
        version: info.version.clone(),
        contract: format!("devsieve:handler@{}", info.contract),
        size: handler.size(),
        digest: handler.digest().to_string(),
        pinned: bytes.pinned.clone(),
    })
}

impl Inspection {
    pub fn table(&self) -> String {
        let mut table = format!(
            "reference  {}\norigin     {}\nname       {}\nversion    {}\ncontract   {}\nsize       {} bytes\ndigest     {}\n",
            self.reference, self.origin, self.name, self.version, self.contract, self.size, self.digest
        );
        if let Some(pinned) = &self.pinned {
            table.push_str(&format!("pin as     {pinned}\n"));
        }
        table
    }
}
