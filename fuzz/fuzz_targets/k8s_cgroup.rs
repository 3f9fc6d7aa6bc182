//! The k8s attestor's `/proc/<pid>/cgroup` parser: never panics; whatever it finds is
//! a well-formed container ID (and pod UID) that the input really contains, the same
//! every time.
#![no_main]
use ferrid_attest_k8s::cgroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let first = cgroup::parse(text);
    assert_eq!(first, cgroup::parse(text), "deterministic");
    if let Ok(Some(c)) = first {
        assert!(cgroup::is_container_id(&c.container_id), "{c:?}");
        assert!(text.contains(&c.container_id));
        if let Some(uid) = &c.pod_uid {
            assert!(uid.len() == 32 || uid.len() == 36, "{uid}");
            assert!(uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'), "{uid}");
            assert!(text.contains(uid.as_str()) || text.contains(&uid.replace('-', "_")), "{uid}");
        }
        // Some line names exactly this container.
        assert!(text.lines().any(|l| {
            l.splitn(3, ':').nth(2).and_then(cgroup::container_of_path).is_some_and(|o| o.container_id == c.container_id)
        }));
    }
});
