//! Bearer tokens mapped to grants: the `--tokens FILE` (and `--admin-tokens FILE`) format.
//!
//! ```text
//! # agents of the platform team
//! s3cr3t-token-for-ci          ci-bot
//! sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8  analyst
//! ```
//!
//! One `TOKEN NAME` pair per line, separated by whitespace; `#` starts a comment; blank lines
//! are ignored. A token written `sha256:HEX` is stored as the SHA-256 of the real token, so the
//! file holds no secret. Every presented token is hashed and compared with every entry in
//! constant time (`subtle`), so the time taken says nothing about which entry came close.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The parsed tokens file.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], String)>,
}

/// A bad line, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
}

/// The token of an `Authorization` header value in the `Bearer` scheme: the scheme's name is
/// case-insensitive (RFC 7235: `bearer TOKEN` and `BEARER TOKEN` are the same), one or more
/// spaces separate it from the token, and spaces around the token are dropped. `None` for
/// another scheme or an empty token.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_start().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub fn from_path(path: &std::path::Path) -> Result<Tokens, TokensError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: name.clone(),
            source,
        })?;
        Tokens::parse(&name, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Tokens, TokensError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| TokensError::Line {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, name] = fields[..] else {
                return Err(err(format!(
                    "expected `TOKEN NAME`, found {} field{}",
                    fields.len(),
                    if fields.len() == 1 { "" } else { "s" }
                )));
            };
            let hash = match token.strip_prefix("sha256:") {
                Some(hex_text) => {
                    let bytes = hex::decode(hex_text).map_err(|_| {
                        err("`sha256:` must be followed by 64 hexadecimal digits".into())
                    })?;
                    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                        err("`sha256:` must be followed by 64 hexadecimal digits".into())
                    })?
                }
                None => {
                    if token.len() < 16 {
                        return Err(err("a token must be at least 16 characters long".into()));
                    }
                    digest(token.as_bytes())
                }
            };
            if entries
                .iter()
                .any(|(h, _): &([u8; 32], String)| h.ct_eq(&hash).into())
            {
                return Err(err("this token is already listed on an earlier line".into()));
            }
            entries.push((hash, name.to_owned()));
        }
        Ok(Tokens { entries })
    }

    /// The name (grant or approver) of a presented token, if it is listed.
    pub fn lookup(&self, presented: &str) -> Option<&str> {
        let hash = digest(presented.as_bytes());
        let mut found = None;
        // Compare with every entry, whatever matched, so timing does not depend on position.
        for (h, name) in &self.entries {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The first token listed in both files, as (this file's name, the other's name).
    pub fn shared_with<'a>(&'a self, other: &'a Tokens) -> Option<(&'a str, &'a str)> {
        for (h, name) in &self.entries {
            for (g, other_name) in &other.entries {
                if bool::from(h.ct_eq(g)) {
                    return Some((name.as_str(), other_name.as_str()));
                }
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_tokens_map_to_their_names() {
        let hashed = hex::encode(Sha256::digest(b"analyst-token-0000"));
        let text = format!(
            "# comment\n\nci-bot-token-00000  ci-bot  # trailing\nsha256:{hashed} analyst\n"
        );
        let t = Tokens::parse("tokens", &text).unwrap();
        assert_eq!(t.lookup("ci-bot-token-00000"), Some("ci-bot"));
        assert_eq!(t.lookup("analyst-token-0000"), Some("analyst"));
        assert_eq!(t.lookup("ci-bot-token-00001"), None);
        assert_eq!(t.len(), 2);
    }

    /// The scheme's name is case-insensitive; the token is what follows it, trimmed; other
    /// schemes and empty tokens are no bearer token.
    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (header, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("bEaReR   abc  ", Some("abc")),
            ("Bearer\tabc", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("Bearer ", None),
            ("Bearer", None),
            ("", None),
        ] {
            assert_eq!(bearer(header), token, "{header:?}");
        }
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, says) in [
            (
                "onlyonefield\n",
                "tokens:1: expected `TOKEN NAME`, found 1 field",
            ),
            ("a b c\n", "found 3 fields"),
            ("\nsha256:zz name\n", "tokens:2: `sha256:` must be followed"),
            ("short name\n", "at least 16 characters"),
            (
                "aaaaaaaaaaaaaaaa x\naaaaaaaaaaaaaaaa y\n",
                "tokens:2: this token is already listed",
            ),
        ] {
            let e = Tokens::parse("tokens", text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
