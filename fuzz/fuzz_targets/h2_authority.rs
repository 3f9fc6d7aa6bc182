//! The HTTP/2 `:authority` rewriter on the Workload API socket: arbitrary client bytes,
//! split at an arbitrary point, never panic; when the input is accepted, the output is
//! the same whether it arrived in one piece or two, and it never grows without bound.
#![no_main]
use ferrid_tls::authority::AuthorityRewriter;
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(rest);
    let split = usize::from(split).min(input.len());

    let mut whole = Vec::new();
    let r1 = AuthorityRewriter::new().feed(&input, &mut whole);
    let mut parts = Vec::new();
    let mut rw = AuthorityRewriter::new();
    let r2 = rw.feed(&input[..split], &mut parts).and_then(|()| rw.feed(&input[split..], &mut parts));
    assert_eq!(r1.is_ok(), r2.is_ok());
    if r1.is_ok() {
        assert_eq!(whole, parts);
        // Re-encoding as literals grows a block by at most a few bytes per header.
        assert!(whole.len() <= input.len() * 8 + 1024);
    }
});
