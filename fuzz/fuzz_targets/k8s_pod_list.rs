//! The kubelet's `/pods` answer → selectors (k8s attestor): arbitrary bytes never
//! panic; every listed container resolves to one pod or is reported ambiguous, with
//! sorted, distinct selectors of the documented kinds; an unlisted ID resolves to none.
#![no_main]
use ferrid_attest_k8s::PodList;
use libfuzzer_sys::fuzz_target;

const KINDS: [&str; 11] = [
    "ns:",
    "sa:",
    "pod-name:",
    "pod-uid:",
    "pod-label:",
    "pod-owner:",
    "pod-owner-uid:",
    "container-name:",
    "container-image:",
    "node-name:",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Ok(list) = PodList::parse(data) else { return };
    let ids: Vec<String> = list.container_ids().into_iter().map(str::to_owned).collect();
    for id in &ids {
        assert!(!id.is_empty());
        if let Ok(m) = list.lookup(id) {
            let m = m.expect("a listed container resolves");
            let mut sorted = m.selectors.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, m.selectors);
            for s in &m.selectors {
                let kind = KINDS.iter().find(|k| !k.is_empty() && s.starts_with(*k));
                assert!(kind.is_some_and(|k| s.len() > k.len()), "{s:?}");
            }
        }
    }
    let unlisted = "0".repeat(65);
    if !ids.contains(&unlisted) {
        assert_eq!(list.lookup(&unlisted), Ok(None));
    }
});
