//! Random sequences of revocations, prunes and questions give the index the same
//! answers as a straightforward model: a list of every revocation applied, each
//! covering what the rules in the crate documentation say while its forget-at time is
//! not past.
use ferrid_revocation::{JwtCredential, Revocation, RevocationIndex, X509Credential};
use ferrid_types::Serial;
use proptest::prelude::*;

const IDS: [&str; 3] = ["spiffe://td/a", "spiffe://td/b", "spiffe://td/c"];
const JTIS: [&str; 3] = ["j0", "j1", "j2"];

#[derive(Debug, Clone)]
enum Op {
    Apply(Revocation, i64),
    Prune(i64),
    AskX509 { serial: u8, id: usize, not_before: i64, now: i64 },
    AskJwt { jti: Option<usize>, sub: usize, actor: Option<usize>, iat: Option<i64>, now: i64 },
}

fn serial(n: u8) -> Serial {
    Serial::from_bytes(&[n]).unwrap()
}

fn revocation() -> impl Strategy<Value = Revocation> {
    prop_oneof![
        (0u8..6).prop_map(|n| Revocation::X509 { serial: serial(n), issuer: None, spiffe_id: None }),
        (0usize..3).prop_map(|j| Revocation::Jwt { jti: JTIS[j].into(), iss: "iss".into() }),
        (0usize..3, 0i64..40).prop_map(|(i, cutoff)| Revocation::SpiffeId { id: IDS[i].into(), cutoff }),
        Just(Revocation::Heartbeat { state: "1".into() }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (revocation(), 0i64..60).prop_map(|(r, f)| Op::Apply(r, f)),
        1 => (0i64..60).prop_map(Op::Prune),
        3 => (0u8..6, 0usize..3, 0i64..40, 0i64..60)
            .prop_map(|(serial, id, not_before, now)| Op::AskX509 { serial, id, not_before, now }),
        3 => (
            proptest::option::of(0usize..3),
            0usize..4,
            proptest::option::of(0usize..3),
            proptest::option::of(0i64..40),
            0i64..60
        )
            .prop_map(|(jti, sub, actor, iat, now)| Op::AskJwt { jti, sub, actor, iat, now }),
    ]
}

/// The model: every revocation applied (minus the pruned), checked one by one.
#[derive(Default)]
struct Model(Vec<(Revocation, i64)>);

impl Model {
    fn cut(&self, id: &str, issued: Option<i64>, now: i64) -> bool {
        self.0.iter().any(|(r, f)| {
            *f >= now
                && matches!(r, Revocation::SpiffeId { id: rid, cutoff }
                    if rid == id && issued.is_none_or(|t| t < *cutoff))
        })
    }

    fn x509(&self, serial: &Serial, id: &str, not_before: i64, now: i64) -> bool {
        self.0
            .iter()
            .any(|(r, f)| *f >= now && matches!(r, Revocation::X509 { serial: s, .. } if s == serial))
            || self.cut(id, Some(not_before), now)
    }

    fn jwt(&self, jti: Option<&str>, sub: &str, actor: Option<&str>, iat: Option<i64>, now: i64) -> bool {
        self.0
            .iter()
            .any(|(r, f)| *f >= now && matches!(r, Revocation::Jwt { jti: j, .. } if Some(j.as_str()) == jti))
            || self.cut(sub, iat, now)
            || actor.is_some_and(|a| self.cut(a, iat, now))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut index = RevocationIndex::new();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Apply(r, f) => {
                    index.apply(&r, f);
                    model.0.push((r, f));
                }
                Op::Prune(now) => {
                    index.prune(now);
                    model.0.retain(|(_, f)| *f >= now);
                }
                Op::AskX509 { serial: n, id, not_before, now } => {
                    let s = serial(n);
                    let got = index.x509(&X509Credential { serial: &s, spiffe_id: IDS[id], not_before }, now);
                    prop_assert_eq!(got.is_some(), model.x509(&s, IDS[id], not_before, now), "{:?}", got);
                }
                Op::AskJwt { jti, sub, actor, iat, now } => {
                    // A subject that is not a SPIFFE ID (a user) is never cut off.
                    let sub = IDS.get(sub).copied().unwrap_or("alice");
                    let cred = JwtCredential {
                        jti: jti.map(|j| JTIS[j]),
                        subject: sub,
                        actor: actor.map(|a| IDS[a]),
                        issued_at: iat,
                    };
                    let got = index.jwt(&cred, now);
                    prop_assert_eq!(
                        got.is_some(),
                        model.jwt(cred.jti, sub, cred.actor, iat, now),
                        "{:?}",
                        got
                    );
                }
            }
        }
    }
}
