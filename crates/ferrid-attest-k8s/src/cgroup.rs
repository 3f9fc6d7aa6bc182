//! `/proc/<pid>/cgroup` → the container (and pod) a process runs in.
//!
//! The file has one line per hierarchy, `<hierarchy-id>:<controllers>:<path>`: many
//! lines on cgroup v1 (`4:memory:/kubepods/…`), a single `0::<path>` line on cgroup v2,
//! both on hybrid hosts. The kubelet and the container runtime name the cgroups, so the
//! path has one of these shapes (the pod's QoS class adds a `burstable` or `besteffort`
//! level, or none for `Guaranteed`):
//!
//! | driver | shape of the container's cgroup |
//! | --- | --- |
//! | systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/<scope>` |
//! | cgroupfs | `/kubepods/burstable/pod<uid>/<scope>` |
//!
//! where `<scope>` is `cri-containerd-<id>.scope` (containerd), `crio-<id>.scope` or
//! `crio-<id>` (CRI-O), `docker-<id>.scope` (Docker through cri-dockerd) with the
//! systemd driver, and the bare `<id>` with cgroupfs (containerd, Docker). `<id>` is 64
//! lowercase hex digits. The pod UID is a UUID (`-` replaced by `_` in systemd slice
//! names), or 32 hex digits for static pods.
//!
//! The container is the cgroup directly below the **first** pod cgroup on the path.
//! The first, because everything above and including it is made by the node's kubelet
//! and runtime: a workload that nests cgroups or runs a container engine (even a
//! kubelet, as in kind) inside its own container only adds levels below its own, and
//! so cannot make its path name another pod's container. Directly below, because the
//! levels under a container's cgroup belong to the workload.
//!
//! A path with no pod cgroup may still name a container (`/docker/<id>`,
//! `/system.slice/docker-<id>.scope`, or a cgroup namespace that hides the pod
//! levels); then the outermost container-looking level is taken and the pod is unknown.
//!
//! Not containers: a process directly in a pod's cgroup, CRI-O's monitor
//! (`crio-conmon-<id>.scope`, which runs on the host on behalf of the container), and
//! anything else on the host (`/user.slice/…`, `/system.slice/kubelet.service`, `/`).
//! Every line naming a container must name the same one; a file that names two is
//! refused.

/// The container a process runs in, according to its cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The runtime's container ID: 64 lowercase hex digits.
    pub container_id: String,
    /// The pod UID from the path (normalised to `-` separators), when the path has a
    /// pod cgroup. `None` means the container is not known to belong to a pod.
    pub pod_uid: Option<String>,
}

/// Why a cgroup file could not be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// A line is not `<hierarchy-id>:<controllers>:<path>`.
    #[error("line {line} of the cgroup file is not <id>:<controllers>:<path>")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// Two lines name different containers or pods.
    #[error("the cgroup file names two containers or pods ({first} and {second})")]
    Conflict {
        /// What the first line named.
        first: String,
        /// What a later line named.
        second: String,
    },
}

/// Parses the text of `/proc/<pid>/cgroup`. `Ok(None)`: the process is not in a
/// container (see the module documentation for what counts).
pub fn parse(text: &str) -> Result<Option<ContainerRef>, CgroupError> {
    let mut found: Option<ContainerRef> = None;
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let path = parse_line(line).ok_or(CgroupError::BadLine { line: i + 1 })?;
        let Some(here) = container_of_path(path) else { continue };
        found = Some(match found {
            None => here,
            Some(prev) => merge(prev, here)?,
        });
    }
    Ok(found)
}

/// The path of one line, if it has the right shape.
fn parse_line(line: &str) -> Option<&str> {
    let (id, rest) = line.split_once(':')?;
    let (_controllers, path) = rest.split_once(':')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && path.starts_with('/')).then_some(path)
}

fn merge(prev: ContainerRef, here: ContainerRef) -> Result<ContainerRef, CgroupError> {
    let conflict = || CgroupError::Conflict { first: describe(&prev), second: describe(&here) };
    if prev.container_id != here.container_id {
        return Err(conflict());
    }
    let pod_uid = match (&prev.pod_uid, &here.pod_uid) {
        (Some(a), Some(b)) if a != b => return Err(conflict()),
        (Some(a), _) | (None, Some(a)) => Some(a.clone()),
        (None, None) => None,
    };
    Ok(ContainerRef { container_id: prev.container_id, pod_uid })
}

fn describe(c: &ContainerRef) -> String {
    match &c.pod_uid {
        Some(p) => format!("container {} of pod {p}", c.container_id),
        None => format!("container {}", c.container_id),
    }
}

/// The container a cgroup path names (see the module documentation).
pub fn container_of_path(path: &str) -> Option<ContainerRef> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(at) = segments.iter().position(|s| pod_uid_of(s).is_some()) {
        let pod_uid = pod_uid_of(segments[at]);
        let container_id = segments.get(at + 1).and_then(|s| container_id_of(s))?;
        return Some(ContainerRef { container_id: container_id.to_owned(), pod_uid });
    }
    segments
        .iter()
        .find_map(|s| container_id_of(s))
        .map(|id| ContainerRef { container_id: id.to_owned(), pod_uid: None })
}

/// The pod UID of a pod cgroup's name: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid with _>.slice` (systemd, possibly under a
/// `kubelet-kubepods` prefix).
fn pod_uid_of(segment: &str) -> Option<String> {
    // systemd escapes the UID's `-` (its hierarchy separator) as `_`; cgroupfs keeps it.
    let (raw, separator) = if let Some(slice) = segment.strip_suffix(".slice") {
        if !slice.contains("kubepods") {
            return None;
        }
        (slice.rsplit_once("-pod")?.1, '_')
    } else {
        (segment.strip_prefix("pod")?, '-')
    };
    let other = if separator == '_' { '-' } else { '_' };
    if raw.contains(other) {
        return None;
    }
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID in its 8-4-4-4-12 form, or 32 hex digits (static pods' UIDs are hashes).
fn is_pod_uid(s: &str) -> bool {
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    match s.len() {
        32 => s.bytes().all(hex),
        36 => {
            s.bytes().enumerate().all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { hex(b) })
        }
        _ => false,
    }
}

/// The container ID a cgroup's name holds, if it names a container.
fn container_id_of(segment: &str) -> Option<&str> {
    let (core, scope) = match segment.strip_suffix(".scope") {
        Some(core) => (core, true),
        None => (segment, false),
    };
    let id = if let Some(rest) = core.strip_prefix("cri-containerd-") {
        rest
    } else if let Some(rest) = core.strip_prefix("crio-") {
        // CRI-O's container monitor, not the workload.
        if rest.starts_with("conmon-") {
            return None;
        }
        rest
    } else if let Some(rest) = core.strip_prefix("docker-") {
        rest
    } else if !scope {
        core
    } else {
        return None;
    };
    is_container_id(id).then_some(id)
}

/// 64 lowercase hex digits, the ID containerd, CRI-O and Docker give containers.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3c6cb2e3a4bde8a9a5d1f3e2b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8";
    const ID2: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";
    const UID_: &str = "2c48913c_b29f_11e7_9350_020968147796";

    fn one(text: &str) -> Option<ContainerRef> {
        parse(text).unwrap()
    }

    fn pod(id: &str, uid: &str) -> Option<ContainerRef> {
        Some(ContainerRef { container_id: id.into(), pod_uid: Some(uid.into()) })
    }

    #[test]
    fn cgroup_v2_systemd_driver_every_runtime_and_qos() {
        for qos in ["burstable", "besteffort"] {
            for scope in [
                format!("cri-containerd-{ID}.scope"),
                format!("crio-{ID}.scope"),
                format!("docker-{ID}.scope"),
            ] {
                let line = format!(
                    "0::/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_}.slice/{scope}\n"
                );
                assert_eq!(one(&line), pod(ID, UID), "{line}");
            }
        }
        // Guaranteed pods sit directly under kubepods.slice.
        let line = format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(one(&line), pod(ID, UID));
    }

    #[test]
    fn cgroup_v2_cgroupfs_driver() {
        for level in ["burstable/", "besteffort/", ""] {
            let line = format!("0::/kubepods/{level}pod{UID}/{ID}\n");
            assert_eq!(one(&line), pod(ID, UID), "{line}");
        }
        // CRI-O with cgroupfs prefixes the ID.
        assert_eq!(one(&format!("0::/kubepods/besteffort/pod{UID}/crio-{ID}\n")), pod(ID, UID));
    }

    #[test]
    fn cgroup_v1_many_controllers() {
        // A containerd node with the cgroupfs driver on cgroup v1 (shape of a real file:
        // every controller, name=systemd, and the empty unified line of a hybrid host).
        let p = format!("/kubepods/burstable/pod{UID}/{ID}");
        let text = format!(
            "12:hugetlb:{p}\n11:pids:{p}\n10:freezer:{p}\n9:perf_event:{p}\n8:cpu,cpuacct:{p}\n\
             7:net_cls,net_prio:{p}\n6:memory:{p}\n5:devices:{p}\n4:rdma:/\n3:cpuset:{p}\n2:blkio:{p}\n\
             1:name=systemd:{p}\n0::/\n"
        );
        assert_eq!(one(&text), pod(ID, UID));
        // Docker on v1 with the systemd driver; name=systemd under a different path.
        let p = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope"
        );
        let text =
            format!("11:memory:{p}\n10:cpu,cpuacct:{p}\n1:name=systemd:/system.slice/docker.service\n");
        assert_eq!(one(&text), pod(ID, UID));
    }

    #[test]
    fn static_pods_have_hash_uids() {
        let hash = "5c3f9d2b8e1a4f7c6b0d9e8a7f6c5b4a";
        let line = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(one(&line), pod(ID, hash));
        assert_eq!(one(&format!("0::/kubepods/burstable/pod{hash}/{ID}")), pod(ID, hash));
    }

    #[test]
    fn docker_without_a_pod() {
        let none = |id: &str| Some(ContainerRef { container_id: id.into(), pod_uid: None });
        assert_eq!(one(&format!("0::/docker/{ID}\n")), none(ID));
        assert_eq!(one(&format!("0::/system.slice/docker-{ID}.scope\n")), none(ID));
        assert_eq!(one(&format!("5:memory:/docker/{ID}\n4:cpu:/docker/{ID}\n")), none(ID));
    }

    #[test]
    fn nested_runtimes_take_the_outer_pod() {
        // kind on cgroup v1: the node is a Docker container; the pod is inside it.
        let line = format!("4:memory:/docker/{ID2}/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(one(&line), pod(ID, UID));
        // kind on cgroup v2 (cgroup namespace): kubelet-kubepods slices.
        let line = format!(
            "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(one(&line), pod(ID, UID));
        // A workload that runs its own kubelet (or just makes cgroups named like
        // another container) only adds levels below its own container.
        let other_uid = "11111111-2222-3333-4444-555555555555";
        let line = format!("0::/kubepods/burstable/pod{UID}/{ID}/kubepods/pod{other_uid}/{ID2}");
        assert_eq!(one(&line), pod(ID, UID));
        let line = format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope/{ID2}");
        assert_eq!(one(&line), pod(ID, UID));
        // A cgroup namespace shows the path relative to the reader's root.
        let line = format!("0::/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(one(&line), pod(ID, UID));
    }

    #[test]
    fn host_processes_and_non_containers() {
        for text in [
            "0::/user.slice/user-1000.slice/session-2.scope\n".to_owned(),
            "0::/system.slice/kubelet.service\n".to_owned(),
            "0::/\n".to_owned(),
            String::new(),
            "12:memory:/user.slice\n1:name=systemd:/user.slice/user-0.slice/session-1.scope\n0::/\n"
                .to_owned(),
            // CRI-O's conmon sits beside the container, not in it.
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope\n"
            ),
            format!("0::/kubepods/besteffort/pod{UID}/crio-conmon-{ID}\n"),
            // A process in the pod's own cgroup (e.g. a runtime helper), not a container's.
            format!("0::/kubepods/besteffort/pod{UID}\n"),
            format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice\n"),
            // The level under the pod is not a container: no fallback to deeper levels.
            format!("0::/kubepods/besteffort/pod{UID}/not-a-container/{ID}\n"),
            // The system slice of the container runtime.
            "0::/system.slice/containerd.service\n".to_owned(),
        ] {
            assert_eq!(parse(&text), Ok(None), "{text:?}");
        }
    }

    #[test]
    fn ids_must_be_64_lowercase_hex() {
        let short = &ID[..63];
        let long = format!("{ID}0");
        let upper = ID.to_uppercase();
        let nonhex = format!("{}g", &ID[..63]);
        for bad in [short, long.as_str(), upper.as_str(), nonhex.as_str(), "", "abc"] {
            for line in [
                format!("0::/kubepods/besteffort/pod{UID}/{bad}"),
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{bad}.scope"),
                format!("0::/docker/{bad}"),
                format!("0::/system.slice/docker-{bad}.scope"),
            ] {
                assert_eq!(parse(&line), Ok(None), "{line}");
            }
        }
        // A bare ID with a .scope suffix is no runtime's naming.
        assert_eq!(parse(&format!("0::/kubepods/pod{UID}/{ID}.scope")), Ok(None));
        assert!(is_container_id(ID));
    }

    #[test]
    fn pod_uids_must_be_well_formed() {
        for bad in [
            "2c48913c-b29f-11e7-9350-02096814779",   // short
            "2c48913c-b29f-11e7-9350-0209681477966", // long
            "2c48913cb29f-11e7-9350-0209681477966",  // misplaced dash
            "2C48913C-B29F-11E7-9350-020968147796",  // upper case
            "zc48913c-b29f-11e7-9350-020968147796",  // not hex
        ] {
            // Not a pod cgroup, so the outermost container-looking level is taken,
            // without a pod.
            let line = format!("0::/kubepods/besteffort/pod{bad}/{ID}");
            assert_eq!(one(&line), Some(ContainerRef { container_id: ID.into(), pod_uid: None }), "{line}");
        }
        // Each driver has its own separator; a mix is neither.
        let mixed = UID.replacen('-', "_", 1);
        assert_eq!(one(&format!("0::/kubepods/pod{mixed}/{ID}")).unwrap().pod_uid, None);
        let mixed = UID_.replacen('_', "-", 1);
        assert_eq!(one(&format!("0::/kubepods.slice/kubepods-pod{mixed}.slice/{ID}")).unwrap().pod_uid, None);
        // A slice that is not the kubelet's is not a pod.
        let line = format!("0::/user.slice/user-pod{UID_}.slice/{ID}");
        assert_eq!(one(&line).unwrap().pod_uid, None);
    }

    #[test]
    fn conflicting_lines_are_refused() {
        let e = parse(&format!("5:memory:/kubepods/pod{UID}/{ID}\n4:cpu:/kubepods/pod{UID}/{ID2}\n"))
            .unwrap_err();
        assert!(matches!(e, CgroupError::Conflict { .. }));
        assert!(e.to_string().contains(ID) && e.to_string().contains(ID2), "{e}");
        let other = "11111111-2222-3333-4444-555555555555";
        assert!(
            parse(&format!("5:memory:/kubepods/pod{UID}/{ID}\n4:cpu:/kubepods/pod{other}/{ID}\n")).is_err()
        );
        // The same container with and without its pod level agrees.
        assert_eq!(one(&format!("5:memory:/docker/{ID}\n4:cpu:/kubepods/pod{UID}/{ID}\n")), pod(ID, UID));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for text in ["garbage\n", "0:/no-third-field\n", "x::/path\n", "0::relative\n", ":memory:/\n"] {
            assert!(matches!(parse(text), Err(CgroupError::BadLine { line: 1 })), "{text:?}");
        }
        assert_eq!(parse("0::/\nnope\n"), Err(CgroupError::BadLine { line: 2 }));
    }

    #[test]
    fn huge_input_is_linear_and_bounded_by_the_reader() {
        // The attestor never reads more than 64 KiB of the file (ferrid-attest-unix's
        // read_proc_file); the parser itself copes with anything in linear time.
        let line = format!("7:memory:/kubepods/pod{UID}/{ID}\n");
        let text = line.repeat(20_000);
        assert_eq!(one(&text), pod(ID, UID));
        let long_path = format!("0::/{}\n", "a/".repeat(200_000));
        assert_eq!(parse(&long_path), Ok(None));
    }
}
