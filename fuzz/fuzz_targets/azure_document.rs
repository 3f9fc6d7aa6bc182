//! The azure attestor's parsers (ferrid-attest-azure): arbitrary bytes as an IMDS answer
//! and as a DER attested document never panic, and no document verifies under the
//! built-in Microsoft roots (nobody here holds an IMDS key); IMDS time stamps parse to
//! the time they print.
#![no_main]
use std::sync::OnceLock;

use ferrid_attest_azure::document::parse_imds_time;
use ferrid_attest_azure::{Trust, parse_response, verify_document};
use libfuzzer_sys::fuzz_target;

fn trust() -> &'static Trust {
    static T: OnceLock<Trust> = OnceLock::new();
    T.get_or_init(Trust::builtin)
}

fuzz_target!(|data: &[u8]| {
    // 2022-05-01: the public-cloud chain is valid then, so only the signature stops a forgery.
    let at = Some(1_651_363_200);
    assert!(verify_document(data, trust(), at).is_err());
    if let Ok(der) = parse_response(data) {
        assert!(verify_document(&der, trust(), at).is_err());
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(t) = parse_imds_time(s)
    {
        let dt = time::OffsetDateTime::from_unix_timestamp(t).expect("in range");
        let printed = format!(
            "{:02}/{:02}/{:02} {:02}:{:02}:{:02}",
            u8::from(dt.month()),
            dt.day(),
            dt.year() % 100,
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        assert!(s.trim().starts_with(&printed), "{s:?} parsed as {printed}");
    }
});
