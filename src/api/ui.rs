//! The operator dashboard: `GET /ui` and its assets (`GET /ui/{asset}`), embedded in the binary.
//!
//! Owns serving the files of `ui/` (plain HTML, CSS and ES-module JavaScript written by hand:
//! no framework, no build step, nothing fetched from elsewhere) with their content types, a
//! strong `ETag` per file (answering `If-None-Match` with 304), `Cache-Control: no-cache` (so
//! a new binary's files are picked up at once, at the price of a revalidation) and a strict
//! Content-Security-Policy: scripts and styles from this origin only, nothing inline. The page
//! and its assets hold no secrets, so they are public even with an admin token set; the page
//! asks for the token and keeps it in `sessionStorage`, sending it as `Authorization: Bearer`
//! on `/api/*` and `/metrics` (the event stream is read with `fetch`, as `EventSource` cannot
//! send headers). Does not own the API the page calls.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{guard, web, HttpRequest, HttpResponse};

use super::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the dashboard; `index.html` is also what `/ui` and `/ui/` answer.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("ui/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("ui/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/api.js"),
    },
    Asset {
        name: "metrics.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/metrics.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("ui/favicon.svg"),
    },
];

/// Every embedded file as `(name, content type)`.
pub fn assets() -> impl Iterator<Item = (&'static str, &'static str)> {
    ASSETS.iter().map(|a| (a.name, a.content_type))
}

/// Scripts, styles and connections to this origin only; nothing inline, no frames, no forms
/// posted elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Mounts `/ui`, `/ui/` and `/ui/{asset}` (GET and HEAD); any other method on them is a 405,
/// any other path under `/ui/` a 404.
pub fn mount(cfg: &mut web::ServiceConfig) {
    let read = || guard::Any(guard::Get()).or(guard::Head());
    cfg.service(
        web::scope("/ui")
            .route("", web::route().guard(read()).to(page))
            .route("/", web::route().guard(read()).to(page))
            .route("/{asset}", web::route().guard(read()).to(asset))
            .default_service(web::to(refused)),
    );
}

async fn page(req: HttpRequest) -> HttpResponse {
    serve(&req, 0)
}

async fn asset(req: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match ASSETS.iter().position(|a| a.name == name.as_str()) {
        Some(index) => Ok(serve(&req, index)),
        None => Err(not_found(&req)),
    }
}

/// A method other than GET/HEAD on a dashboard path (405), or a path that is none (404).
async fn refused(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    let known = matches!(path, "/ui" | "/ui/")
        || path
            .strip_prefix("/ui/")
            .is_some_and(|name| ASSETS.iter().any(|a| a.name == name));
    Err(if known {
        ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: path.to_string(),
            allowed: vec!["GET".into(), "HEAD".into()],
        }
    } else {
        not_found(&req)
    })
}

fn not_found(req: &HttpRequest) -> ApiError {
    ApiError::RouteNotFound {
        method: req.method().to_string(),
        path: req.path().to_string(),
    }
}

/// The asset at `index`, or 304 when the client's copy is current.
fn serve(req: &HttpRequest, index: usize) -> HttpResponse {
    let asset = &ASSETS[index];
    let tag = &etags()[index];
    let current = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| matches_etag(given, tag));
    let mut response = if current {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, tag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if current {
        return response.finish();
    }
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ))
        .body(asset.body)
}

/// Each asset's `ETag`, in [`ASSETS`] order, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| ASSETS.iter().map(|a| etag(a.body)).collect())
}

/// A strong entity tag: the FNV-1a 64-bit hash of the bytes, quoted. The files are fixed at
/// build time, so this only has to tell one build's file from another's.
fn etag(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

/// Whether an `If-None-Match` value names `tag` (a list, `*`, or weak forms).
fn matches_etag(given: &str, tag: &str) -> bool {
    given
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_by_content_and_are_quoted() {
        let a = etag(b"one");
        assert_eq!(a, etag(b"one"));
        assert_ne!(a, etag(b"two"));
        assert!(
            a.starts_with('"') && a.ends_with('"') && a.len() == 18,
            "{a}"
        );
    }

    #[test]
    fn if_none_match_accepts_lists_wildcards_and_weak_tags() {
        let tag = "\"00000000000000ab\"";
        assert!(matches_etag(tag, tag));
        assert!(matches_etag("\"x\", \"00000000000000ab\"", tag));
        assert!(matches_etag("W/\"00000000000000ab\"", tag));
        assert!(matches_etag("*", tag));
        assert!(!matches_etag("\"00000000000000ac\"", tag));
    }

    #[test]
    fn the_page_has_no_inline_script_style_or_handler() {
        // The CSP forbids all three: one would silently not work.
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("<script>"), "inline script in index.html");
        assert!(!html.contains("<style"), "inline style in index.html");
        assert!(!html.contains(" style="), "inline style attribute");
        let handler = html.split(" on").skip(1).any(|rest| {
            rest.split('=').next().is_some_and(|name| {
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase())
            })
        });
        assert!(!handler, "inline event handler in index.html");
    }
}
