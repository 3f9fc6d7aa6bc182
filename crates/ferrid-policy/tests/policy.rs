//! ferrid-policy through its public API: decisions, validation at load, reloads,
//! fail-closed evaluation, golden cases and the shipped examples.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrid_policy::{
    Action, AuthorityModel, Context, CredentialKind, PolicyEngine, PolicyError, PolicySet, Principal,
    Request, Resource, run_cases,
};

fn issue(principal_td: &str, credential: &str) -> Request {
    Request {
        principal: Principal {
            spiffe_id: format!("spiffe://{principal_td}/web"),
            selectors: vec!["unix:uid:1000".into()],
            attestor: "unix".into(),
            trust_domain: principal_td.into(),
        },
        action: Action::Issue,
        resource: Resource {
            spiffe_id: credential.into(),
            audience: vec![],
            ttl: 300,
            kind: CredentialKind::X509,
        },
        context: Context { trust_domain: principal_td.into(), attestor: "unix".into(), ..Context::default() },
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy")
}

const PERMIT_ALL: &str = r#"@id("all") permit(principal, action, resource);"#;

#[test]
fn a_permit_allows_and_nothing_else_does() {
    let set = PolicySet::from_text(
        r#"@id("web") permit(principal, action == Ferrid::Action::"issue", resource)
           when { resource.spiffe_id == "spiffe://prod.example/web" };"#,
        "web.cedar",
    )
    .unwrap();
    let d = set.decide(&issue("prod.example", "spiffe://prod.example/web"));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.determining_policies, ["web"]);
    assert!(d.errors.is_empty());
    assert_eq!(d.policy_hash, set.hash());

    // No permit applies: denied (Cedar's default), with no determining policy.
    let d = set.decide(&issue("prod.example", "spiffe://prod.example/db"));
    assert!(!d.allowed);
    assert!(d.determining_policies.is_empty());
    let mut exchange = issue("prod.example", "spiffe://prod.example/web");
    exchange.action = Action::Exchange;
    assert!(!set.decide(&exchange).allowed);
}

#[test]
fn forbid_wins_over_any_permit() {
    let text = format!(
        r#"{PERMIT_ALL}
        @id("issue-web") permit(principal, action == Ferrid::Action::"issue", resource);
        @id("no-qa-to-prod") forbid(principal, action, resource)
          when {{ resource.spiffe_id like "spiffe://prod.example/*" && principal.trust_domain != "prod.example" }};"#
    );
    let set = PolicySet::from_text(&text, "p.cedar").unwrap();
    let d = set.decide(&issue("qa.example", "spiffe://prod.example/web"));
    assert!(!d.allowed);
    assert_eq!(d.determining_policies, ["no-qa-to-prod"]);
    let d = set.decide(&issue("prod.example", "spiffe://prod.example/web"));
    assert!(d.allowed);
    assert_eq!(d.determining_policies, ["all", "issue-web"]);
}

#[test]
fn unnamed_policies_get_ids_from_their_file_and_position() {
    let set = PolicySet::from_text(
        "permit(principal, action, resource) when { resource.ttl > 1000000 };\npermit(principal, action, resource);",
        "base.cedar",
    )
    .unwrap();
    let d = set.decide(&issue("prod.example", "spiffe://prod.example/web"));
    assert_eq!(d.determining_policies, ["base.cedar#policy1"]);
}

fn invalid(e: PolicyError) -> Vec<ferrid_policy::Problem> {
    match e {
        PolicyError::Invalid { problems } => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn an_attribute_outside_the_schema_is_refused_at_load_with_file_line_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-good.cedar"), PERMIT_ALL).unwrap();
    std::fs::write(
        dir.path().join("b-bad.cedar"),
        "// namespace is not a Workload attribute\n@id(\"ns\")\nforbid(principal, action, resource)\n  when { principal.namespace == \"qa\" };\n",
    )
    .unwrap();
    let err = PolicySet::load(dir.path()).unwrap_err();
    let text = err.to_string();
    let problems = invalid(err);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert!(p.file.ends_with("b-bad.cedar"), "{p:?}");
    assert_eq!(p.policy_id.as_deref(), Some("ns"));
    assert_eq!(p.line, Some(4), "{p:?}");
    assert!(p.column.is_some());
    assert!(p.message.contains("namespace"), "{p:?}");
    assert!(text.contains("b-bad.cedar:4:"), "{text}");
    assert!(text.contains("policy `ns`"), "{text}");
}

#[test]
fn an_unknown_action_or_type_mismatch_is_refused() {
    for bad in [
        r#"permit(principal, action == Ferrid::Action::"revoke", resource);"#,
        r#"permit(principal, action, resource) when { resource.ttl == "300" };"#,
        // Warnings are refused too: this policy can never apply.
        r#"forbid(principal is Ferrid::Credential, action, resource);"#,
        r#"forbid(principal, action, resource) when { false };"#,
    ] {
        let err = PolicySet::from_text(bad, "x.cedar").unwrap_err();
        assert!(err.to_string().starts_with("x.cedar:1:"), "{bad}: {err}");
    }
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let err = PolicySet::from_text(
        &format!("{PERMIT_ALL}\n\npermit(principal, action resource);\n"),
        "syntax.cedar",
    )
    .unwrap_err();
    let problems = invalid(err);
    assert_eq!(problems[0].file, "syntax.cedar");
    assert_eq!(problems[0].line, Some(3), "{problems:?}");
    assert!(problems[0].column.is_some());
}

#[test]
fn duplicate_ids_and_templates_are_refused() {
    let dup =
        r#"@id("x") permit(principal, action, resource); @id("x") forbid(principal, action, resource);"#;
    let p = invalid(PolicySet::from_text(dup, "d.cedar").unwrap_err());
    assert!(p[0].message.contains("duplicate"), "{p:?}");
    let template = "permit(principal == ?principal, action, resource);";
    assert!(PolicySet::from_text(template, "t.cedar").is_err());
}

#[test]
fn a_directory_without_policy_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    assert!(matches!(PolicySet::load(dir.path()), Err(PolicyError::NoPolicyFiles { .. })));
    assert!(matches!(PolicySet::load(dir.path().join("missing.cedar")), Err(PolicyError::Io { .. })));
}

#[test]
fn the_hash_ignores_the_directory_and_follows_the_contents() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [a.path(), b.path()] {
        std::fs::write(d.join("p.cedar"), PERMIT_ALL).unwrap();
    }
    let (ha, hb) = (PolicySet::load(a.path()).unwrap(), PolicySet::load(b.path()).unwrap());
    assert_eq!(ha.hash(), hb.hash());
    assert_eq!(ha.hash(), PolicySet::from_text(PERMIT_ALL, "p.cedar").unwrap().hash());
    std::fs::write(b.path().join("p.cedar"), format!("{PERMIT_ALL}\n")).unwrap();
    assert_ne!(ha.hash(), PolicySet::load(b.path()).unwrap().hash());
}

#[test]
fn reload_keeps_the_old_set_on_error_and_swaps_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.cedar");
    std::fs::write(&file, PERMIT_ALL).unwrap();
    let engine = PolicyEngine::new(PolicySet::load(&file).unwrap());
    let before = engine.hash();
    let req = issue("qa.example", "spiffe://prod.example/web");
    assert!(engine.decide(&req).allowed);

    // A syntax error: refused, the old set keeps deciding.
    std::fs::write(&file, "forbid(principal, action, resource) when { ").unwrap();
    let err = engine.reload_from(&file).unwrap_err();
    assert!(err.to_string().contains("p.cedar:1:"), "{err}");
    assert_eq!(engine.hash(), before);
    assert!(engine.decide(&req).allowed);

    // A schema violation: refused likewise.
    std::fs::write(&file, "forbid(principal, action, resource) when { principal.team == \"qa\" };").unwrap();
    assert!(engine.reload_from(&file).is_err());
    assert_eq!(engine.hash(), before);
    assert!(engine.decide(&req).allowed);

    // A good set: swapped in.
    std::fs::write(
        &file,
        format!("{PERMIT_ALL}\n@id(\"qa\") forbid(principal, action, resource) when {{ principal.trust_domain == \"qa.example\" }};"),
    )
    .unwrap();
    let after = engine.reload_from(&file).unwrap();
    assert_ne!(after, before);
    assert_eq!(engine.hash(), after);
    let d = engine.decide(&req);
    assert!(!d.allowed);
    assert_eq!(d.determining_policies, ["qa"]);
    assert_eq!(d.policy_hash, after);
}

#[test]
fn an_evaluation_error_fails_closed() {
    // The validator cannot see integer overflow: with a TTL of 2 or more this forbid
    // fails to evaluate. Cedar alone skips a failing policy, so its permit would allow;
    // Ferrid denies.
    let text = format!(
        "{PERMIT_ALL}\n@id(\"overflow\") forbid(principal, action, resource) when {{ resource.ttl * 4611686018427387904 > 0 }};"
    );
    let set = PolicySet::from_text(&text, "o.cedar").unwrap();
    let mut req = issue("prod.example", "spiffe://prod.example/web");
    req.resource.ttl = 1;
    let d = set.decide(&req);
    assert!(!d.allowed, "ttl 1 does not overflow, so the forbid applies: {d:?}");
    assert_eq!(d.determining_policies, ["overflow"]);
    assert!(d.errors.is_empty());

    req.resource.ttl = 300;
    let d = set.decide(&req);
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.determining_policies, ["overflow"]);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].contains("overflow"), "{:?}", d.errors);

    // Also when the failing policy is a permit: the request is denied with the error.
    let set = PolicySet::from_text(
        "@id(\"p\") permit(principal, action, resource) when { resource.ttl * 4611686018427387904 > 0 };",
        "p.cedar",
    )
    .unwrap();
    let d = set.decide(&req);
    assert!(!d.allowed && !d.errors.is_empty(), "{d:?}");
}

#[test]
fn ttls_beyond_i64_saturate() {
    let set = PolicySet::from_text(
        "@id(\"long\") permit(principal, action, resource) when { resource.ttl == 9223372036854775807 };",
        "t.cedar",
    )
    .unwrap();
    let mut req = issue("prod.example", "spiffe://prod.example/web");
    req.resource.ttl = u64::MAX;
    assert!(set.decide(&req).allowed);
}

#[test]
fn autonomous_agents_never_act_for_humans() {
    let text = format!(
        "{PERMIT_ALL}\nforbid(principal, action, resource) when {{ context.authority_model == \"autonomous\" && context.subject_is_human }};"
    );
    let set = PolicySet::from_text(&text, "agents.cedar").unwrap();
    let mut req = issue("prod.example", "spiffe://prod.example/agent");
    req.action = Action::Exchange;
    req.context.chain = vec!["user:alice".into(), "spiffe://prod.example/agent".into()];
    req.context.subject = "user:alice".into();
    req.context.subject_is_human = true;
    req.context.authority_model = AuthorityModel::Autonomous;
    let d = set.decide(&req);
    assert!(!d.allowed);
    assert_eq!(d.determining_policies, ["agents.cedar#policy1"]);
    req.context.authority_model = AuthorityModel::Delegated;
    assert!(set.decide(&req).allowed);
    req.context.authority_model = AuthorityModel::Autonomous;
    req.context.subject_is_human = false;
    assert!(set.decide(&req).allowed);
}

#[test]
fn context_values_reach_the_policies() {
    let set = PolicySet::from_text(
        r#"@id("ctx") permit(principal, action == Ferrid::Action::"exchange", resource) when {
             context.chain_depth == 2 && context.chain.contains("user:alice") &&
             context.authority_model == "bounded" && context.subject == "user:alice" &&
             context.task_id == "t-1" && context.task_purpose == "report" &&
             context.trust_domain == "prod.example" && context.attestor == "k8s" &&
             context.scope.contains("read") && resource.audience.contains("api") &&
             resource.kind == "wit" && principal.attestor == "unix" &&
             principal.selectors.contains("unix:uid:1000") && principal.spiffe_id == "spiffe://prod.example/web"
           };"#,
        "ctx.cedar",
    )
    .unwrap();
    let mut req = issue("prod.example", "spiffe://prod.example/agent");
    req.action = Action::Exchange;
    req.resource.kind = CredentialKind::Wit;
    req.resource.audience = vec!["api".into()];
    req.context = Context {
        chain: vec!["user:alice".into(), "spiffe://prod.example/web".into()],
        authority_model: AuthorityModel::Bounded,
        subject: "user:alice".into(),
        subject_is_human: true,
        task_id: "t-1".into(),
        task_purpose: "report".into(),
        trust_domain: "prod.example".into(),
        attestor: "k8s".into(),
        scope: vec!["read".into()],
    };
    assert!(set.decide(&req).allowed);
    req.context.chain.push("spiffe://prod.example/other".into());
    assert!(!set.decide(&req).allowed, "chain_depth follows the chain");
}

#[test]
fn the_default_set_permits_issue_and_exchange() {
    let set = PolicySet::default_permit();
    let mut req = issue("qa.example", "spiffe://prod.example/web");
    assert!(set.decide(&req).allowed);
    req.action = Action::Exchange;
    let d = set.decide(&req);
    assert!(d.allowed);
    assert_eq!(d.determining_policies, ["default-permit-exchange"]);
}

#[test]
fn golden_cases_report_passes_and_failures() {
    let set = PolicySet::from_text(
        r#"@id("issue") permit(principal, action == Ferrid::Action::"issue", resource);"#,
        "p.cedar",
    )
    .unwrap();
    let req = serde_json::to_value(issue("prod.example", "spiffe://prod.example/web")).unwrap();
    let mut exchange = req.clone();
    exchange["action"] = "exchange".into();
    let cases = serde_json::json!([
        {"name": "issue allowed", "request": req, "expect": "allow"},
        {"name": "exchange denied", "request": exchange, "expect": "deny"},
        {"name": "wrongly expects a deny", "request": req, "expect": "deny"},
    ]);
    let report = run_cases(&set, &cases.to_string()).unwrap();
    assert_eq!((report.passed, report.failed), (2, 1));
    assert!(!report.all_passed());
    let failures: Vec<_> = report.failures().collect();
    assert_eq!(failures[0].name, "wrongly expects a deny");
    assert_eq!(failures[0].decision.determining_policies, ["issue"]);
    assert_eq!(report.policy_hash, set.hash());

    // Minimal requests: optional fields default.
    let minimal = r#"[{"name": "m", "expect": "allow", "request": {
        "principal": {"spiffe_id": "spiffe://a/b"}, "action": "issue",
        "resource": {"spiffe_id": "spiffe://a/b", "ttl": 60, "kind": "jwt"}}}]"#;
    assert!(run_cases(&set, minimal).unwrap().all_passed());

    for bad in [
        "[]",
        "{}",
        r#"[{"name": "typo", "expect": "allow", "request": {"principal": {"spiffe_id": "x", "selector": []}, "action": "issue", "resource": {"spiffe_id": "y", "ttl": 1, "kind": "x509"}}}]"#,
        r#"[{"name": "bad kind", "expect": "allow", "request": {"principal": {"spiffe_id": "x"}, "action": "issue", "resource": {"spiffe_id": "y", "ttl": 1, "kind": "pgp"}}}]"#,
    ] {
        assert!(matches!(run_cases(&set, bad), Err(PolicyError::Cases(_))), "{bad}");
    }
    let dup = serde_json::json!([
        {"name": "same", "request": req, "expect": "allow"},
        {"name": "same", "request": req, "expect": "allow"},
    ]);
    assert!(run_cases(&set, &dup.to_string()).is_err());
}

#[test]
fn the_shipped_examples_pass_their_cases() {
    let set = PolicySet::load(examples()).unwrap();
    assert_eq!(set.len(), 7);
    let cases = std::fs::read_to_string(examples().join("CASES.json")).unwrap();
    let report = run_cases(&set, &cases).unwrap();
    let failures: Vec<_> = report.failures().map(|f| (&f.name, &f.decision)).collect();
    assert!(report.all_passed(), "{failures:#?}");
    assert!(report.passed >= 10);
    // Each example policy is exercised by some case.
    for id in [
        "issue-up-to-1h",
        "jwt-at-most-15m",
        "prod-only-for-prod",
        "prod-ci-main-only",
        "exchange-for-a-task",
        "no-autonomous-for-humans",
        "subject-in-chain",
    ] {
        assert!(
            report.results.iter().any(|r| r.decision.determining_policies.iter().any(|p| p == id)),
            "no case is decided by {id}"
        );
    }
}

#[test]
fn the_schema_copy_in_examples_matches_the_embedded_schema() {
    let copy = std::fs::read_to_string(examples().join("ferrid.cedarschema")).unwrap();
    assert_eq!(copy, ferrid_policy::SCHEMA_TEXT, "examples/policy/ferrid.cedarschema is out of date");
}

/// Waits (real time, up to 10 s) until the engine's hash satisfies `want`.
async fn wait_for(engine: &PolicyEngine, want: impl Fn(&str) -> bool) {
    for _ in 0..200 {
        if want(&engine.hash()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the watcher never reached the expected state; active hash {}", engine.hash());
}

#[tokio::test]
async fn watch_reloads_good_edits_and_keeps_serving_through_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.cedar");
    std::fs::write(&file, PERMIT_ALL).unwrap();
    let engine = Arc::new(PolicyEngine::new(PolicySet::default_permit()));
    let default_hash = engine.hash();
    let task = engine.watch(dir.path(), Duration::from_millis(50));
    let req = issue("qa.example", "spiffe://prod.example/web");

    // The directory's set replaces the default one.
    wait_for(&engine, |h| h != default_hash).await;
    let first = engine.hash();
    assert_eq!(first, PolicySet::load(dir.path()).unwrap().hash());

    // A broken edit: the previous set keeps deciding (several polls later).
    std::fs::write(&file, "permit(principal, action, resource").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.hash(), first);
    assert!(engine.decide(&req).allowed);
    // So does a vanished directory.
    let moved = dir.path().with_extension("moved");
    std::fs::rename(dir.path(), &moved).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::rename(&moved, dir.path()).unwrap();
    assert_eq!(engine.hash(), first);

    // Fixed: reloaded.
    std::fs::write(&file, r#"@id("none") forbid(principal, action, resource);"#).unwrap();
    wait_for(&engine, |h| h != first).await;
    assert!(!engine.decide(&req).allowed);

    // Dropping the engine ends the task.
    drop(engine);
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}
