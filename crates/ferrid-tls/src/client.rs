//! Connecting to a server's node API over TLS: server-authenticated for attestation,
//! mutual TLS with an agent SVID afterwards.
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

/// Opens a gRPC channel to `addr` (host:port) with `tls` (see [`crate::client_config`]).
pub async fn node_channel(addr: &str, tls: rustls::ClientConfig) -> Result<Channel, tonic::transport::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let target = addr.to_owned();
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let (connector, target) = (connector.clone(), target.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                // The server is authenticated by its SPIFFE ID; the name only feeds SNI.
                let name = ServerName::try_from("ferrid-server").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}
