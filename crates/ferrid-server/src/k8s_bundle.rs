//! Publishes the trust bundle (PEM) to a Kubernetes ConfigMap, so agents in the cluster
//! can mount it as their `trust_bundle_file` and authenticate the server on first
//! contact, and relying services can mount it to validate X.509-SVIDs.
//!
//! The ConfigMap is written with server-side apply (field manager `ferrid-server`) at
//! start-up and after every bundle change; failures are logged and retried with backoff
//! (1 s doubling to 60 s) until they succeed or the bundle changes again.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use tokio::sync::watch;

/// Where the in-cluster service account's namespace is mounted.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// `[k8s_bundle]` in the server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sBundleSection {
    /// The ConfigMap's namespace; default: the server pod's own namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The ConfigMap's name.
    #[serde(default = "default_config_map")]
    pub config_map: String,
    /// The data key holding the PEM bundle.
    #[serde(default = "default_key")]
    pub key: String,
    /// Kubeconfig for the API; the in-cluster service account when unset.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

fn default_config_map() -> String {
    "ferrid-bundle".into()
}

fn default_key() -> String {
    "bundle.pem".into()
}

/// Whether `s` is a valid DNS-1123 subdomain (ConfigMap and namespace names).
fn dns1123(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl K8sBundleSection {
    /// Checks names and resolves the namespace. Errors say which key is wrong.
    pub(crate) fn resolve_namespace(&self) -> Result<String, String> {
        let ns = match &self.namespace {
            Some(ns) => ns.clone(),
            None => std::fs::read_to_string(NAMESPACE_FILE).map(|s| s.trim().to_owned()).map_err(|e| {
                format!("`k8s_bundle.namespace`: not set, and not running in a pod ({NAMESPACE_FILE}: {e})")
            })?,
        };
        if !dns1123(&ns) {
            return Err(format!("`k8s_bundle.namespace`: {ns:?} is not a valid namespace name"));
        }
        if !dns1123(&self.config_map) {
            return Err(format!(
                "`k8s_bundle.config_map`: {:?} is not a valid ConfigMap name",
                self.config_map
            ));
        }
        let key_ok = !self.key.is_empty()
            && self.key.len() <= 253
            && self.key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !key_ok {
            return Err(format!("`k8s_bundle.key`: {:?} is not a valid ConfigMap key", self.key));
        }
        Ok(ns)
    }
}

/// Writes one ConfigMap with server-side apply.
pub(crate) struct Publisher {
    api: kube::Api<ConfigMap>,
    name: String,
    key: String,
}

impl Publisher {
    pub(crate) fn new(client: kube::Client, namespace: &str, name: &str, key: &str) -> Self {
        Self { api: kube::Api::namespaced(client, namespace), name: name.to_owned(), key: key.to_owned() }
    }

    /// Applies `pem` as the ConfigMap's data.
    pub(crate) async fn publish(&self, pem: &str) -> Result<(), String> {
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/managed-by": "ferrid-server"},
            },
            "data": { self.key.as_str(): pem },
        });
        let params = PatchParams::apply("ferrid-server").force();
        self.api.patch(&self.name, &params, &Patch::Apply(&cm)).await.map(|_| ()).map_err(|e| match e {
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
                "the API refused to write ConfigMap {} (HTTP {}: {}); the server's service account needs get, create and patch on it",
                self.name, s.code, s.message
            ),
            other => format!("writing ConfigMap {}: {other}", self.name),
        })
    }
}

/// Publishes `bundle()` (sequence, PEM) now and whenever `changes` fires with a new
/// sequence, until `stop`.
pub(crate) async fn run(
    publisher: Publisher,
    bundle: impl Fn() -> (u64, String) + Send,
    mut changes: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut published: Option<u64> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let (sequence, pem) = bundle();
        if published != Some(sequence) {
            match publisher.publish(&pem).await {
                Ok(()) => {
                    tracing::info!(sequence, config_map = %publisher.name, "trust bundle published to Kubernetes");
                    published = Some(sequence);
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "publishing the trust bundle failed");
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path as UrlPath, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::patch;
    use serde_json::{Value, json};

    use super::*;

    /// A local HTTPS server following the Kubernetes API for server-side apply of a
    /// ConfigMap (`PATCH /api/v1/namespaces/{ns}/configmaps/{name}` with
    /// `Content-Type: application/apply-patch+yaml`, `fieldManager`, `force`). No API
    /// server can run on this machine.
    #[derive(Default)]
    struct Api {
        objects: Mutex<HashMap<(String, String), Value>>,
        queries: Mutex<Vec<HashMap<String, String>>>,
        fail_next: AtomicUsize,
        forbid: Mutex<bool>,
    }

    async fn apply(
        State(s): State<Arc<Api>>,
        UrlPath((ns, name)): UrlPath<(String, String)>,
        Query(q): Query<HashMap<String, String>>,
        h: HeaderMap,
        body: String,
    ) -> Response {
        if *s.forbid.lock().unwrap() {
            let st = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
                "message": format!("configmaps \"{name}\" is forbidden: User \"system:serviceaccount:ferrid:ferrid-server\" cannot patch resource")});
            return (StatusCode::FORBIDDEN, axum::Json(st)).into_response();
        }
        if s.fail_next.load(Ordering::SeqCst) > 0 {
            s.fail_next.fetch_sub(1, Ordering::SeqCst);
            let st = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "reason": "InternalError", "message": "etcdserver: request timed out"});
            return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(st)).into_response();
        }
        assert_eq!(h.get("content-type").unwrap(), "application/apply-patch+yaml");
        let obj: Value = serde_json::from_str(&body).unwrap();
        s.queries.lock().unwrap().push(q);
        s.objects.lock().unwrap().insert((ns, name), obj.clone());
        axum::Json(obj).into_response()
    }

    async fn start() -> (Arc<Api>, kube::Client) {
        let state = Arc::new(Api::default());
        let router = axum::Router::new()
            .route("/api/v1/namespaces/{ns}/configmaps/{name}", patch(apply))
            .with_state(state.clone());
        let tls = ferrid_test_util::TestTls::new(&["localhost"]);
        let addr = ferrid_test_util::serve(router, Some(tls.server_config.clone())).await;
        let mut cfg = kube::Config::new(format!("https://localhost:{}", addr.port()).parse().unwrap());
        cfg.root_cert = Some(vec![pem::parse(&tls.ca_pem).unwrap().into_contents()]);
        (state, kube::Client::try_from(cfg).unwrap())
    }

    fn data(api: &Api) -> Option<String> {
        let objects = api.objects.lock().unwrap();
        let cm = objects.get(&("ferrid".to_owned(), "ferrid-bundle".to_owned()))?;
        cm["data"]["bundle.pem"].as_str().map(str::to_owned)
    }

    #[tokio::test]
    async fn publishes_at_start_and_on_every_bundle_change_and_retries_failures() {
        let (api, client) = start().await;
        api.fail_next.store(1, Ordering::SeqCst);
        let bundle = Arc::new(Mutex::new((1u64, "PEM-1".to_owned())));
        let (changes_tx, changes) = watch::channel(0u64);
        let (stop_tx, stop) = watch::channel(false);
        let b = bundle.clone();
        let task = tokio::spawn(run(
            Publisher::new(client, "ferrid", "ferrid-bundle", "bundle.pem"),
            move || b.lock().unwrap().clone(),
            changes,
            stop,
        ));
        // The first write fails with a 500; the retry a second later lands.
        wait_for(|| data(&api).as_deref() == Some("PEM-1")).await;
        let q = api.queries.lock().unwrap()[0].clone();
        assert_eq!(q.get("fieldManager").map(String::as_str), Some("ferrid-server"));
        assert_eq!(q.get("force").map(String::as_str), Some("true"));

        // An entry change (same bundle sequence) writes nothing; a bundle change does.
        changes_tx.send_modify(|v| *v += 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(api.queries.lock().unwrap().len(), 1);
        *bundle.lock().unwrap() = (2, "PEM-2".into());
        changes_tx.send_modify(|v| *v += 1);
        wait_for(|| data(&api).as_deref() == Some("PEM-2")).await;
        assert_eq!(api.queries.lock().unwrap().len(), 2);

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_forbidden_write_names_the_missing_permission() {
        let (api, client) = start().await;
        *api.forbid.lock().unwrap() = true;
        let e =
            Publisher::new(client, "ferrid", "ferrid-bundle", "bundle.pem").publish("PEM").await.unwrap_err();
        assert!(e.contains("HTTP 403") && e.contains("needs get, create and patch"), "{e}");
    }

    #[test]
    fn names_are_checked() {
        let ok = K8sBundleSection {
            namespace: Some("ferrid".into()),
            config_map: "ferrid-bundle".into(),
            key: "bundle.pem".into(),
            kubeconfig: None,
        };
        assert_eq!(ok.resolve_namespace().unwrap(), "ferrid");
        let bad = K8sBundleSection { namespace: Some("Ferrid_NS".into()), ..ok.clone() };
        assert!(bad.resolve_namespace().unwrap_err().contains("k8s_bundle.namespace"));
        let bad = K8sBundleSection { config_map: "-x".into(), ..ok.clone() };
        assert!(bad.resolve_namespace().unwrap_err().contains("k8s_bundle.config_map"));
        let bad = K8sBundleSection { key: "a/b".into(), ..ok.clone() };
        assert!(bad.resolve_namespace().unwrap_err().contains("k8s_bundle.key"));
    }

    async fn wait_for(mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "condition not met within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
