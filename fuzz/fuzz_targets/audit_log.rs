//! Audit log lines: the parser never panics; a record or checkpoint line that parses
//! encodes back to the same bytes (so the bytes the hash and the signature cover are
//! exactly the bytes in the file), and a record body that decodes re-encodes to a body
//! that decodes to the same record.
#![no_main]
use ferrid_audit::line::{self, Line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match line::parse_line(data) {
        Ok(Line::Record { seq, hash, body }) => {
            assert_eq!(line::encode_record(seq, &hash, body), data);
            if let Ok(rec) = line::parse_record(body) {
                let again = line::record_body(&rec).unwrap();
                assert_eq!(line::parse_record(&again).unwrap(), rec);
            }
        }
        Ok(Line::Checkpoint { sig, body }) => {
            assert_eq!(line::encode_checkpoint(&sig, body), data);
            let _ = line::parse_checkpoint(body);
            let _ = line::parse_signed_checkpoint(data);
        }
        Err(_) => {}
    }
});
