//! Serial numbers as operators and SETs spell them: parsing never panics, and a parsed
//! serial is in canonical form (lowercase, even length) and parses back to itself.
#![no_main]
use ferrid_types::Serial;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(serial) = Serial::parse(text) {
            let s = serial.as_str();
            assert!(s.len() % 2 == 0 && !s.is_empty());
            assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(Serial::parse(s).as_ref(), Ok(&serial));
        }
    }
    if let Ok(serial) = Serial::from_bytes(data) {
        assert_eq!(Serial::parse(serial.as_str()).as_ref(), Ok(&serial));
    }
});
