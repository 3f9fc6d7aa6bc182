//! Contract checks every node attestor runs against itself (feature `testkit`).
use crate::{AttestError, Challenger, MAX_PAYLOAD, NoChallenges, NodeAttestor};

/// The attestor's name is a valid selector type and SPIFFE path segment: `[a-z0-9_]+`.
pub fn assert_name_is_valid(a: &dyn NodeAttestor) {
    let n = a.name();
    assert!(
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "attestor name {n:?} must match [a-z0-9_]+"
    );
}

/// Garbage never attests and never panics: empty input, random bytes, invalid UTF-8,
/// and a payload at and above [`MAX_PAYLOAD`] are all refused with an error.
pub async fn assert_rejects_garbage(a: &dyn NodeAttestor, now: time::OffsetDateTime) {
    let mut junk = vec![0u8; 4096];
    let mut x: u32 = 0x9E37_79B9;
    for b in &mut junk {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x.to_le_bytes()[0];
    }
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        b"\xff\xfe\xfd".to_vec(),
        b"{}".to_vec(),
        b"a.b.c".to_vec(),
        junk,
        vec![b'a'; MAX_PAYLOAD],
        vec![b'a'; MAX_PAYLOAD + 1],
    ];
    for input in inputs {
        let r = a.attest(&input, &mut NoChallenges, now).await;
        match r {
            Err(
                AttestError::Malformed(_)
                | AttestError::Rejected(_)
                | AttestError::TooLarge { .. }
                | AttestError::Expired(_),
            ) => {}
            other => {
                panic!("{} accepted or mishandled {} bytes of garbage: {other:?}", a.name(), input.len())
            }
        }
    }
}

/// A challenger that answers with a closure (and counts the challenges).
pub struct ScriptedChallenger<F> {
    answer: F,
    /// How many challenges were asked.
    pub asked: usize,
}

impl<F> ScriptedChallenger<F>
where
    F: FnMut(&[u8]) -> Result<Vec<u8>, AttestError> + Send,
{
    /// A challenger answering with `answer`.
    pub fn new(answer: F) -> Self {
        Self { answer, asked: 0 }
    }
}

#[async_trait::async_trait]
impl<F> Challenger for ScriptedChallenger<F>
where
    F: FnMut(&[u8]) -> Result<Vec<u8>, AttestError> + Send,
{
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError> {
        self.asked += 1;
        (self.answer)(&challenge)
    }
}
