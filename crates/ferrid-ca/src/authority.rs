//! The rotating authority: X.509 CA generations and JWT key generations, each
//! published before it signs and kept until it expires.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use ferrid_types::{Clock, KeyAlgorithm, SpiffeId, TrustDomain};
use rcgen::{Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jwt::{JwtSigner, sign_token, sign_typed};
use crate::x509::{self, CsrKey};
use crate::{
    CaConfig, CaError, JwtAuthority, JwtSvid, JwtSvidRequest, KeyStore, TrustBundle, WitSvid, WitSvidRequest,
    X509Svid, X509SvidRequest, effective_ttl, internal, secs,
};

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        STANDARD.decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One generation of a signing key: when it is valid, when it was published, whether
/// it is the one signing now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Generation {
    key_id: String,
    algorithm: KeyAlgorithm,
    not_before: i64,
    not_after: i64,
    published_at: i64,
    active: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct X509State {
    #[serde(flatten)]
    generation: Generation,
    #[serde(with = "b64")]
    cert_der: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct JwtState {
    #[serde(flatten)]
    generation: Generation,
    kid: String,
    #[serde(with = "b64")]
    spki_der: Vec<u8>,
}

/// The CA's persistent state: certificates, key IDs, timing and the bundle sequence.
/// It never contains a private key (those live in the [`KeyStore`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    version: u32,
    sequence: u64,
    x509: Vec<X509State>,
    jwt: Vec<JwtState>,
}

struct X509Slot {
    st: X509State,
    issuer: Issuer<'static, KeyPair>,
}

struct JwtSlot {
    st: JwtState,
    signer: JwtSigner,
}

trait HasGeneration {
    fn generation(&self) -> &Generation;
    fn generation_mut(&mut self) -> &mut Generation;
}

impl HasGeneration for X509Slot {
    fn generation(&self) -> &Generation {
        &self.st.generation
    }
    fn generation_mut(&mut self) -> &mut Generation {
        &mut self.st.generation
    }
}

impl HasGeneration for JwtSlot {
    fn generation(&self) -> &Generation {
        &self.st.generation
    }
    fn generation_mut(&mut self) -> &mut Generation {
        &mut self.st.generation
    }
}

struct Inner {
    sequence: u64,
    x509: Vec<X509Slot>,
    jwt: Vec<JwtSlot>,
}

struct Upstream {
    issuer: Issuer<'static, KeyPair>,
    /// Upstream CA certificate first, root last.
    chain: Vec<Vec<u8>>,
    not_after: i64,
}

/// One trust domain's certificate authority.
pub struct Authority {
    cfg: CaConfig,
    keys: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    upstream: Option<Upstream>,
    inner: RwLock<Inner>,
    /// Issuance floors by SPIFFE ID: (floor, until). See [`Authority::set_issue_floor`].
    floors: std::sync::Mutex<HashMap<String, (i64, i64)>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.cfg.trust_domain)
            .field("upstream", &self.upstream.is_some())
            .finish_non_exhaustive()
    }
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// What one rotation step does to a list of generations at `now`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing signs (none active, or the active one expired): activate this prepared
    /// generation, or a new one if `None`.
    Recover(Option<usize>),
    /// Publish a new generation (it does not sign yet).
    Prepare,
    /// The prepared generation at this index starts signing.
    Activate(usize),
    /// Nothing to do.
    Idle,
}

/// The rotation rule, as a pure function of the generations and the time: prepare the
/// next at 1/2 of the active one's life, activate it at 5/6 once it has been published
/// for at least `lead` seconds.
fn plan(gens: &[&Generation], now: i64, lead: i64) -> Step {
    let Some((_, active)) = gens.iter().enumerate().find(|(_, g)| g.active && g.not_after > now) else {
        let usable = gens
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.active && g.not_before <= now && g.not_after > now)
            .max_by_key(|(_, g)| g.not_before)
            .map(|(i, _)| i);
        return Step::Recover(usable);
    };
    let life = active.not_after - active.not_before;
    let next = gens
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.active && g.published_at > active.published_at && g.not_after > now)
        .max_by_key(|(_, g)| g.published_at);
    match next {
        None if now >= active.not_before + life / 2 => Step::Prepare,
        Some((i, g))
            if now >= active.not_before + life * 5 / 6
                && now >= g.published_at + lead
                && g.not_before <= now =>
        {
            Step::Activate(i)
        }
        _ => Step::Idle,
    }
}

impl Authority {
    /// Restores from `state` (keys from `keys`) or, without state, creates a fresh
    /// authority: a self-signed root (or an intermediate under `config.upstream`) and a
    /// JWT signing key, both active at once.
    pub fn open(
        config: CaConfig,
        keys: Arc<dyn KeyStore>,
        state: Option<CaState>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CaError> {
        let upstream = match &config.upstream {
            Some(u) => {
                let key = KeyPair::try_from(u.key_pkcs8_der.as_slice())
                    .map_err(|e| CaError::UpstreamCa(format!("key does not load: {e}")))?;
                let first =
                    u.cert_chain_der.first().ok_or_else(|| CaError::UpstreamCa("no certificate".into()))?;
                let (_, not_after) = x509::validity(first)?;
                let issuer =
                    Issuer::from_ca_cert_der(&CertificateDer::from(first.as_slice()), key).map_err(|e| {
                        CaError::UpstreamCa(format!("certificate is not usable as an issuer: {e}"))
                    })?;
                Some(Upstream { issuer, chain: u.cert_chain_der.clone(), not_after })
            }
            None => None,
        };
        let mut this = Self {
            cfg: config,
            keys,
            clock,
            upstream,
            inner: RwLock::new(Inner { sequence: 0, x509: vec![], jwt: vec![] }),
            floors: std::sync::Mutex::new(HashMap::new()),
        };
        let inner = match state {
            Some(st) => this.restore(st)?,
            None => {
                let now = this.clock.unix();
                let mut x = this.new_x509(now)?;
                x.st.generation.active = true;
                let mut j = this.new_jwt(now)?;
                j.st.generation.active = true;
                tracing::info!(trust_domain = %this.cfg.trust_domain, "created a new certificate authority");
                Inner { sequence: 1, x509: vec![x], jwt: vec![j] }
            }
        };
        this.inner = RwLock::new(inner);
        Ok(this)
    }

    fn restore(&self, st: CaState) -> Result<Inner, CaError> {
        if st.version != 1 {
            return Err(CaError::State(format!("unsupported CA state version {}", st.version)));
        }
        let load = |g: &Generation| {
            self.keys.load(&g.key_id)?.ok_or_else(|| {
                CaError::KeyStore(format!("key {} named in the CA state is missing", g.key_id))
            })
        };
        let x509 = st
            .x509
            .into_iter()
            .map(|s| {
                let key = x509::load_key(s.generation.algorithm, &load(&s.generation)?)?;
                let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(s.cert_der.as_slice()), key)
                    .map_err(|e| CaError::State(format!("stored CA certificate: {e}")))?;
                Ok(X509Slot { st: s, issuer })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let jwt = st
            .jwt
            .into_iter()
            .map(|s| {
                Ok(JwtSlot { signer: JwtSigner::load(s.generation.algorithm, &load(&s.generation)?)?, st: s })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        Ok(Inner { sequence: st.sequence, x509, jwt })
    }

    fn new_x509(&self, now: i64) -> Result<X509Slot, CaError> {
        let alg = self.cfg.key_algorithm;
        let key = x509::generate_key(alg)?;
        let key_id = random_id("x509");
        let nb = now - secs(self.cfg.backdate);
        let mut na = now + secs(self.cfg.ca_ttl);
        let cert_der = match &self.upstream {
            None => x509::self_signed_root(&self.cfg.trust_domain, &key, nb, na)?,
            Some(up) => {
                na = na.min(up.not_after);
                if na <= now {
                    return Err(CaError::UpstreamCa("the upstream CA certificate has expired".into()));
                }
                x509::intermediate(&self.cfg.trust_domain, &key, &up.issuer, nb, na)?
            }
        };
        self.keys.store(&key_id, &zeroize::Zeroizing::new(key.serialize_der()))?;
        let issuer =
            Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()), key).map_err(internal)?;
        let generation = Generation {
            key_id,
            algorithm: alg,
            not_before: nb,
            not_after: na,
            published_at: now,
            active: false,
        };
        Ok(X509Slot { st: X509State { generation, cert_der }, issuer })
    }

    fn new_jwt(&self, now: i64) -> Result<JwtSlot, CaError> {
        let alg = self.cfg.key_algorithm;
        let pkcs8 = zeroize::Zeroizing::new(x509::generate_key(alg)?.serialize_der());
        let signer = JwtSigner::load(alg, &pkcs8)?;
        let key_id = random_id("jwt");
        self.keys.store(&key_id, &pkcs8)?;
        let kid: [u8; 24] = rand::random();
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kid);
        let generation = Generation {
            key_id,
            algorithm: alg,
            not_before: now - secs(self.cfg.backdate),
            not_after: now + secs(self.cfg.ca_ttl),
            published_at: now,
            active: false,
        };
        Ok(JwtSlot { st: JwtState { generation, kid, spki_der: signer.spki_der()? }, signer })
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.cfg
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.cfg.trust_domain
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state to persist (no private keys).
    pub fn state(&self) -> CaState {
        let i = self.read();
        CaState {
            version: 1,
            sequence: i.sequence,
            x509: i.x509.iter().map(|s| s.st.clone()).collect(),
            jwt: i.jwt.iter().map(|s| s.st.clone()).collect(),
        }
    }

    fn bundle_of(&self, i: &Inner) -> TrustBundle {
        let x509_authorities = match &self.upstream {
            Some(up) => up.chain.last().cloned().into_iter().collect(),
            None => i.x509.iter().map(|s| s.st.cert_der.clone()).collect(),
        };
        TrustBundle {
            trust_domain: self.cfg.trust_domain.clone(),
            x509_authorities,
            jwt_authorities: i
                .jwt
                .iter()
                .map(|s| JwtAuthority {
                    key_id: s.st.kid.clone(),
                    public_key_spki_der: s.st.spki_der.clone(),
                    expires_at: s.st.generation.not_after,
                })
                .collect(),
            sequence: i.sequence,
            refresh_hint_secs: secs(self.cfg.refresh_hint),
        }
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> TrustBundle {
        self.bundle_of(&self.read())
    }

    /// Applies one rotation step to a list of generations; returns whether the signer changed.
    fn rotate<T: HasGeneration>(
        &self,
        slots: &mut Vec<T>,
        now: i64,
        make: impl Fn(i64) -> Result<T, CaError>,
    ) -> Result<bool, CaError> {
        let lead = secs(self.cfg.refresh_hint).min(secs(self.cfg.ca_ttl) / 6);
        let gens: Vec<&Generation> = slots.iter().map(HasGeneration::generation).collect();
        let activate = |slots: &mut Vec<T>, idx: usize| {
            for s in slots.iter_mut() {
                s.generation_mut().active = false;
            }
            slots[idx].generation_mut().active = true;
        };
        let changed = match plan(&gens, now, lead) {
            Step::Recover(found) => {
                let idx = match found {
                    Some(i) => i,
                    None => {
                        slots.push(make(now)?);
                        slots.len() - 1
                    }
                };
                activate(slots, idx);
                tracing::warn!("no usable signing key was active; recovered by activating a new one");
                true
            }
            Step::Prepare => {
                slots.push(make(now)?);
                false
            }
            Step::Activate(idx) => {
                activate(slots, idx);
                true
            }
            Step::Idle => false,
        };
        // Drop generations that have expired; nothing valid depends on them any more.
        let keys = &self.keys;
        slots.retain(|s| {
            let g = s.generation();
            let keep = g.active || g.not_after > now;
            if !keep && let Err(e) = keys.delete(&g.key_id) {
                tracing::warn!(key = %g.key_id, error = %e, "could not delete an expired key");
            }
            keep
        });
        Ok(changed)
    }

    /// Drives rotation at the clock's now. Returns true when the bundle or an active
    /// signer changed (the caller then persists [`Authority::state`] and pushes the bundle).
    pub fn tick(&self) -> Result<bool, CaError> {
        let now = self.clock.unix();
        let mut i = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = self.bundle_of(&i);
        let x = self.rotate(&mut i.x509, now, |t| self.new_x509(t))?;
        let j = self.rotate(&mut i.jwt, now, |t| self.new_jwt(t))?;
        let after = self.bundle_of(&i);
        let bundle_changed = before.x509_authorities != after.x509_authorities
            || before.jwt_authorities != after.jwt_authorities;
        if bundle_changed {
            i.sequence += 1;
        }
        if bundle_changed || x || j {
            tracing::info!(
                sequence = i.sequence,
                x509_signer_changed = x,
                jwt_signer_changed = j,
                "CA rotation step"
            );
        }
        Ok(bundle_changed || x || j)
    }

    fn check_id(&self, id: &SpiffeId) -> Result<(), CaError> {
        if id.is_member_of(&self.cfg.trust_domain) {
            Ok(())
        } else {
            Err(CaError::ForeignSpiffeId {
                id: id.to_string(),
                trust_domain: self.cfg.trust_domain.to_string(),
            })
        }
    }

    /// Sets an issuance floor for `id` until `until`: credentials minted for it get
    /// `notBefore` (X.509) and `iat` (JWT) no earlier than `floor`. A revocation of a
    /// whole SPIFFE ID covers what was issued before its cut-off; the floor keeps the
    /// replacements, backdated for clock skew, on the right side of it.
    pub fn set_issue_floor(&self, id: &SpiffeId, floor: i64, until: i64) {
        let now = self.clock.unix();
        let mut f = self.floors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f.retain(|_, (_, u)| *u > now);
        let slot = f.entry(id.to_string()).or_insert((floor, until));
        *slot = (slot.0.max(floor), slot.1.max(until));
    }

    fn issue_floor(&self, id: &SpiffeId, now: i64) -> i64 {
        let f = self.floors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.is_empty() {
            return i64::MIN;
        }
        f.get(&id.to_string()).filter(|(_, until)| *until > now).map_or(i64::MIN, |(floor, _)| *floor)
    }

    /// Signs a Security Event Token (RFC 8417): header `typ: secevent+jwt`, the active
    /// JWT key, `claims` as given. Returns the token and the key ID.
    pub fn sign_security_event(&self, claims: Map<String, Value>) -> Result<(String, String), CaError> {
        let now = self.clock.unix();
        let i = self.read();
        let slot = active_jwt_slot(&i.jwt, now)?;
        let token = sign_typed(&slot.signer, &slot.st.kid, "secevent+jwt", claims, None)?;
        Ok((token, slot.st.kid.clone()))
    }

    /// Mints an X.509-SVID from a CSR.
    pub fn mint_x509_svid(&self, req: &X509SvidRequest<'_>) -> Result<X509Svid, CaError> {
        self.check_id(req.spiffe_id)?;
        let key: CsrKey = x509::check_csr(req.csr_der)?;
        let now = self.clock.unix();
        let ttl = effective_ttl(req.ttl, self.cfg.x509_svid_ttl, self.cfg.max_svid_ttl);
        let i = self.read();
        let slot = i
            .x509
            .iter()
            .find(|s| s.st.generation.active && s.st.generation.not_after > now)
            .ok_or_else(|| CaError::State("no active X.509 CA (is rotation running?)".into()))?;
        let nb = (now - secs(self.cfg.backdate)).max(self.issue_floor(req.spiffe_id, now));
        let na = (now + ttl).min(slot.st.generation.not_after);
        let (leaf, serial_hex) = x509::leaf(req.spiffe_id, req.dns_names, &key, &slot.issuer, nb, na)?;
        let mut chain = vec![leaf];
        if let Some(up) = &self.upstream {
            chain.push(slot.st.cert_der.clone());
            chain.extend(up.chain.iter().take(up.chain.len().saturating_sub(1)).cloned());
        }
        Ok(X509Svid {
            spiffe_id: req.spiffe_id.clone(),
            cert_chain_der: chain,
            serial_hex,
            not_before: nb,
            not_after: na,
        })
    }

    /// Mints a JWT-SVID.
    pub fn mint_jwt_svid(&self, req: &JwtSvidRequest<'_>) -> Result<JwtSvid, CaError> {
        self.mint_jwt(req, None)
    }

    /// Mints a delegation token: a JWT-SVID-format token whose `sub` is `subject` (the
    /// principal acted for: a person's identifier at their identity provider, or the
    /// SPIFFE ID of the workload at the start of the chain). `req.spiffe_id` is the
    /// actor, which the caller names in `act` through `req.extra_claims`; it must be in
    /// this trust domain. `subject` must be 1 to 1,024 printable characters.
    pub fn mint_delegation_token(&self, req: &JwtSvidRequest<'_>, subject: &str) -> Result<JwtSvid, CaError> {
        if subject.is_empty() || subject.len() > 1024 || subject.chars().any(char::is_control) {
            return Err(CaError::InvalidSubject(format!(
                "{subject:?} must be 1 to 1,024 printable characters"
            )));
        }
        self.mint_jwt(req, Some(subject))
    }

    fn mint_jwt(&self, req: &JwtSvidRequest<'_>, subject: Option<&str>) -> Result<JwtSvid, CaError> {
        self.check_id(req.spiffe_id)?;
        if req.audience.is_empty() {
            return Err(CaError::InvalidAudience("at least one audience is required".into()));
        }
        if let Some(bad) =
            req.audience.iter().find(|a| a.is_empty() || a.len() > 1024 || a.chars().any(char::is_control))
        {
            return Err(CaError::InvalidAudience(format!(
                "{bad:?} is empty, too long or has control characters"
            )));
        }
        let now = self.clock.unix();
        let ttl = effective_ttl(req.ttl, self.cfg.jwt_svid_ttl, self.cfg.max_svid_ttl);
        let i = self.read();
        let slot = active_jwt_slot(&i.jwt, now)?;
        let exp = (now + ttl).min(slot.st.generation.not_after);
        let jti = uuid::Uuid::new_v4().to_string();
        let mut claims = Map::new();
        claims.insert("sub".into(), subject.map_or_else(|| req.spiffe_id.to_string(), str::to_owned).into());
        claims.insert(
            "aud".into(),
            match req.audience {
                [one] => Value::String(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::String).collect()),
            },
        );
        claims.insert("exp".into(), exp.into());
        claims.insert("iat".into(), now.max(self.issue_floor(req.spiffe_id, now)).into());
        claims.insert("jti".into(), jti.clone().into());
        if let Some(iss) = &self.cfg.jwt_issuer {
            claims.insert("iss".into(), iss.clone().into());
        }
        let token = sign_token(&slot.signer, &slot.st.kid, claims, req.extra_claims)?;
        Ok(JwtSvid {
            token,
            spiffe_id: req.spiffe_id.clone(),
            jti,
            kid: slot.st.kid.clone(),
            issued_at: now,
            expires_at: exp,
        })
    }

    /// Mints a WIT-SVID: header `{alg, kid, typ: wit+jwt}` signed by the active JWT
    /// key under its WIT key ID ([`crate::wit_key_id`]), claims `sub`, `exp`, `iat`, `jti`, `cnf.jwk` (the workload's checked public
    /// key, see [`crate::validate_public_jwk`]) and `iss` when configured; never `aud`
    /// (SPIFFE WIT-SVID §3.8). Lifetime as JWT-SVIDs, capped at the key's end.
    pub fn mint_wit_svid(&self, req: &WitSvidRequest<'_>) -> Result<WitSvid, CaError> {
        self.check_id(req.spiffe_id)?;
        let cnf_jwk = crate::validate_public_jwk(req.public_key_jwk)?;
        let now = self.clock.unix();
        let ttl = effective_ttl(req.ttl, self.cfg.jwt_svid_ttl, self.cfg.max_svid_ttl);
        let i = self.read();
        let slot = active_jwt_slot(&i.jwt, now)?;
        let exp = (now + ttl).min(slot.st.generation.not_after);
        let jti = uuid::Uuid::new_v4().to_string();
        let mut claims = Map::new();
        claims.insert("sub".into(), req.spiffe_id.to_string().into());
        claims.insert("exp".into(), exp.into());
        claims.insert("iat".into(), now.max(self.issue_floor(req.spiffe_id, now)).into());
        claims.insert("jti".into(), jti.clone().into());
        claims.insert("cnf".into(), serde_json::json!({ "jwk": cnf_jwk }));
        if let Some(iss) = &self.cfg.jwt_issuer {
            claims.insert("iss".into(), iss.clone().into());
        }
        let kid = crate::wit_key_id(&slot.st.kid);
        let token = sign_typed(&slot.signer, &kid, "wit+jwt", claims, None)?;
        Ok(WitSvid { token, spiffe_id: req.spiffe_id.clone(), jti, kid, issued_at: now, expires_at: exp })
    }
}

/// The JWT key that signs now: active and not yet expired.
fn active_jwt_slot(slots: &[JwtSlot], now: i64) -> Result<&JwtSlot, CaError> {
    slots
        .iter()
        .find(|s| s.st.generation.active && s.st.generation.not_after > now)
        .ok_or_else(|| CaError::State("no active JWT key (is rotation running?)".into()))
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    fn g(nb: i64, na: i64, published: i64, active: bool) -> Generation {
        Generation {
            key_id: String::new(),
            algorithm: KeyAlgorithm::EcP256,
            not_before: nb,
            not_after: na,
            published_at: published,
            active,
        }
    }

    #[test]
    fn rotation_rule() {
        let a = g(0, 600, 0, true);
        assert_eq!(plan(&[&a], 100, 10), Step::Idle);
        assert_eq!(plan(&[&a], 300, 10), Step::Prepare);
        let next = g(300, 900, 300, false);
        assert_eq!(plan(&[&a, &next], 400, 10), Step::Idle);
        assert_eq!(plan(&[&a, &next], 500, 10), Step::Activate(1));
        // Published too recently: wait for the lead time even past 5/6.
        let fresh = g(495, 1100, 495, false);
        assert_eq!(plan(&[&a, &fresh], 500, 10), Step::Idle);
        assert_eq!(plan(&[&a, &fresh], 505, 10), Step::Activate(1));
        // Active expired: recover with the usable prepared one, or a new one.
        assert_eq!(plan(&[&a, &next], 600, 10), Step::Recover(Some(1)));
        assert_eq!(plan(&[&a], 600, 10), Step::Recover(None));
        assert_eq!(plan(&[], 0, 10), Step::Recover(None));
    }
}
