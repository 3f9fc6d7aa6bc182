//! One place that turns domain errors into precise gRPC statuses.
use ferrid_attest::AttestError;
use ferrid_ca::CaError;
use ferrid_store::StoreError;
use tonic::Status;

/// CA errors: the request's fault → InvalidArgument with the reason; the server's → Internal.
pub(crate) fn ca_status(e: CaError) -> Status {
    if e.is_client_error() {
        Status::invalid_argument(e.to_string())
    } else {
        tracing::error!(error = %e, "CA failure");
        Status::internal(format!("CA failure: {e}"))
    }
}

/// Datastore errors.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { what } => Status::not_found(format!("{what} not found")),
        StoreError::AlreadyExists(m) => Status::already_exists(m),
        StoreError::Conflict(m) => Status::aborted(m),
        e @ StoreError::Banned(_) => Status::permission_denied(e.to_string()),
        other => {
            tracing::error!(error = %other, "datastore failure");
            Status::unavailable(other.to_string())
        }
    }
}

/// Attestation errors.
pub(crate) fn attest_status(e: &AttestError) -> Status {
    match e {
        AttestError::Malformed(_) | AttestError::TooLarge { .. } => Status::invalid_argument(e.to_string()),
        AttestError::Unavailable(_) => Status::unavailable(e.to_string()),
        AttestError::Internal(_) => Status::internal(e.to_string()),
        _ => Status::permission_denied(e.to_string()),
    }
}
