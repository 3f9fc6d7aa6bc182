use spiffe::{SpiffeId, TrustDomain};

/// Errors building Ferrid-specific SPIFFE IDs.
#[derive(Debug, thiserror::Error, PartialEq, Clone)]
#[non_exhaustive]
pub enum IdError {
    /// A path segment broke a rule of the SPIFFE-ID spec.
    #[error("path segment {segment:?} is invalid: {reason}")]
    BadSegment {
        /// The offending segment.
        segment: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The assembled ID was rejected by the SPIFFE-ID parser.
    #[error("invalid SPIFFE ID: {0}")]
    Spiffe(#[from] spiffe::SpiffeIdError),
}

/// Checks one path segment against the SPIFFE-ID spec (section 2.2): non-empty, not `.`
/// or `..`, and only `[A-Za-z0-9._-]`.
pub fn validate_path_segment(segment: &str) -> Result<(), IdError> {
    let bad = |reason| IdError::BadSegment { segment: segment.to_owned(), reason };
    if segment.is_empty() {
        return Err(bad("empty"));
    }
    if segment == "." || segment == ".." {
        return Err(bad("dot segment"));
    }
    if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
        return Err(bad("only letters, digits, '.', '-' and '_' are allowed"));
    }
    Ok(())
}

/// The SPIFFE ID of a node agent: `spiffe://<td>/ferrid/agent/<attestor>/<parts...>`.
pub fn agent_id(td: &TrustDomain, attestor: &str, parts: &[&str]) -> Result<SpiffeId, IdError> {
    validate_path_segment(attestor)?;
    let mut id = format!("spiffe://{}/ferrid/agent/{attestor}", td.as_str());
    for p in parts {
        validate_path_segment(p)?;
        id.push('/');
        id.push_str(p);
    }
    Ok(SpiffeId::new(id)?)
}

/// The SPIFFE ID the server presents on its TLS listener: `spiffe://<td>/ferrid/server`.
pub fn server_id(td: &TrustDomain) -> SpiffeId {
    SpiffeId::new(format!("spiffe://{}/ferrid/server", td.as_str()))
        .expect("a valid trust domain always yields a valid server ID")
}

/// The parent ID of registration entries issued by direct exchange (a CI job trading
/// its OIDC token for an SVID, with no agent): `spiffe://<td>/ferrid/exchange`. An
/// entry under it matches when the token's attested selectors include all of its own.
pub fn exchange_parent_id(td: &TrustDomain) -> SpiffeId {
    SpiffeId::new(format!("spiffe://{}/ferrid/exchange", td.as_str()))
        .expect("a valid trust domain always yields a valid exchange parent ID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_follow_the_layout() {
        let td = TrustDomain::new("example.org").unwrap();
        let id = agent_id(&td, "join_token", &["abc-123"]).unwrap();
        assert_eq!(id.to_string(), "spiffe://example.org/ferrid/agent/join_token/abc-123");
        assert!(agent_id(&td, "join_token", &["a/b"]).is_err());
        assert!(agent_id(&td, "join_token", &[".."]).is_err());
        assert!(agent_id(&td, "", &["x"]).is_err());
        assert_eq!(server_id(&td).to_string(), "spiffe://example.org/ferrid/server");
    }

    /// One case per rule of the SPIFFE-ID spec, checked through the re-exported parser.
    #[test]
    fn spiffe_id_spec_rules() {
        use spiffe::SpiffeIdError as E;
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("http://example.org/a", E::WrongScheme),
            ("spiffe://", E::MissingTrustDomain),
            ("spiffe:///path", E::MissingTrustDomain),
            ("spiffe://exa$mple.org/a", E::BadTrustDomainChar),
            ("spiffe://user@example.org/a", E::BadTrustDomainChar),
            ("spiffe://example.org:8080/a", E::BadTrustDomainChar),
            ("spiffe://example.org//a", E::EmptySegment),
            ("spiffe://example.org/./a", E::DotSegment),
            ("spiffe://example.org/a/..", E::DotSegment),
            ("spiffe://example.org/a/", E::TrailingSlash),
            ("spiffe://example.org/a%20b", E::BadPathSegmentChar),
            ("spiffe://example.org/a?q=1", E::BadPathSegmentChar),
            ("spiffe://example.org/a#frag", E::BadPathSegmentChar),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::new(input).unwrap_err(), *want, "input {input:?}");
        }
        // Trust domains are case-insensitive and normalised to lower case.
        assert_eq!(SpiffeId::new("spiffe://Example.ORG/a").unwrap().trust_domain_name(), "example.org");
        // Paths are case-sensitive.
        assert_eq!(SpiffeId::new("spiffe://example.org/A").unwrap().path(), "/A");
        // A bare trust-domain ID has an empty path.
        assert_eq!(SpiffeId::new("spiffe://example.org").unwrap().path(), "");
        // Maximum length of a trust domain: 255 bytes.
        let long = "a".repeat(256);
        assert!(TrustDomain::new(&long).is_err());
    }
}

/// `#[serde(with = "ferrid_types::serde_spiffe_id")]` for [`SpiffeId`] fields, which the
/// `spiffe` crate does not make serde-aware: serialized as the URI string and
/// validated on the way in.
pub mod serde_spiffe_id {
    use serde::{Deserialize, Deserializer, Serializer};
    use spiffe::SpiffeId;

    /// Serializes as the `spiffe://` URI.
    pub fn serialize<S: Serializer>(id: &SpiffeId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    /// Parses and validates the `spiffe://` URI.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SpiffeId, D::Error> {
        let s = String::deserialize(d)?;
        SpiffeId::new(&s).map_err(serde::de::Error::custom)
    }
}
