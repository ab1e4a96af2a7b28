//! The database password, kept out of everything the agent shows: the one place that knows
//! how a password can be given and how to hide it.
//!
//! Keeps the guarantee "The database password shows nowhere".
//!
//! - [`DatabaseUrl`] wraps `database.url`: its `Display`, `Debug` and `Serialize` hide the
//!   userinfo password (`postgres://u:pw@h/db`) and a `?password=` query parameter, so the
//!   startup log, `check-config` and any error that names the URL show `***` instead;
//! - [`register`] / [`scrub`]: every password the agent learns (from the URL, the password
//!   file, the environment) is registered once, and text that may carry it verbatim (a driver's
//!   error, a log line, a `/readyz` answer) is scrubbed before it leaves the process.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize, Serializer};

/// What a hidden secret is replaced with.
pub const MASK: &str = "***";

/// `database.url` as written; shown only with its password hidden.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password: only for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password hidden.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// The passwords the URL itself carries (userinfo, `?password=`), as written and decoded.
    pub fn passwords(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((_, pw)) = userinfo_password(&self.0) {
            out.push(pw.to_owned());
        }
        if let Some(query) = self.0.split_once('?').map(|(_, q)| q) {
            for pair in query.split('&') {
                if let Some(("password", pw)) = pair.split_once('=') {
                    out.push(pw.to_owned());
                }
            }
        }
        let decoded: Vec<String> = out.iter().map(|pw| percent_decode(pw)).collect();
        out.extend(decoded);
        out.retain(|pw| !pw.is_empty());
        out
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

/// Serialized hidden too: the effective configuration (`check-config`, the startup line) is
/// built by serializing it.
impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// `(start, password)` of the password in `scheme://user:password@host…`.
fn userinfo_password(url: &str) -> Option<(usize, &str)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    // The authority ends at the first `/`, `?` or `#`; its last `@` ends the userinfo.
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let colon = userinfo.find(':')?;
    Some((start + colon + 1, &userinfo[colon + 1..]))
}

/// `postgres://u:secret@h/db?password=x&sslmode=require` →
/// `postgres://u:***@h/db?password=***&sslmode=require`.
pub fn redact_url(url: &str) -> String {
    let mut out = match userinfo_password(url) {
        Some((at, pw)) => format!("{}{MASK}{}", &url[..at], &url[at + pw.len()..]),
        None => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let (query, fragment) = match query.find('#') {
            Some(h) => query.split_at(h),
            None => (query, ""),
        };
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => format!("password={MASK}"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}{fragment}");
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Secrets known to this process, longest first (so a secret that contains another is
/// replaced whole).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Shorter strings are not treated as secrets: masking every `a` in a log would hide
/// everything and protect nothing.
const MIN_SECRET_LEN: usize = 3;

/// Remembers `secret` so that [`scrub`] hides it from now on.
pub fn register(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    // As written, and as a JSON log line or a `{:?}` shows it (quotes, backslashes escaped).
    let escaped = serde_json::to_string(secret).unwrap_or_default();
    let escaped = escaped.trim_matches('"');
    let mut secrets = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    for form in [secret, escaped] {
        if !secrets.iter().any(|s| s == form) {
            secrets.push(form.to_owned());
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), MASK));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_userinfo_password_is_hidden() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        // `@` and `:` inside the password (percent-encoded or not) do not leak its tail.
        assert_eq!(
            redact_url("postgres://u:p%40ss:w@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u:a@b@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn a_query_password_is_hidden_and_other_parameters_kept() {
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=hunter2&x=1"),
            "postgres://u@h/db?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            redact_url("postgres://u:a@h/db?password=b#frag"),
            "postgres://u:***@h/db?password=***#frag"
        );
        // An `@` in the query is not a userinfo.
        assert_eq!(
            redact_url("postgres://h/db?application_name=a:b@c"),
            "postgres://h/db?application_name=a:b@c"
        );
    }

    #[test]
    fn display_debug_and_serialize_all_hide_it() {
        let url = DatabaseUrl::new("postgres://u:Sw0rdf1sh@h/db?password=Tr0ub4dor");
        for shown in [
            url.to_string(),
            format!("{url:?}"),
            serde_json::to_string(&url).unwrap_or_default(),
        ] {
            assert!(!shown.contains("Sw0rdf1sh"), "{shown}");
            assert!(!shown.contains("Tr0ub4dor"), "{shown}");
            assert!(shown.contains("postgres://u:***@h/db"), "{shown}");
        }
        assert!(url.expose().contains("Sw0rdf1sh"));
    }

    #[test]
    fn the_url_names_its_passwords_as_written_and_decoded() {
        let url = DatabaseUrl::new("postgres://u:p%40ss@h/db?password=q%26r&sslmode=disable");
        let pws = url.passwords();
        for pw in ["p%40ss", "p@ss", "q%26r", "q&r"] {
            assert!(pws.iter().any(|p| p == pw), "{pw} in {pws:?}");
        }
        assert!(DatabaseUrl::new("postgres://u@h/db").passwords().is_empty());
    }

    #[test]
    fn registered_secrets_are_scrubbed_from_any_text() {
        register("scrub-me-0451");
        register("x");
        assert_eq!(
            scrub("password authentication failed: scrub-me-0451 (scrub-me-0451)"),
            "password authentication failed: *** (***)"
        );
        // Too short to be treated as a secret.
        assert_eq!(scrub("x marks"), "x marks");
        // A JSON log line escapes quotes and backslashes; that form is hidden too.
        register(r#"q"uo\te-0451"#);
        assert_eq!(scrub(r#"{"e":"q\"uo\\te-0451"}"#), r#"{"e":"***"}"#);
    }
}
