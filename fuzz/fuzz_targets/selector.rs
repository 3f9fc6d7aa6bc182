//! Selector parsing: never panics; whatever parses prints back to the same text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(sel) = s.parse::<ferrid_types::Selector>()
    {
        assert_eq!(sel.to_string(), s);
        assert_eq!(sel.to_string().parse::<ferrid_types::Selector>().unwrap(), sel);
    }
});
