//! CSRF tokens: a signed double-submit cookie.
//!
//! A browser gets a random session id in an HttpOnly, SameSite=Lax cookie the first time it
//! is shown a form. Each form carries a token: an expiry, a random nonce and an HMAC-SHA256,
//! under the key every replica shares (`CSRF_SECRET`), over the session id, the expiry and the
//! nonce. A post is accepted when its token's MAC matches the cookie it came with and the
//! token has not expired. What holds:
//! - another site cannot make a valid post: it can neither read the victim's cookie nor set
//!   it, and a token it fetched for itself is bound to its own session id;
//! - nothing is stored on the server, so any replica with the same key accepts a form
//!   another rendered, and a restart loses nothing;
//! - a token cannot be forged or stretched past its expiry without the key.

use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpRequest;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The cookie that binds tokens to one browser.
pub const COOKIE: &str = "csrf_session";

/// Why a form post is refused, in words for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("the form carries no security token, so it may not have come from this site")]
    MissingToken,
    #[error("your browser did not send this site's session cookie ({COOKIE}); allow cookies for this site, reload the page and try again")]
    MissingCookie,
    #[error("the form's security token is not valid for your browser session: it was not made by this site for you")]
    Invalid,
    #[error("the form expired at {} (forms are valid for {} after the page was shown)", .at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), hours(*.lifetime))]
    Expired { at: DateTime<Utc>, lifetime: Duration },
}

fn hours(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        let h = secs / 3600;
        format!("{h} hour{}", if h == 1 { "" } else { "s" })
    } else {
        format!("{} minutes", secs / 60)
    }
}

/// A browser's session id: the value of [`COOKIE`], 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session(String);

impl Session {
    fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then(|| Self(raw.to_owned()))
    }

    /// The session the request's cookie names, if it has a well-formed one.
    pub fn from_request(req: &HttpRequest) -> Option<Self> {
        cookie(req, COOKIE).and_then(Self::parse)
    }

    fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The request's session, or a new one with the `Set-Cookie` value that gives it to the browser.
    pub fn for_request(req: &HttpRequest) -> (Self, Option<String>) {
        match Self::from_request(req) {
            Some(session) => (session, None),
            None => {
                let session = Self::generate();
                // No Max-Age: it lasts while the browser runs; Lax: not sent with posts from
                // other sites; HttpOnly: no script reads it.
                let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax", session.0);
                (session, Some(cookie))
            }
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// Makes and checks the tokens.
pub struct Csrf {
    key: HmacSha256,
    lifetime: Duration,
}

impl Csrf {
    pub fn new(secret: &Secret, lifetime: Duration) -> Self {
        let key = HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes a key of any length");
        Self { key, lifetime }
    }

    fn mac(&self, session: &Session, expires: i64, nonce: &str) -> HmacSha256 {
        let mut mac = self.key.clone();
        // Fixed-width or separator-free parts, so no two inputs run together the same way.
        mac.update(b"csrf-v1\0");
        mac.update(session.0.as_bytes());
        mac.update(&expires.to_be_bytes());
        mac.update(nonce.as_bytes());
        mac
    }

    /// A token for a form shown now to `session`: `<expiry unix secs>.<nonce>.<mac hex>`.
    pub fn token(&self, session: &Session, now: DateTime<Utc>) -> String {
        let lifetime = chrono::Duration::from_std(self.lifetime).unwrap_or(chrono::Duration::hours(4));
        let expires = (now + lifetime).timestamp();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mac = self.mac(session, expires, &nonce).finalize().into_bytes();
        format!("{expires}.{nonce}.{}", hex(&mac))
    }

    /// Whether a post with `token` from the browser of `session` may be accepted at `now`.
    pub fn verify(&self, session: Option<&Session>, token: Option<&str>, now: DateTime<Utc>) -> Result<(), CsrfError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or(CsrfError::MissingToken)?;
        let session = session.ok_or(CsrfError::MissingCookie)?;
        let mut parts = token.splitn(3, '.');
        let (Some(expires), Some(nonce), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CsrfError::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| CsrfError::Invalid)?;
        let mac = unhex(mac).ok_or(CsrfError::Invalid)?;
        // Checked before the expiry, so an expired answer is only ever given for a real token.
        self.mac(session, expires, nonce).verify_slice(&mac).map_err(|_| CsrfError::Invalid)?;
        let at = DateTime::from_timestamp(expires, 0).ok_or(CsrfError::Invalid)?;
        if now >= at {
            return Err(CsrfError::Expired { at, lifetime: self.lifetime });
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn csrf(secret: &str) -> Csrf {
        Csrf::new(&Secret(secret.to_owned()), Duration::from_secs(3600))
    }

    fn session() -> Session {
        Session::generate()
    }

    #[test]
    fn a_token_is_accepted_by_any_process_with_the_same_secret_until_it_expires() {
        let now = Utc::now();
        let s = session();
        let token = csrf("k").token(&s, now);
        assert_eq!(csrf("k").verify(Some(&s), Some(&token), now), Ok(()), "another replica with the same key");
        assert_eq!(csrf("k").verify(Some(&s), Some(&token), now + chrono::Duration::minutes(59)), Ok(()));
        let late = csrf("k").verify(Some(&s), Some(&token), now + chrono::Duration::minutes(60));
        assert!(matches!(late, Err(CsrfError::Expired { .. })), "{late:?}");
        assert!(late.unwrap_err().to_string().contains("valid for 1 hour"));
    }

    #[test]
    fn tokens_are_bound_to_their_session_and_key_and_cannot_be_altered() {
        let now = Utc::now();
        let (s, other) = (session(), session());
        let token = csrf("k").token(&s, now);
        assert_ne!(token, csrf("k").token(&s, now), "each token has its own nonce");
        assert_eq!(csrf("k").verify(Some(&other), Some(&token), now), Err(CsrfError::Invalid), "another browser's token");
        assert_eq!(csrf("other key").verify(Some(&s), Some(&token), now), Err(CsrfError::Invalid));
        let (expires, rest) = token.split_once('.').unwrap();
        let stretched = format!("{}.{rest}", expires.parse::<i64>().unwrap() + 86_400);
        assert_eq!(csrf("k").verify(Some(&s), Some(&stretched), now), Err(CsrfError::Invalid), "a later expiry breaks the MAC");
        for forged in ["", "x", "1.2.3", "99999999999.abc.zz", "1.2.", &token[..token.len() - 2]] {
            let result = csrf("k").verify(Some(&s), Some(forged), now);
            assert!(matches!(result, Err(CsrfError::Invalid | CsrfError::MissingToken)), "{forged:?}: {result:?}");
        }
        assert_eq!(csrf("k").verify(None, Some(&token), now), Err(CsrfError::MissingCookie));
        assert_eq!(csrf("k").verify(Some(&s), None, now), Err(CsrfError::MissingToken));
    }

    #[test]
    fn the_session_comes_from_its_cookie_or_is_made_with_one() {
        let req = TestRequest::default().insert_header((header::COOKIE, "a=b; csrf_session=0123456789abcdef0123456789abcdef; c=d")).to_http_request();
        let (s, set) = Session::for_request(&req);
        assert_eq!((s.0.as_str(), set), ("0123456789abcdef0123456789abcdef", None));
        let req = TestRequest::default().insert_header((header::COOKIE, "csrf_session=<script>")).to_http_request();
        let (s, set) = Session::for_request(&req);
        assert_eq!(s.0.len(), 32);
        let set = set.expect("a malformed cookie is replaced");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.starts_with(&format!("csrf_session={}", s.0)), "{set}");
    }
}
