//! Signing deliveries and making secrets: HMAC-SHA256 and the system's randomness, from
//! *ring* (already compiled for rustls), so no other crypto crate is built.
//!
//! A delivery carries `X-Switchyard-Signature: sha256=<hex>`, the HMAC-SHA256 keyed with the
//! webhook's secret (its text as UTF-8 bytes) of `<X-Switchyard-Timestamp>.<body>`: the
//! timestamp is signed with the body, so a captured request cannot be replayed later under a
//! fresh timestamp. Does not decide what is sent (`dispatcher`).

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The header value: `sha256=` and the lowercase hex HMAC of `timestamp.body`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex(ctx.sign().as_ref()))
}

/// A new secret: 32 bytes from the operating system's generator, as 64 hex digits.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random generator works");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently with Python's stdlib:
        // hmac.new(b"topsecret", b'1700000000000.{"event":"x"}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("topsecret", "1700000000000", br#"{"event":"x"}"#),
            "sha256=854d974ff066c0a6abfd38caa0d093cbd55768170c5cd914248c8d9e19602e59"
        );
        // Any change to the secret, the timestamp or the body changes it.
        let base = signature("topsecret", "1700000000000", b"{}");
        assert_ne!(base, signature("topsecret2", "1700000000000", b"{}"));
        assert_ne!(base, signature("topsecret", "1700000000001", b"{}"));
        assert_ne!(base, signature("topsecret", "1700000000000", b"{ }"));
    }

    #[test]
    fn secrets_are_64_hex_digits_and_differ() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
