//! Ferrid's gRPC APIs, generated from the `.proto` files in the workspace's `proto/`
//! directory, plus conversions between wire messages and [`ferrid_types`].
#![forbid(unsafe_code)]
#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Shared messages (`ferrid.types.v1`).
pub mod types {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("ferrid.types.v1");
    }
}

/// The node API agents call (`ferrid.node.v1`).
pub mod node {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("ferrid.node.v1");
    }
}

/// The admin API on the server's local socket (`ferrid.admin.v1`).
pub mod admin {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("ferrid.admin.v1");
    }
}

/// Direct SVID exchange for workloads without an agent (`ferrid.exchange.v1`).
pub mod exchange {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("ferrid.exchange.v1");
    }
}

/// The revocation feed relying parties watch (`ferrid.revocation.v1`).
pub mod revocation {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("ferrid.revocation.v1");
    }
}

/// The SPIFFE Workload API (`SpiffeWorkloadAPI`, no protobuf package).
pub mod workload {
    tonic::include_proto!("_");
}

mod convert;
pub use convert::{
    ConvertError, agent_to_proto, entry_from_proto, entry_to_proto, selector_from_proto, selector_to_proto,
};
