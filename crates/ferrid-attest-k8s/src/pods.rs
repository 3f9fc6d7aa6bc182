//! The kubelet's `GET /pods` answer (a `v1.PodList`), indexed by container ID, and the
//! selectors of one container's pod.
//!
//! Only the fields selectors need are read; everything else in the (often
//! multi-megabyte) document is skipped. Fields may be absent or `null`.
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Deserializer};

/// `null` or absent → the type's default.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
struct RawPodList {
    /// `PodList` from the kubelet; absent is tolerated, another kind is not.
    #[serde(default, deserialize_with = "nullable")]
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
struct Pod {
    #[serde(default, deserialize_with = "nullable")]
    metadata: Metadata,
    #[serde(default, deserialize_with = "nullable")]
    spec: PodSpec,
    #[serde(default, deserialize_with = "nullable")]
    status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    uid: String,
    #[serde(default, deserialize_with = "nullable")]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Deserialize)]
struct OwnerReference {
    #[serde(default, deserialize_with = "nullable")]
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default, deserialize_with = "nullable")]
    service_account_name: String,
    /// Deprecated alias of `serviceAccountName`, still filled by the API server.
    #[serde(default, deserialize_with = "nullable")]
    service_account: String,
    #[serde(default, deserialize_with = "nullable")]
    node_name: String,
    #[serde(default, deserialize_with = "nullable")]
    containers: Vec<ContainerSpec>,
    #[serde(default, deserialize_with = "nullable")]
    init_containers: Vec<ContainerSpec>,
    #[serde(default, deserialize_with = "nullable")]
    ephemeral_containers: Vec<ContainerSpec>,
}

#[derive(Debug, Default, Deserialize)]
struct ContainerSpec {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    image: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default, deserialize_with = "nullable")]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default, deserialize_with = "nullable")]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(default, deserialize_with = "nullable")]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    /// `<runtime>://<id>`: `containerd://…`, `cri-o://…`, `docker://…`. Empty while the
    /// container is being created.
    #[serde(rename = "containerID", default, deserialize_with = "nullable")]
    container_id: String,
    #[serde(default, deserialize_with = "nullable")]
    image: String,
    #[serde(rename = "imageID", default, deserialize_with = "nullable")]
    image_id: String,
}

/// Which list of a pod a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regular,
    Init,
    Ephemeral,
}

/// Where a container ID was found.
#[derive(Debug, Clone, Copy)]
struct Slot {
    pod: usize,
    kind: Kind,
    status: usize,
}

/// A parsed pod list, indexed by container ID.
#[derive(Debug, Default)]
pub struct PodList {
    pods: Vec<Pod>,
    /// Container ID → where; `None` when two statuses claim the same ID.
    by_container: HashMap<String, Option<Slot>>,
}

/// The pod a container belongs to, and the selectors describing both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMatch {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub pod_name: String,
    /// `metadata.uid`.
    pub pod_uid: String,
    /// Selector values (without the `k8s:` prefix), sorted, without duplicates.
    pub selectors: Vec<String>,
}

/// Why a document is not a pod list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Why a container could not be matched to exactly one pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {0} is claimed by more than one container status in the kubelet's pod list")]
pub struct Ambiguous(pub String);

/// The ID part of a status's `containerID` (`containerd://<id>` → `<id>`).
fn strip_runtime(container_id: &str) -> &str {
    container_id.split_once("://").map_or(container_id, |(_, id)| id)
}

impl PodList {
    /// Parses a `PodList` JSON document: an object whose `kind`, when present, is
    /// `PodList`.
    pub fn parse(json: &[u8]) -> Result<Self, ParseError> {
        if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ParseError("not a JSON object".into()));
        }
        let raw: RawPodList = serde_json::from_slice(json).map_err(|e| ParseError(e.to_string()))?;
        if !raw.kind.is_empty() && raw.kind != "PodList" {
            return Err(ParseError(format!("kind is {:?}, not PodList", raw.kind)));
        }
        let mut by_container: HashMap<String, Option<Slot>> = HashMap::new();
        for (p, pod) in raw.items.iter().enumerate() {
            let lists = [
                (Kind::Regular, &pod.status.container_statuses),
                (Kind::Init, &pod.status.init_container_statuses),
                (Kind::Ephemeral, &pod.status.ephemeral_container_statuses),
            ];
            for (kind, statuses) in lists {
                for (s, st) in statuses.iter().enumerate() {
                    let id = strip_runtime(&st.container_id);
                    if id.is_empty() {
                        continue;
                    }
                    by_container.entry(id.to_owned()).and_modify(|slot| *slot = None).or_insert(Some(Slot {
                        pod: p,
                        kind,
                        status: s,
                    }));
                }
            }
        }
        Ok(Self { pods: raw.items, by_container })
    }

    /// Number of pods.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether the list has no pods.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Container IDs (without the runtime prefix) of every container status, sorted.
    pub fn container_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.by_container.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// The pod running `container_id` (64 hex digits, no runtime prefix) and its
    /// selectors; `Ok(None)` when no container status has that ID.
    pub fn lookup(&self, container_id: &str) -> Result<Option<PodMatch>, Ambiguous> {
        let slot = match self.by_container.get(container_id) {
            None => return Ok(None),
            Some(None) => return Err(Ambiguous(container_id.to_owned())),
            Some(Some(slot)) => *slot,
        };
        let pod = &self.pods[slot.pod];
        let (statuses, specs) = match slot.kind {
            Kind::Regular => (&pod.status.container_statuses, &pod.spec.containers),
            Kind::Init => (&pod.status.init_container_statuses, &pod.spec.init_containers),
            Kind::Ephemeral => (&pod.status.ephemeral_container_statuses, &pod.spec.ephemeral_containers),
        };
        let status = &statuses[slot.status];
        let spec = specs.iter().find(|c| c.name == status.name);
        Ok(Some(PodMatch {
            namespace: pod.metadata.namespace.clone(),
            pod_name: pod.metadata.name.clone(),
            pod_uid: pod.metadata.uid.clone(),
            selectors: selectors(pod, status, spec),
        }))
    }
}

fn selectors(pod: &Pod, status: &ContainerStatus, spec: Option<&ContainerSpec>) -> Vec<String> {
    let m = &pod.metadata;
    let mut out = Vec::new();
    let mut push = |value: String| out.push(value);
    let nonempty = |prefix: &str, value: &str| (!value.is_empty()).then(|| format!("{prefix}:{value}"));
    let sa = if pod.spec.service_account_name.is_empty() {
        &pod.spec.service_account
    } else {
        &pod.spec.service_account_name
    };
    [
        nonempty("ns", &m.namespace),
        nonempty("sa", sa),
        nonempty("pod-name", &m.name),
        nonempty("pod-uid", &m.uid),
        nonempty("container-name", &status.name),
        spec.and_then(|s| nonempty("container-image", &s.image)),
        nonempty("container-image", &status.image),
        nonempty("container-image", &status.image_id),
        nonempty("node-name", &pod.spec.node_name),
    ]
    .into_iter()
    .flatten()
    .for_each(&mut push);
    // A label's value may be empty; its key never is.
    for (k, v) in m.labels.iter().filter(|(k, _)| !k.is_empty()) {
        push(format!("pod-label:{k}:{v}"));
    }
    for o in m.owner_references.iter().filter(|o| !o.kind.is_empty()) {
        if !o.name.is_empty() {
            push(format!("pod-owner:{}:{}", o.kind, o.name));
        }
        if !o.uid.is_empty() {
            push(format!("pod-owner-uid:{}:{}", o.kind, o.uid));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_absent_fields_are_empty() {
        let l = PodList::parse(br#"{"items":[{"metadata":null,"spec":{"containers":null},"status":{"containerStatuses":[{"name":"a","containerID":"containerd://abc","image":null}]}}]}"#).unwrap();
        let m = l.lookup("abc").unwrap().unwrap();
        assert_eq!(m.selectors, vec!["container-name:a".to_owned()]);
        assert!(PodList::parse(br#"{}"#).unwrap().is_empty());
        assert!(PodList::parse(br#"{"items":null}"#).unwrap().is_empty());
        assert!(PodList::parse(br#"[]"#).is_err());
        assert!(PodList::parse(b" \n").is_err());
        assert!(PodList::parse(br#"{"kind":"Status","status":"Failure"}"#).unwrap_err().0.contains("Status"));
        assert!(PodList::parse(br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}"#).is_ok());
        assert!(PodList::parse(br#"{"items":[{"metadata":{"labels":{"a":1}}}]}"#).is_err());
    }

    #[test]
    fn duplicate_container_ids_are_ambiguous() {
        let l = PodList::parse(br#"{"items":[
            {"metadata":{"name":"a"},"status":{"containerStatuses":[{"name":"x","containerID":"containerd://abc"}]}},
            {"metadata":{"name":"b"},"status":{"initContainerStatuses":[{"name":"y","containerID":"cri-o://abc"}]}}
        ]}"#)
        .unwrap();
        assert_eq!(l.lookup("abc"), Err(Ambiguous("abc".into())));
        assert_eq!(l.lookup("abd"), Ok(None));
    }

    #[test]
    fn service_account_falls_back_to_the_deprecated_field() {
        let l = PodList::parse(br#"{"items":[{"spec":{"serviceAccount":"old"},"status":{"containerStatuses":[{"name":"x","containerID":"docker://abc"}]}}]}"#).unwrap();
        assert!(l.lookup("abc").unwrap().unwrap().selectors.contains(&"sa:old".to_owned()));
    }
}
