//! Wire entries: decoding and conversion never panic; a converted entry round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = ferrid_proto::types::v1::Entry::decode(data) else { return };
    if let Ok(entry) = ferrid_proto::entry_from_proto(&wire) {
        let back = ferrid_proto::entry_from_proto(&ferrid_proto::entry_to_proto(&entry)).unwrap();
        assert_eq!(back, entry);
        let td = entry.spiffe_id.trust_domain().clone();
        let _ = entry.validate(&td);
    }
});
