//! Join-token parsing never panics, and what parses splits into an id and a secret
//! that reassemble to the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok((id, secret)) = ferrid_attest_join_token::parse(s)
    {
        assert!(!id.is_empty() && !secret.is_empty());
        assert_eq!(format!("{id}.{secret}"), s.trim_end());
    }
});
