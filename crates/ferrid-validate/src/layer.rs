//! A tower layer authenticating requests by JWT-SVID bearer token.
//!
//! [`JwtSvidLayer`] reads `Authorization: Bearer <JWT-SVID>`, validates it against the
//! trust domain's current JWT bundle (from a [`BundleSource`]) with the configured
//! audience, runs the [`Authorizer`] on the presenting workload (the newest actor of a
//! delegation token), consults the [`RevocationSet`] when given one, and inserts the
//! [`VerifiedJwtSvid`] into the request's extensions. It answers
//! `401` with `WWW-Authenticate: Bearer error="invalid_token", error_description="…"`
//! (RFC 6750 §3) for a missing or invalid token, and `403` with
//! `error="insufficient_scope"` when the authorizer refuses the ID.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferrid_types::{Clock, TrustDomain};
use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::authorize::Authorizer;
use crate::bundle::BundleSource;
use crate::jwt::{JwtOptions, VerifiedJwtSvid, validate_jwt_svid};
use crate::revocation::RevocationSet;

struct Config {
    td: TrustDomain,
    bundles: Arc<dyn BundleSource>,
    opts: JwtOptions,
    authorizer: Arc<dyn Authorizer>,
    revocations: Option<Arc<RevocationSet>>,
    clock: Arc<dyn Clock>,
}

/// The layer; cheap to clone.
#[derive(Clone)]
pub struct JwtSvidLayer(Arc<Config>);

impl std::fmt::Debug for JwtSvidLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvidLayer")
            .field("td", &self.0.td)
            .field("audience", &self.0.opts.audience)
            .finish()
    }
}

impl JwtSvidLayer {
    /// Accepts JWT-SVIDs of `td` validated with `opts` (its audience) against the
    /// bundle `bundles` holds, presented by a workload `authorizer` accepts, at the
    /// time `clock` says.
    pub fn new(
        td: TrustDomain,
        bundles: Arc<dyn BundleSource>,
        opts: JwtOptions,
        authorizer: Arc<dyn Authorizer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self(Arc::new(Config { td, bundles, opts, authorizer, revocations: None, clock }))
    }

    /// Also refuses revoked tokens (and every token while the feed is stale).
    pub fn with_revocations(self, r: Arc<RevocationSet>) -> Self {
        let c = Arc::try_unwrap(self.0).unwrap_or_else(|arc| Config {
            td: arc.td.clone(),
            bundles: arc.bundles.clone(),
            opts: arc.opts.clone(),
            authorizer: arc.authorizer.clone(),
            revocations: arc.revocations.clone(),
            clock: arc.clock.clone(),
        });
        Self(Arc::new(Config { revocations: Some(r), ..c }))
    }

    /// The decision for one `Authorization` header value: the validated token, or the
    /// status and description of the refusal.
    pub fn check(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<VerifiedJwtSvid, (StatusCode, String)> {
        let c = &self.0;
        let unauthorized = |m: String| (StatusCode::UNAUTHORIZED, m);
        let value = authorization.ok_or_else(|| unauthorized("no bearer token".into()))?;
        let value = value.to_str().map_err(|_| unauthorized("malformed Authorization header".into()))?;
        let token = match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(unauthorized("not a bearer token".into())),
        };
        let bundle =
            c.bundles.bundle(&c.td).ok_or_else(|| unauthorized(format!("no trust bundle for {}", c.td)))?;
        let now = c.clock.unix();
        let v = validate_jwt_svid(token, &bundle.jwt, &c.td, &c.opts, now)
            .map_err(|e| unauthorized(e.to_string()))?;
        if let Some(r) = &c.revocations {
            r.check_jwt(&v, now).map_err(|e| unauthorized(e.to_string()))?;
        }
        c.authorizer.authorize(&v.spiffe_id).map_err(|e| (StatusCode::FORBIDDEN, e.to_string()))?;
        Ok(v)
    }
}

impl<S> tower::Layer<S> for JwtSvidLayer {
    type Service = JwtSvidService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtSvidService { layer: self.clone(), inner }
    }
}

/// The service [`JwtSvidLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct JwtSvidService<S> {
    layer: JwtSvidLayer,
    inner: S,
}

fn quote(s: &str) -> String {
    s.chars().filter(|c| *c != '"' && *c != '\\' && (' '..='~').contains(c)).take(300).collect()
}

/// The refusal response.
fn refusal<B: Default>(status: StatusCode, description: &str) -> Response<B> {
    let error = if status == StatusCode::FORBIDDEN { "insufficient_scope" } else { "invalid_token" };
    let value = format!("Bearer error=\"{error}\", error_description=\"{}\"", quote(description));
    let mut res = Response::new(B::default());
    *res.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for JwtSvidService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.layer.check(req.headers().get(header::AUTHORIZATION)) {
            Ok(v) => {
                req.extensions_mut().insert(v);
                // The clone is not ready; swap so the ready one serves this request.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(req).await })
            }
            Err((status, description)) => {
                let res = refusal(status, &description);
                Box::pin(async move { Ok(res) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize;
    use crate::bundle::{BundleSet, TrustBundle};
    use crate::keys::test_keys::*;
    use crate::set::{Revocation, SetEvent};
    use crate::testing::{NOW, TestCa};
    use axum::body::Body;
    use axum::routing::get;
    use axum::{Extension, Router};
    use ferrid_types::ManualClock;
    use serde_json::json;
    use tower::ServiceExt;

    async fn whoami(Extension(v): Extension<VerifiedJwtSvid>) -> String {
        v.spiffe_id.to_string()
    }

    #[tokio::test]
    async fn the_layer_guards_an_axum_app() {
        let td = TrustDomain::new("example.org").unwrap();
        let k = TestKey::es256("k1");
        let bundles =
            Arc::new(BundleSet::of([TrustBundle::new(TestCa::new("example.org").bundle(), set_of(&[&k]))]));
        let revocations = Arc::new(RevocationSet::default());
        revocations.heard(NOW);
        let layer = JwtSvidLayer::new(
            td.clone(),
            bundles,
            JwtOptions::new("spiffe://example.org/api"),
            Arc::new(authorize::path_prefix(td, "/web")),
            Arc::new(ManualClock::at_unix(NOW)),
        )
        .with_revocations(revocations.clone());
        let app = Router::new().route("/", get(whoami)).layer(layer);
        let call = |auth: Option<String>| {
            let app = app.clone();
            async move {
                let mut req = Request::builder().uri("/");
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
                let status = res.status();
                let www = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
                let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
                (status, www, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        let token = |sub: &str, jti: &str| {
            k.sign(
                Some("JWT"),
                &json!({"sub": sub, "aud": "spiffe://example.org/api", "exp": NOW + 300, "iat": NOW, "jti": jti}),
            )
        };

        let (s, _, body) = call(Some(format!("Bearer {}", token("spiffe://example.org/web", "j1")))).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "spiffe://example.org/web"));

        let (s, www, _) = call(None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(www.unwrap().starts_with("Bearer error=\"invalid_token\""));
        let (s, www, _) = call(Some("Bearer not.a.token".into())).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(www.unwrap().contains("error_description="));
        let (s, www, _) = call(Some(format!("Bearer {}", token("spiffe://example.org/db", "j2")))).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert!(www.unwrap().contains("insufficient_scope"));

        revocations.apply(
            &SetEvent::new(Revocation::Jwt { jti: "j1".into(), iss: "x".into() }, Some(NOW)),
            None,
            NOW,
        );
        let (s, www, _) = call(Some(format!("Bearer {}", token("spiffe://example.org/web", "j1")))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(www.unwrap().contains("revoked"));
    }
}
