use super::*;

#[test]
fn embedded_schema_and_default_set_are_valid() {
    let (_, warnings) = Schema::from_cedarschema_str(SCHEMA_TEXT).unwrap();
    assert_eq!(warnings.count(), 0);
    let set = PolicySet::default_permit();
    assert_eq!(set.len(), 2);
}

#[test]
fn line_column_counts_characters_from_one() {
    let text = "ab\ncdé\nf";
    assert_eq!(line_column(text, 0), (1, 1));
    assert_eq!(line_column(text, 4), (2, 2));
    // 'f' comes after "é" (2 bytes) and a newline.
    assert_eq!(line_column(text, text.len() - 1), (3, 1));
    assert_eq!(line_column(text, 7), (2, 4));
}

#[test]
fn hash_depends_on_names_and_contents_not_on_order() {
    let s = |n: &str, t: &str| Source { name: n.into(), origin: n.into(), text: t.into() };
    let ab = canonical_hash(&[s("a.cedar", "x"), s("b.cedar", "y")]);
    assert_eq!(ab, canonical_hash(&[s("b.cedar", "y"), s("a.cedar", "x")]));
    assert_ne!(ab, canonical_hash(&[s("a.cedar", "x"), s("b.cedar", "z")]));
    assert_ne!(ab, canonical_hash(&[s("a.cedar", "xy"), s("b.cedar", "")]));
    assert_ne!(ab, canonical_hash(&[s("c.cedar", "x"), s("b.cedar", "y")]));
    assert_eq!(ab.len(), 64);
}

/// The key a one-policy text is filed under, if any.
fn key_of(text: &str) -> Option<index::Key> {
    let set = PolicySet::from_text(text, "k.cedar").unwrap();
    let policy = set.policies.policies().next().unwrap();
    let key = index::key(policy);
    let filed = |p: &index::Partition| p.unkeyed.is_empty() == key.is_some();
    assert!(filed(&set.index.issue) && filed(&set.index.exchange));
    key
}

#[test]
fn policies_are_keyed_only_when_skipping_them_is_exact() {
    let key = Some(index::Key::Credential("spiffe://p/a".to_owned()));
    // Scope constraint: always exact (checked before the condition).
    assert_eq!(
        key_of(
            r#"permit(principal, action, resource == Ferrid::Credential::"spiffe://p/a") when { resource.ttl * 2 > 1 };"#
        ),
        key
    );
    // A top-level conjunct, in any position, of an error-free condition.
    assert_eq!(
        key_of(
            r#"permit(principal, action, resource) when { principal.selectors.contains("u") && resource.spiffe_id == "spiffe://p/a" };"#
        ),
        key
    );
    assert_eq!(
        key_of(r#"permit(principal, action, resource) when { "spiffe://p/a" == resource.spiffe_id };"#),
        key
    );
    // The workload, when no credential is named.
    let workload = Some(index::Key::Workload("spiffe://p/w".to_owned()));
    assert_eq!(
        key_of(
            r#"permit(principal == Ferrid::Workload::"spiffe://p/w", action, resource) when { resource.ttl * 2 > 1 };"#
        ),
        workload
    );
    assert_eq!(
        key_of(
            r#"permit(principal, action, resource) when { context.task_id != "" } when { principal.spiffe_id == "spiffe://p/w" };"#
        ),
        workload
    );
    assert_eq!(
        key_of(
            r#"permit(principal, action, resource) when { principal.spiffe_id == "spiffe://p/w" && resource.spiffe_id == "spiffe://p/a" };"#
        ),
        key
    );
    // Arithmetic can fail (overflow) and must then deny: not keyed.
    assert_eq!(
        key_of(
            r#"forbid(principal, action, resource) when { resource.ttl * 4611686018427387904 > 0 && resource.spiffe_id == "spiffe://p/a" };"#
        ),
        None
    );
    assert_eq!(
        key_of(
            r#"forbid(principal, action, resource) when { resource.spiffe_id == "spiffe://p/a" } unless { resource.ttl + 1 > 0 };"#
        ),
        None
    );
    // Attributes of an entity literal may not exist at run time: not keyed.
    assert_eq!(
        key_of(
            r#"permit(principal, action, resource) when { resource.spiffe_id == "spiffe://p/a" && Ferrid::Workload::"w".spiffe_id == "" };"#
        ),
        None
    );
    // Not a conjunct: not keyed.
    assert_eq!(
        key_of(
            r#"permit(principal, action, resource) when { resource.spiffe_id == "spiffe://p/a" || resource.ttl < 5 };"#
        ),
        None
    );
}

#[test]
fn policies_are_filed_under_the_actions_their_scope_allows() {
    let set = PolicySet::from_text(
        r#"permit(principal, action == Ferrid::Action::"issue", resource);
           permit(principal, action in [Ferrid::Action::"exchange"], resource);
           forbid(principal, action, resource) when { resource.ttl > 10 };"#,
        "a.cedar",
    )
    .unwrap();
    assert_eq!(set.index.issue.unkeyed.num_of_policies(), 2);
    assert_eq!(set.index.exchange.unkeyed.num_of_policies(), 2);
}

/// A mixed set (unkeyed, keyed by credential and by workload, from scopes and
/// conditions, erroring policies, all action forms) decides every request exactly as evaluating all policies does.
#[test]
fn the_index_changes_no_decision() {
    let mut text = String::new();
    for i in 0..80 {
        let p = match i % 8 {
            0 => format!(
                r#"permit(principal, action == Ferrid::Action::"issue", resource) when {{ principal.selectors.contains("unix:uid:{i}") && resource.spiffe_id == "spiffe://p/s{}" }};"#,
                i % 7
            ),
            1 => format!(
                r#"forbid(principal, action, resource == Ferrid::Credential::"spiffe://p/s{}") when {{ resource.ttl * 4611686018427387904 > {i} }};"#,
                i % 5
            ),
            2 => format!(
                r#"permit(principal, action in [Ferrid::Action::"exchange", Ferrid::Action::"issue"], resource) when {{ resource.spiffe_id == "spiffe://p/s{}" && context.task_id == "t{}" }};"#,
                i % 7,
                i % 3
            ),
            3 => format!(
                r#"forbid(principal, action == Ferrid::Action::"exchange", resource) when {{ resource.ttl > {} }};"#,
                100 + i
            ),
            4 => format!(
                r#"forbid(principal, action, resource) when {{ resource.ttl + 9223372036854775000 > {i} && resource.spiffe_id == "spiffe://p/s{}" }};"#,
                i % 7
            ),
            5 => format!(
                r#"forbid(principal == Ferrid::Workload::"spiffe://p/w{}", action, resource) when {{ resource.ttl * 4611686018427387904 > {i} }};"#,
                i % 3
            ),
            6 => format!(
                r#"permit(principal, action, resource) when {{ principal.spiffe_id == "spiffe://p/w{}" && context.task_id == "t{}" }};"#,
                i % 9,
                i % 4
            ),
            _ => format!(
                r#"permit(principal, action, resource) when {{ principal.trust_domain == "td{}" }};"#,
                i % 4
            ),
        };
        text.push_str(&p);
        text.push('\n');
    }
    let set = PolicySet::from_text(&text, "mix.cedar").unwrap();
    for p in [&set.index.issue, &set.index.exchange] {
        assert!(
            !p.unkeyed.is_empty() && !p.by_credential.is_empty() && !p.by_workload.is_empty(),
            "{} {} {}",
            p.unkeyed.num_of_policies(),
            p.by_credential.len(),
            p.by_workload.len()
        );
    }
    let mut seen_allow = 0;
    let mut seen_error = 0;
    for n in 0..2_000u64 {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
        let request = Request {
            principal: Principal {
                spiffe_id: format!("spiffe://p/w{}", h % 9),
                selectors: vec![format!("unix:uid:{}", h % 61)],
                attestor: "unix".into(),
                trust_domain: format!("td{}", (h >> 8) % 6),
            },
            action: if (h >> 12) % 2 == 0 { Action::Issue } else { Action::Exchange },
            resource: Resource {
                spiffe_id: format!("spiffe://p/s{}", (h >> 16) % 9),
                audience: vec![],
                ttl: [1, 50, 200, 2000][((h >> 20) % 4) as usize],
                kind: CredentialKind::X509,
            },
            context: Context { task_id: format!("t{}", (h >> 24) % 4), ..Context::default() },
        };
        let (fast, slow) = (set.decide_in(&request, true), set.decide_in(&request, false));
        assert_eq!(fast, slow, "{request:?}");
        seen_allow += usize::from(fast.allowed);
        seen_error += usize::from(!fast.errors.is_empty());
    }
    assert!(seen_allow > 50 && seen_error > 100, "allowed {seen_allow}, errors {seen_error}");
}
