//! The Hub client as the use cases build it: DocTune's `hub/` cache folder, the token from the
//! keychain, and a private tokio runtime per call (the rest of DocTune is synchronous).

use crate::{ApiError, Home};
use doctune_hub::HubClient;
use doctune_secrets::Sensitive;

pub(crate) fn client(
    home: &Home,
    token: Option<&Sensitive<String>>,
) -> Result<HubClient, ApiError> {
    Ok(HubClient::new(
        None,
        &home.hub_dir(),
        token,
        doctune_hub::remote::DEFAULT_CHUNK_BYTES,
    )?)
}

/// Runs a Hub call on a runtime of its own, dropped afterwards (which also stops any download
/// task still running after a cancel).
pub(crate) fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let out = rt.block_on(fut);
    rt.shutdown_background();
    out
}
