//! Prometheus metrics: issuances by type, issuance latency, attestations and their
//! failures by reason.
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The server's metric families.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    /// `ferrid_svids_issued_total{type}`: x509, jwt, agent.
    pub(crate) issued: IntCounterVec,
    /// `ferrid_issuance_duration_seconds{type}`.
    pub(crate) latency: HistogramVec,
    /// `ferrid_issuance_failures_total{type,reason}`.
    pub(crate) issue_failures: IntCounterVec,
    /// `ferrid_attestations_total{attestor}`.
    pub(crate) attestations: IntCounterVec,
    /// `ferrid_attestation_failures_total{attestor,reason}`.
    pub(crate) attest_failures: IntCounterVec,
    /// `ferrid_entries`.
    pub(crate) entries: IntGauge,
    /// `ferrid_bundle_sequence`.
    pub(crate) bundle_sequence: IntGauge,
    /// `ferrid_revocations_total`: revocations published (one per credential or ID).
    pub(crate) revocations: IntCounter,
    /// `ferrid_revocation_push_failures_total{receiver}`: failed push deliveries.
    pub(crate) push_failures: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let issued =
            IntCounterVec::new(Opts::new("ferrid_svids_issued_total", "SVIDs issued, by type"), &["type"])
                .expect("static metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("ferrid_issuance_duration_seconds", "Time to mint one SVID, by type").buckets(
                vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
            ),
            &["type"],
        )
        .expect("static metric");
        let issue_failures = IntCounterVec::new(
            Opts::new("ferrid_issuance_failures_total", "Refused or failed issuances, by type and reason"),
            &["type", "reason"],
        )
        .expect("static metric");
        let attestations = IntCounterVec::new(
            Opts::new("ferrid_attestations_total", "Successful node attestations"),
            &["attestor"],
        )
        .expect("static metric");
        let attest_failures = IntCounterVec::new(
            Opts::new(
                "ferrid_attestation_failures_total",
                "Failed node attestations, by attestor and reason",
            ),
            &["attestor", "reason"],
        )
        .expect("static metric");
        let entries = IntGauge::new("ferrid_entries", "Registration entries").expect("static metric");
        let bundle_sequence = IntGauge::new("ferrid_bundle_sequence", "Current trust bundle sequence number")
            .expect("static metric");
        let revocations =
            IntCounter::new("ferrid_revocations_total", "Revocations published (one per credential or ID)")
                .expect("static metric");
        let push_failures = IntCounterVec::new(
            Opts::new("ferrid_revocation_push_failures_total", "Failed SET push deliveries, by receiver"),
            &["receiver"],
        )
        .expect("static metric");
        registry.register(Box::new(revocations.clone())).expect("unique metric");
        for c in [&issued, &issue_failures, &attestations, &attest_failures, &push_failures] {
            registry.register(Box::new(c.clone())).expect("unique metric");
        }
        registry.register(Box::new(latency.clone())).expect("unique metric");
        registry.register(Box::new(entries.clone())).expect("unique metric");
        registry.register(Box::new(bundle_sequence.clone())).expect("unique metric");
        Self {
            registry,
            issued,
            latency,
            issue_failures,
            attestations,
            attest_failures,
            entries,
            bundle_sequence,
            revocations,
            push_failures,
        }
    }

    /// Renders the text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut buf = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut buf).expect("text encoding");
        buf
    }
}
