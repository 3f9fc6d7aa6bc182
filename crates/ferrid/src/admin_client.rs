//! A client for the server's admin API over its Unix socket.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferrid_proto::admin::v1::admin_client::AdminClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Connects to the admin socket at `path`.
pub(crate) async fn connect(path: &Path) -> Result<AdminClient<Channel>> {
    let p: PathBuf = path.to_owned();
    let channel = Endpoint::from_static("http://ferrid-admin.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = p.clone();
            async move { tokio::net::UnixStream::connect(p).await.map(TokioIo::new) }
        }))
        .await
        .with_context(|| {
            format!(
                "cannot reach the Ferrid server's admin socket at {} (is `ferrid server` running, and are you its user? \
                 set --admin-socket or FERRID_ADMIN_SOCKET)",
                path.display()
            )
        })?;
    Ok(AdminClient::new(channel))
}

/// Turns a gRPC status into an error that reads well on a terminal.
pub(crate) fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code_name(s.code()), s.message())
}

fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        InvalidArgument => "invalid argument",
        NotFound => "not found",
        AlreadyExists => "already exists",
        PermissionDenied => "permission denied",
        Unauthenticated => "unauthenticated",
        FailedPrecondition => "failed precondition",
        Aborted => "aborted (conflict)",
        Unavailable => "unavailable",
        ResourceExhausted => "resource exhausted",
        OutOfRange => "out of range",
        Internal => "internal error",
        _ => "error",
    }
}
