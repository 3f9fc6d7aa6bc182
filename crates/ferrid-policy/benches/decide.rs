//! `cargo bench -p ferrid-policy`: the latency of one `decide()` against 1,000 realistic
//! policies, and of loading (parsing and validating) them. Plain std timing; prints
//! p50/p99/max in microseconds.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use ferrid_policy::{
    Action, AuthorityModel, Context, CredentialKind, PolicySet, Principal, Request, Resource,
};

const POLICIES: usize = 1_000;
const REQUESTS: usize = 20_000;
const WARMUP: usize = 2_000;

/// 1,000 policies in the shape an operator writes: per-service permits keyed on a unix
/// selector and the credential's SPIFFE ID, a few per-service exchange permits, and
/// organisation-wide forbids (trust-domain boundary, TTL caps, autonomy, depth, a deny
/// list).
fn policies() -> String {
    let mut out = String::new();
    let forbids = [
        r#"forbid(principal, action, resource) when { resource.spiffe_id like "spiffe://prod.example/*" && principal.trust_domain != "prod.example" };"#,
        r#"forbid(principal, action == Ferrid::Action::"issue", resource) when { resource.kind == "jwt" && resource.ttl > 900 };"#,
        r#"forbid(principal, action, resource) when { resource.ttl > 86400 };"#,
        r#"forbid(principal, action, resource) when { context.authority_model == "autonomous" && context.subject_is_human };"#,
        r#"forbid(principal, action == Ferrid::Action::"exchange", resource) when { context.chain_depth > 4 };"#,
        r#"forbid(principal, action, resource) when { principal.selectors.contains("unix:uid:0") };"#,
        r#"forbid(principal, action, resource) when { principal.attestor == "github_actions" && resource.spiffe_id like "spiffe://prod.example/*" && !principal.selectors.contains("github_actions:ref:refs/heads/main") };"#,
        r#"forbid(principal, action == Ferrid::Action::"exchange", resource) when { context.subject != "" && !context.chain.contains(context.subject) };"#,
    ];
    let mut n = 0;
    for f in forbids {
        out.push_str(f);
        out.push('\n');
        n += 1;
    }
    // Twenty denied services.
    for i in 0..20 {
        out.push_str(&format!(
            "forbid(principal, action, resource) when {{ resource.spiffe_id == \"spiffe://prod.example/retired/{i}\" }};\n"
        ));
        n += 1;
    }
    // Exchange permits for one in ten services.
    let mut i = 0;
    while n < POLICIES {
        if i % 10 == 9 {
            out.push_str(&format!(
                "permit(principal, action == Ferrid::Action::\"exchange\", resource) when {{ principal.spiffe_id == \"spiffe://prod.example/svc/{i}\" && context.task_id != \"\" && context.scope.contains(\"svc-{i}.read\") }};\n"
            ));
        } else {
            out.push_str(&format!(
                "permit(principal, action == Ferrid::Action::\"issue\", resource) when {{ principal.selectors.contains(\"unix:uid:{}\") && resource.spiffe_id == \"spiffe://prod.example/svc/{i}\" }};\n",
                10_000 + i
            ));
        }
        n += 1;
        i += 1;
    }
    out
}

/// A small deterministic generator (no dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn request(rng: &mut Lcg) -> Request {
    let i = rng.next() % 1_000;
    let exchange = rng.next().is_multiple_of(5);
    let td = if rng.next().is_multiple_of(20) { "qa.example" } else { "prod.example" };
    let uid = if rng.next().is_multiple_of(10) { 20_000 + i } else { 10_000 + i };
    Request {
        principal: Principal {
            spiffe_id: format!("spiffe://{td}/svc/{i}"),
            selectors: vec![
                format!("unix:uid:{uid}"),
                format!("unix:gid:{uid}"),
                format!("unix:user:svc{i}"),
                "unix:path:/usr/bin/app".into(),
            ],
            attestor: "unix".into(),
            trust_domain: td.into(),
        },
        action: if exchange { Action::Exchange } else { Action::Issue },
        resource: Resource {
            spiffe_id: format!("spiffe://prod.example/svc/{i}"),
            audience: if exchange { vec![format!("svc-{i}")] } else { vec![] },
            ttl: if exchange { 300 } else { 3600 },
            kind: if exchange { CredentialKind::Jwt } else { CredentialKind::X509 },
        },
        context: Context {
            chain: if exchange {
                vec!["user:alice".into(), format!("spiffe://{td}/svc/{i}")]
            } else {
                vec![]
            },
            authority_model: if exchange { AuthorityModel::Delegated } else { AuthorityModel::None },
            subject: if exchange { "user:alice".into() } else { String::new() },
            subject_is_human: exchange,
            task_id: if exchange { format!("task-{}", rng.next()) } else { String::new() },
            task_purpose: String::new(),
            trust_domain: "prod.example".into(),
            attestor: "unix".into(),
            scope: if exchange { vec![format!("svc-{i}.read")] } else { vec![] },
        },
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

fn report(name: &str, mut times: Vec<Duration>, allowed: usize) {
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e6 / times.len() as f64;
    println!(
        "{name}: {} decisions ({allowed} allowed): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs, mean {:.1} µs",
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        mean,
    );
}

/// Times every decision; reports all of them, then issue and exchange apart.
fn run(name: &str, set: &PolicySet, requests: &[Request]) {
    for r in requests.iter().take(WARMUP) {
        std::hint::black_box(set.decide(r));
    }
    let (mut all, mut issue, mut exchange) = (Vec::new(), Vec::new(), Vec::new());
    let (mut allowed, mut issue_allowed) = (0, 0);
    for r in requests {
        let t = Instant::now();
        let d = set.decide(std::hint::black_box(r));
        let elapsed = t.elapsed();
        all.push(elapsed);
        allowed += usize::from(d.allowed);
        if r.action == Action::Issue {
            issue.push(elapsed);
            issue_allowed += usize::from(d.allowed);
        } else {
            exchange.push(elapsed);
        }
    }
    report(name, all, allowed);
    report(&format!("{name}, issue"), issue, issue_allowed);
    report(&format!("{name}, exchange"), exchange, allowed - issue_allowed);
}

fn main() {
    let text = policies();
    let t = Instant::now();
    let set = PolicySet::from_text(&text, "bench.cedar").expect("bench policies validate");
    let load = t.elapsed();
    assert_eq!(set.len(), POLICIES);
    println!("load: {POLICIES} policies parsed and validated in {:.1} ms", load.as_secs_f64() * 1e3);

    let mut rng = Lcg(42);
    let requests: Vec<Request> = (0..REQUESTS).map(|_| request(&mut rng)).collect();
    run("default set (2 policies)", &PolicySet::default_permit(), &requests);
    run(&format!("{POLICIES} policies"), &set, &requests);
}
