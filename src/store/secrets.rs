//! Credentials at rest: AES-256-GCM with a key from `SWITCHYARD_SECRET_KEY` or a key file.
//!
//! Owns the key (from the environment as 64 hex digits or base64 of 32 bytes, else
//! `<data.dir>/secret.key`, created on first run with permissions 0600), turning a secret
//! into `enc:v1:<base64(nonce ‖ ciphertext)>` and back, sealing a whole JSON value (a number,
//! an object, a nested subtree: `enc:v1:json:<…>`, its JSON text encrypted) and opening every
//! sealed value in a document, and what a credential's key looks like
//! ([`looks_like_credential`]). Does not decide which fields of a target or a plugin config
//! are secret (`target`, `session`).

use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

/// Environment variable with the key.
pub const ENV_SECRET_KEY: &str = "SWITCHYARD_SECRET_KEY";
const PREFIX: &str = "enc:v1:";
/// A sealed JSON value that is not a string: its JSON text, encrypted. `:` is not in the
/// base64 alphabet, so this never collides with a sealed string.
const JSON_PREFIX: &str = "enc:v1:json:";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{ENV_SECRET_KEY} must be 32 bytes as 64 hex digits or base64")]
    BadKey,
    #[error("the key file {path} is not a 32-byte base64 key")]
    BadKeyFile { path: String },
    #[error("cannot create the key file {path}: {error}")]
    KeyFile { path: String, error: std::io::Error },
    #[error("a stored secret could not be decrypted (a different key?)")]
    Decrypt,
}

/// Encrypts and decrypts credential values.
#[derive(Clone)]
pub struct Secrets {
    cipher: Aes256Gcm,
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        STANDARD.decode(text).ok()?
    };
    bytes.try_into().ok()
}

impl Secrets {
    /// The key from `env_key`, else from (or into) `<data_dir>/secret.key`.
    pub fn load(env_key: Option<&str>, data_dir: &Path) -> Result<Secrets, SecretError> {
        let key = match env_key {
            Some(text) => parse_key(text).ok_or(SecretError::BadKey)?,
            None => Self::key_file(&data_dir.join("secret.key"))?,
        };
        Ok(Secrets {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        })
    }

    fn key_file(path: &Path) -> Result<[u8; 32], SecretError> {
        let shown = path.display().to_string();
        if let Ok(text) = std::fs::read_to_string(path) {
            return parse_key(&text).ok_or(SecretError::BadKeyFile { path: shown });
        }
        let key = Aes256Gcm::generate_key(OsRng);
        let fail = |error| SecretError::KeyFile {
            path: shown.clone(),
            error,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        write_private(path, STANDARD.encode(key).as_bytes()).map_err(fail)?;
        tracing::info!(path = %shown, "Created a new secret key for credentials at rest.");
        Ok(key.into())
    }

    pub fn encrypt(&self, plain: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plain.as_bytes())
            .expect("AES-GCM encryption does not fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Decrypts what `encrypt` made; other text is returned as it is (plain values). A sealed
    /// non-string value ([`Secrets::seal`]) comes back as its JSON text.
    pub fn decrypt(&self, text: &str) -> Result<String, SecretError> {
        let Some(encoded) = text
            .strip_prefix(JSON_PREFIX)
            .or_else(|| text.strip_prefix(PREFIX))
        else {
            return Ok(text.to_string());
        };
        let bytes = STANDARD.decode(encoded).map_err(|_| SecretError::Decrypt)?;
        if bytes.len() < 12 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }
}

impl Secrets {
    /// `value` encrypted whole: a string as [`Secrets::encrypt`] does (always: a client's text
    /// that merely starts like a sealed value is sealed too), anything else (a number, a boolean, an object or array with everything
    /// nested in it) as `enc:v1:json:` and its JSON text encrypted. `null` stays `null`.
    pub fn seal(&self, value: &Value) -> Value {
        match value {
            Value::Null => Value::Null,
            Value::String(text) => Value::String(self.encrypt(text)),
            other => {
                let sealed = self.encrypt(&other.to_string());
                Value::String(format!("{JSON_PREFIX}{}", &sealed[PREFIX.len()..]))
            }
        }
    }

    /// A copy of `value` with every sealed value in it, at any depth, opened again (a sealed
    /// subtree is opened, then searched too). Plain values are kept. A string that only looks
    /// sealed (a client's `"name": "enc:v1:x"`) cannot be opened and is kept as it is, with a
    /// warning: one such value must never stop the service from starting.
    pub fn open(&self, value: &Value) -> Result<Value, SecretError> {
        let kept = |text: &str| {
            tracing::warn!(
                bytes = text.len(),
                "A stored value looks encrypted but does not open with this key; it is kept as it is."
            );
            Value::String(text.to_string())
        };
        Ok(match value {
            Value::String(text) if text.starts_with(JSON_PREFIX) => {
                match self
                    .decrypt(text)
                    .ok()
                    .and_then(|json| serde_json::from_str::<Value>(&json).ok())
                {
                    Some(inner) => self.open(&inner)?,
                    None => kept(text),
                }
            }
            Value::String(text) if text.starts_with(PREFIX) => match self.decrypt(text) {
                Ok(plain) => Value::String(plain),
                Err(_) => kept(text),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.open(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.open(v)?)))
                    .collect::<Result<_, SecretError>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// Whether `text` is a sealed value (`enc:v1:…`).
pub fn is_sealed_text(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Whether `value` is a sealed value.
pub fn is_sealed(value: &Value) -> bool {
    value.as_str().is_some_and(is_sealed_text)
}

/// The words a credential's key ends with, compared without case, `_`, `-` or `.`:
/// `password`, `apiKey`, `client_secret`, `authToken`, `X-Api-Key`, `Authorization`,
/// `authBody`… but not `tokenPath`, `tokenPrefix` or `max_tokens`.
const CREDENTIAL_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "authbody",
    "credential",
    "credentials",
    "cookie",
];

/// Whether a key (a config field, a header name) names a credential, by its last word:
/// see [`CREDENTIAL_SUFFIXES`].
pub fn looks_like_credential(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    CREDENTIAL_SUFFIXES
        .iter()
        .any(|suffix| folded.ends_with(suffix))
}

/// Writes a file only its owner can read (0600 on Unix).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(bytes)
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes)
    }
}

/// Replaces every sealed value in `value`, at any depth, with the mask.
pub fn mask_sealed(value: &mut Value) {
    match value {
        v if is_sealed(v) => *v = Value::String(crate::util::MASK.into()),
        Value::Object(map) => map.values_mut().for_each(mask_sealed),
        Value::Array(items) => items.iter_mut().for_each(mask_sealed),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_a_fresh_nonce_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::load(None, dir.path()).unwrap();
        let a = secrets.encrypt("sk-123");
        let b = secrets.encrypt("sk-123");
        assert_ne!(a, b);
        assert!(!a.contains("sk-123"));
        assert_eq!(secrets.decrypt(&a).unwrap(), "sk-123");
        assert_eq!(secrets.decrypt("plain").unwrap(), "plain");
    }

    #[test]
    fn whole_values_are_sealed_and_every_sealed_value_in_a_document_opens() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::load(None, dir.path()).unwrap();
        let nested = json!({ "extra": { "deep": "d33p" }, "pin": 4815162342u64, "on": true });
        let sealed = secrets.seal(&nested);
        let text = sealed.as_str().unwrap();
        assert!(text.starts_with("enc:v1:json:"), "{text}");
        assert!(!text.contains("d33p") && !text.contains("4815162342"));
        let number = secrets.seal(&json!(42));
        assert!(is_sealed(&number));
        let string = secrets.seal(&json!("pw"));
        // A client's text that merely looks sealed is sealed too, and opens back to itself.
        let lookalike = json!("enc:v1:not-really");
        let sealed_lookalike = secrets.seal(&lookalike);
        assert_ne!(sealed_lookalike, lookalike);
        assert_eq!(secrets.open(&sealed_lookalike).unwrap(), lookalike);
        assert_eq!(secrets.seal(&Value::Null), Value::Null);
        // A document with sealed values anywhere, and a sealed subtree holding sealed leaves.
        let inner = json!({ "token": secrets.encrypt("t0k"), "n": 7 });
        let doc = json!({ "a": [sealed, number, string], "b": secrets.seal(&inner), "c": "plain" });
        assert_eq!(
            secrets.open(&doc).unwrap(),
            json!({ "a": [nested, 42, "pw"], "b": { "token": "t0k", "n": 7 }, "c": "plain" })
        );
        // What does not open with this key (another key, or a client's look-alike stored in a
        // field that is not sealed) is kept as it is: it never stops the service from starting.
        let other = Secrets::load(Some(&"cd".repeat(32)), dir.path()).unwrap();
        assert_eq!(other.open(&doc).unwrap()["c"], "plain");
        assert_eq!(
            other.open(&json!({ "name": "enc:v1:x" })).unwrap()["name"],
            "enc:v1:x"
        );
    }

    #[test]
    fn credential_keys_are_told_by_their_last_word() {
        for key in [
            "password",
            "apiKey",
            "api_key",
            "X-Api-Key",
            "authorization",
            "authBody",
            "client_secret",
            "accessToken",
            "bearer-token",
            "Cookie",
            "privateKey",
        ] {
            assert!(looks_like_credential(key), "{key}");
        }
        for key in [
            "tokenPath",
            "tokenHeader",
            "tokenPrefix",
            "max_tokens",
            "totalTokens",
            "model",
            "authEndpoint",
            "username",
            "headerName",
            "expiresInPath",
            "secretName",
        ] {
            assert!(!looks_like_credential(key), "{key}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = Secrets::load(None, dir.path()).unwrap();
        let sealed = first.encrypt("x");
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Secrets::load(None, dir.path()).unwrap();
        assert_eq!(again.decrypt(&sealed).unwrap(), "x");
        let other = Secrets::load(Some(&"ab".repeat(32)), dir.path()).unwrap();
        assert!(matches!(other.decrypt(&sealed), Err(SecretError::Decrypt)));
        assert!(matches!(
            Secrets::load(Some("short"), dir.path()),
            Err(SecretError::BadKey)
        ));
    }
}
