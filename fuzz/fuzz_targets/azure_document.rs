//! The azure attestor's parsers (ferrid-attest-azure): arbitrary bytes as an IMDS answer
//! and as a DER attested document never panic, and a document verifies under the
//! built-in Microsoft roots only with content IMDS signed (nobody here holds an IMDS
//! key; the one real document valid at the chosen time is in tests/data and may reach
//! the corpus); IMDS time stamps parse to the time they print.
#![no_main]
use std::sync::OnceLock;

use ferrid_attest_azure::document::parse_imds_time;
use ferrid_attest_azure::{Trust, parse_response, verify_document};
use libfuzzer_sys::fuzz_target;

fn trust() -> &'static Trust {
    static T: OnceLock<Trust> = OnceLock::new();
    T.get_or_init(Trust::builtin)
}

/// The content of the real document whose chain is valid at the time below.
const SIGNED_BY_IMDS: &[u8] =
    include_bytes!("../../crates/ferrid-attest-azure/tests/data/coder/regular-2022.content.json");

fn check(der: &[u8]) {
    // 2022-05-01: the public-cloud chain is valid then, so only the signature stops a forgery.
    if let Ok(doc) = verify_document(der, trust(), Some(1_651_363_200)) {
        assert_eq!(doc.content, SIGNED_BY_IMDS, "a document verified with content IMDS never signed");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(der) = parse_response(data) {
        check(&der);
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
