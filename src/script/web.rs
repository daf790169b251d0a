//! The native halves of the web-platform globals a script plugin sees: WHATWG URL parsing
//! (the `url` crate), cryptographic randomness, digests (`ring`) and UUIDs.
//!
//! Owns these functions and exposing them on the engine's hidden host object. Does not own the
//! JavaScript classes built on them (`host/web.js`) nor `fetch` and timers, which are host
//! calls that finish later (`fetch`, `plugin`).

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use rquickjs::function::Opt;
use rquickjs::{Ctx, Exception, Function, Object, Value};
use serde_json::{json, Value as Json};
use url::{quirks, Url};

/// The largest `getRandomValues` request the Web Crypto API allows.
pub const MAX_RANDOM_BYTES: usize = 65_536;

/// A URL's components as the WHATWG `URL` getters return them.
pub fn url_parts(url: &Url) -> Json {
    json!({
        "href": quirks::href(url),
        "origin": quirks::origin(url),
        "protocol": quirks::protocol(url),
        "username": quirks::username(url),
        "password": quirks::password(url),
        "host": quirks::host(url),
        "hostname": quirks::hostname(url),
        "port": quirks::port(url),
        "pathname": quirks::pathname(url),
        "search": quirks::search(url),
        "hash": quirks::hash(url),
    })
}

/// `new URL(input, base)`.
pub fn parse_url(input: &str, base: Option<&str>) -> Result<Url, String> {
    let parsed = match base {
        Some(base) => Url::parse(base)
            .map_err(|e| format!("Invalid base URL '{base}': {e}"))?
            .join(input),
        None => Url::parse(input),
    };
    parsed.map_err(|e| format!("Invalid URL '{input}': {e}"))
}

/// One WHATWG `URL` setter. Setters other than `href` ignore invalid values, as browsers do.
pub fn set_component(url: &mut Url, component: &str, value: &str) -> Result<(), String> {
    // The `Err(())` of a component setter means "ignored", which is the specified behaviour.
    let _ignored = match component {
        "href" => {
            return quirks::set_href(url, value).map_err(|e| format!("Invalid URL '{value}': {e}"))
        }
        "protocol" => quirks::set_protocol(url, value),
        "username" => quirks::set_username(url, value),
        "password" => quirks::set_password(url, value),
        "host" => quirks::set_host(url, value),
        "hostname" => quirks::set_hostname(url, value),
        "port" => quirks::set_port(url, value),
        "pathname" => {
            quirks::set_pathname(url, value);
            Ok(())
        }
        "search" => {
            quirks::set_search(url, value);
            Ok(())
        }
        "hash" => {
            quirks::set_hash(url, value);
            Ok(())
        }
        other => return Err(format!("unknown URL component '{other}'")),
    };
    Ok(())
}

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    if n > MAX_RANDOM_BYTES {
        return Err(format!(
            "at most {MAX_RANDOM_BYTES} random bytes can be asked for at once, not {n}"
        ));
    }
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random source failed".to_string())?;
    Ok(bytes)
}

/// A random (version 4) UUID.
pub fn uuid_v4() -> Result<String, String> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "the system's random source failed".to_string())?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// `crypto.subtle.digest` for the algorithms the Web Crypto API names.
pub fn digest(algorithm: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let algorithm = match algorithm.to_ascii_uppercase().as_str() {
        "SHA-1" => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        "SHA-256" => &ring::digest::SHA256,
        "SHA-384" => &ring::digest::SHA384,
        "SHA-512" => &ring::digest::SHA512,
        other => return Err(format!("unsupported digest algorithm '{other}'")),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sets `url`, `urlSet`, `randomBytes`, `digest` and `uuid` on the hidden host object.
pub fn install_natives<'js>(ctx: &Ctx<'js>, host: &Object<'js>) -> rquickjs::Result<()> {
    let to_js = |ctx: &Ctx<'js>, parts: Json| -> rquickjs::Result<Value<'js>> {
        ctx.json_parse(parts.to_string())
    };
    host.set(
        "url",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, input: String, base: Opt<String>| {
                let url = parse_url(&input, base.0.as_deref())
                    .map_err(|m| Exception::throw_type(&ctx, &m))?;
                to_js(&ctx, url_parts(&url))
            },
        )?,
    )?;
    host.set(
        "urlSet",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, href: String, component: String, value: String| {
                let mut url = Url::parse(&href).map_err(|e| {
                    Exception::throw_type(&ctx, &format!("Invalid URL '{href}': {e}"))
                })?;
                set_component(&mut url, &component, &value)
                    .map_err(|m| Exception::throw_type(&ctx, &m))?;
                to_js(&ctx, url_parts(&url))
            },
        )?,
    )?;
    host.set(
        "randomBytes",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, n: usize| {
            random_bytes(n)
                .map(|b| b64(&b))
                .map_err(|m| Exception::throw_range(&ctx, &m))
        })?,
    )?;
    host.set(
        "digest",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, algorithm: String, data: String| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| Exception::throw_type(&ctx, &e.to_string()))?;
                digest(&algorithm, &bytes)
                    .map(|d| b64(&d))
                    .map_err(|m| Exception::throw_type(&ctx, &m))
            },
        )?,
    )?;
    host.set(
        "uuid",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
            uuid_v4().map_err(|m| Exception::throw_message(&ctx, &m))
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_join_and_set_like_browsers() {
        let url = parse_url("../b?x=1#h", Some("https://u:p@a.test:8443/p/q")).unwrap();
        let parts = url_parts(&url);
        assert_eq!(parts["href"], "https://u:p@a.test:8443/b?x=1#h");
        assert_eq!(parts["origin"], "https://a.test:8443");
        assert_eq!(parts["port"], "8443");
        assert_eq!(parts["search"], "?x=1");
        let mut url = url;
        set_component(&mut url, "port", "443").unwrap();
        assert_eq!(url_parts(&url)["host"], "a.test");
        set_component(&mut url, "port", "not a port").unwrap();
        assert_eq!(url_parts(&url)["port"], "");
        assert!(set_component(&mut url, "href", "no scheme").is_err());
        assert!(parse_url("/relative", None)
            .unwrap_err()
            .contains("Invalid URL"));
    }

    #[test]
    fn digests_match_known_vectors() {
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(digest("sha-256", b"abc").unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(digest("SHA-1", b"abc").unwrap()),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert!(digest("MD5", b"abc").is_err());
    }

    #[test]
    fn uuids_are_version_4_and_random_bytes_are_capped() {
        let a = uuid_v4().unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, uuid_v4().unwrap());
        assert_eq!(random_bytes(16).unwrap().len(), 16);
        assert!(random_bytes(MAX_RANDOM_BYTES + 1).is_err());
    }
}
