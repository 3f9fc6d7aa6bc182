//! The `join_token` node attestor. An operator generates a one-time token
//! `<id>.<secret>` (`ferrid token generate`) and hands it to one agent. The datastore
//! keeps only the SHA-256 of the secret; the agent ID names only the token's ID:
//! `spiffe://<td>/ferrid/agent/join_token/<id>`.
#![forbid(unsafe_code)]

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrid_attest::{AttestError, Attested, Challenger, NodeAttestor};
use ferrid_types::JoinTokenRecord;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The attestor's name.
pub const NAME: &str = "join_token";
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 512;

/// Where the attestor looks tokens up (the server implements it on its datastore).
#[async_trait]
pub trait JoinTokenSource: Send + Sync + std::fmt::Debug {
    /// The record for `id`, if any.
    async fn get(&self, id: &str) -> Result<Option<JoinTokenRecord>, AttestError>;
}

/// A freshly generated token: the secret string to hand out once, and the record to store.
pub struct NewJoinToken {
    /// `<id>.<secret>`, shown to the operator once.
    pub token: String,
    /// What the datastore keeps (no secret).
    pub record: JoinTokenRecord,
}

impl std::fmt::Debug for NewJoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewJoinToken").field("token", &"<redacted>").field("record", &self.record).finish()
    }
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Generates a token valid from `now` for `ttl_secs` seconds.
pub fn generate(now: i64, ttl_secs: i64) -> NewJoinToken {
    let mut id = [0u8; 16];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    NewJoinToken {
        token: format!("{id}.{secret}"),
        record: JoinTokenRecord {
            secret_sha256: digest(&secret),
            id,
            expires_at: now.saturating_add(ttl_secs),
            used_at: None,
            created_at: now,
        },
    }
}

/// Splits a token into `(id, secret)` and checks their alphabets, without a lookup.
/// Trailing whitespace (a newline from a file) is ignored.
pub fn parse(token: &str) -> Result<(&str, &str), AttestError> {
    let token = token.trim_end();
    let malformed = || AttestError::Malformed("a join token has the form <id>.<secret>".into());
    let (id, secret) = token.split_once('.').ok_or_else(malformed)?;
    let id_ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok =
        !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if id_ok && secret_ok { Ok((id, secret)) } else { Err(malformed()) }
}

/// The join-token attestor.
#[derive(Debug)]
pub struct JoinTokenAttestor {
    source: Arc<dyn JoinTokenSource>,
}

impl JoinTokenAttestor {
    /// An attestor looking tokens up in `source`.
    pub fn new(source: Arc<dyn JoinTokenSource>) -> Self {
        Self { source }
    }
}

#[async_trait]
impl NodeAttestor for JoinTokenAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn attest(
        &self,
        payload: &[u8],
        _challenger: &mut dyn Challenger,
        now: time::OffsetDateTime,
    ) -> Result<Attested, AttestError> {
        if payload.len() > MAX_TOKEN_LEN {
            return Err(AttestError::TooLarge { limit: MAX_TOKEN_LEN, got: payload.len() });
        }
        let text = std::str::from_utf8(payload)
            .map_err(|_| AttestError::Malformed("join token is not UTF-8".into()))?;
        let (id, secret) = parse(text)?;
        let record =
            self.source.get(id).await?.ok_or_else(|| AttestError::Rejected("unknown join token".into()))?;
        let presented = digest(secret);
        if !bool::from(presented.as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            return Err(AttestError::Rejected("join token secret does not match".into()));
        }
        if record.used_at.is_some() {
            return Err(AttestError::Replayed("join token already used".into()));
        }
        if now.unix_timestamp() >= record.expires_at {
            return Err(AttestError::Expired(format!("join token {id} expired at {}", record.expires_at)));
        }
        Ok(Attested {
            agent_path: vec![id.to_owned()],
            selectors: vec![id.to_owned()],
            can_reattest: false,
            replay_key: Some(format!("{NAME}:{id}")),
            replay_expires_at: record.expires_at,
            evidence_expires_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use ferrid_attest::NoChallenges;
    use ferrid_attest::testkit;

    use super::*;

    #[derive(Debug, Default)]
    struct Tokens(Mutex<HashMap<String, JoinTokenRecord>>);

    #[async_trait]
    impl JoinTokenSource for Tokens {
        async fn get(&self, id: &str) -> Result<Option<JoinTokenRecord>, AttestError> {
            Ok(self.0.lock().unwrap().get(id).cloned())
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn at(t: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    fn setup() -> (JoinTokenAttestor, Arc<Tokens>, String) {
        let tokens = Arc::new(Tokens::default());
        let t = generate(NOW, 600);
        tokens.0.lock().unwrap().insert(t.record.id.clone(), t.record.clone());
        (JoinTokenAttestor::new(tokens.clone()), tokens, t.token)
    }

    async fn attest(a: &JoinTokenAttestor, token: &str, now: i64) -> Result<Attested, AttestError> {
        a.attest(token.as_bytes(), &mut NoChallenges, at(now)).await
    }

    #[tokio::test]
    async fn valid_token_attests_once_per_replay_key() {
        let (a, _, token) = setup();
        let (id, _) = parse(&token).unwrap();
        let r = attest(&a, &format!("{token}\n"), NOW + 1).await.unwrap();
        assert_eq!(r.agent_path, vec![id.to_owned()]);
        assert_eq!(r.selectors, vec![id.to_owned()]);
        assert!(!r.can_reattest);
        assert_eq!(r.replay_key.as_deref(), Some(format!("join_token:{id}").as_str()));
        assert_eq!(r.replay_expires_at, NOW + 600);
    }

    #[tokio::test]
    async fn forged_secret_is_rejected() {
        let (a, _, token) = setup();
        let (id, _) = parse(&token).unwrap();
        let e = attest(&a, &format!("{id}.forgedforgedforged"), NOW).await.unwrap_err();
        assert_eq!(e, AttestError::Rejected("join token secret does not match".into()));
    }

    #[tokio::test]
    async fn one_changed_character_is_rejected() {
        let (a, _, token) = setup();
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(matches!(attest(&a, &tampered, NOW).await, Err(AttestError::Rejected(_))));
        // Tampering with the id makes it unknown.
        let mut bytes = token.into_bytes();
        bytes[0] = if bytes[0] == b'a' { b'b' } else { b'a' };
        let e = attest(&a, &String::from_utf8(bytes).unwrap(), NOW).await.unwrap_err();
        assert_eq!(e, AttestError::Rejected("unknown join token".into()));
    }

    #[tokio::test]
    async fn expired_token_is_refused_at_its_expiry() {
        let (a, _, token) = setup();
        assert!(attest(&a, &token, NOW + 599).await.is_ok());
        assert!(matches!(attest(&a, &token, NOW + 600).await, Err(AttestError::Expired(_))));
    }

    #[tokio::test]
    async fn used_token_is_a_replay() {
        let (a, tokens, token) = setup();
        let (id, _) = parse(&token).unwrap();
        tokens.0.lock().unwrap().get_mut(id).unwrap().used_at = Some(NOW);
        assert_eq!(
            attest(&a, &token, NOW).await.unwrap_err(),
            AttestError::Replayed("join token already used".into())
        );
    }

    #[tokio::test]
    async fn malformed_and_oversized_inputs() {
        let (a, _, _) = setup();
        for bad in ["", "nodot", ".secret", "abc.", "zz.secret", "abc.sec ret", "abc.sec.ret"] {
            assert!(matches!(attest(&a, bad, NOW).await, Err(AttestError::Malformed(_))), "{bad:?}");
        }
        let e = a.attest(b"\xff\xfe", &mut NoChallenges, at(NOW)).await.unwrap_err();
        assert!(matches!(e, AttestError::Malformed(_)));
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(attest(&a, &big, NOW).await, Err(AttestError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn contract_kit() {
        let (a, _, _) = setup();
        testkit::assert_name_is_valid(&a);
        testkit::assert_rejects_garbage(&a, at(NOW)).await;
    }

    #[tokio::test]
    async fn secrets_never_appear_in_errors_or_debug() {
        let (a, _, token) = setup();
        let (id, secret) = parse(&token).unwrap();
        let t = generate(NOW, 1);
        assert!(!format!("{t:?}").contains(parse(&t.token).unwrap().1));
        for probe in [format!("{id}.{secret}x"), format!("{id}.{secret}")] {
            if let Err(e) = attest(&a, &probe, NOW + 10_000).await {
                assert!(!e.to_string().contains(secret), "{e}");
            }
        }
    }

    #[test]
    fn generated_tokens_are_unique_and_parse() {
        let a = generate(NOW, 60);
        let b = generate(NOW, 60);
        assert_ne!(a.token, b.token);
        assert_ne!(a.record.id, b.record.id);
        let (id, secret) = parse(&a.token).unwrap();
        assert_eq!(id, a.record.id);
        assert_eq!(digest(secret), a.record.secret_sha256);
        assert_eq!(a.record.expires_at, NOW + 60);
    }
}
