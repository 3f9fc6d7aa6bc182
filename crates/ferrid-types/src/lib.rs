//! Core Ferrid types shared by every crate: SPIFFE IDs and trust domains (validated
//! per the SPIFFE-ID specification, re-exported from the `spiffe` crate), selectors,
//! registration entries, agents, join tokens, certificate serials, key algorithms and the injected [`Clock`].
//!
//! This crate does no I/O and has no async runtime.
#![forbid(unsafe_code)]

mod clock;
pub mod config;
mod entry;
mod id;
mod selector;
mod serial;

pub use clock::{Clock, ManualClock, SystemClock};
pub use entry::{
    AUTHORITY_MODEL_KEY, AgentRecord, AuthorityModel, EntryId, EntryValidationError, JoinTokenRecord,
    KeyAlgorithm, MAX_DNS_NAMES, MAX_METADATA_ENTRIES, MAX_SELECTORS, RegistrationEntry,
};
pub use id::{IdError, agent_id, exchange_parent_id, serde_spiffe_id, server_id, validate_path_segment};
pub use selector::{Selector, SelectorError, SelectorSet};
pub use serial::{MAX_SERIAL_OCTETS, Serial, SerialError};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Unix time in whole seconds.
pub type UnixSeconds = i64;
