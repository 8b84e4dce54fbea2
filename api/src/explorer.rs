//! The interactive GraphQL explorer (GraphiQL) served at `GET /graphiql`.
//!
//! Everything the page needs is compiled into the binary, so the explorer works without
//! internet access:
//!
//! * GraphiQL, React and ReactDOM come from npm, pinned by `explorer/package-lock.json`;
//!   `build.rs` installs them (`npm ci`) and copies their UMD builds into `OUT_DIR`.
//! * The page and its glue script (`explorer/index.html`, `explorer/explorer.js`) are ours:
//!   a sign-in bar that calls the `login` mutation, and a GraphiQL fetcher that sends the
//!   access token as `Authorization: Bearer …` over HTTP and as
//!   `{"authorization": "Bearer …"}` in the WebSocket `connection_init` payload.
//!
//! The page talks to `POST /graphql` and to `/graphql` over WebSocket
//! (`graphql-transport-ws`); those routes are not part of this module. See `docs/EXPLORER.md`.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::LazyLock;

/// Path of the explorer page.
pub const PAGE_PATH: &str = "/graphiql";

/// Content hash of the npm assets, computed by `build.rs`; appended to their URLs as `?v=`.
const ASSET_VERSION: &str = env!("SPARKWATCH_EXPLORER_ASSET_VERSION");

/// The page, with the asset version filled in.
static PAGE: LazyLock<String> =
    LazyLock::new(|| include_str!("../../explorer/index.html").replace("__ASSET_VERSION__", ASSET_VERSION));

/// Browsers may keep a versioned third-party asset forever: a new version gets a new URL.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";
/// Our own files are tiny; always revalidate them so a new binary takes effect at once.
const CACHE_NEVER: &str = "no-cache";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// Keeps the page from loading or sending anything anywhere but this server. GraphiQL sets
/// inline styles, hence `'unsafe-inline'` for styles only; its fonts are `data:` URLs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A file served under `/graphiql/assets/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    body: &'static [u8],
}

/// The npm files (copied by `build.rs`) and our glue script.
static ASSETS: [Asset; 5] = [
    Asset {
        name: "graphiql.min.js",
        content_type: JS,
        cache_control: CACHE_FOREVER,
        body: include_bytes!(concat!(env!("OUT_DIR"), "/graphiql.min.js")),
    },
    Asset {
        name: "graphiql.min.css",
        content_type: CSS,
        cache_control: CACHE_FOREVER,
        body: include_bytes!(concat!(env!("OUT_DIR"), "/graphiql.min.css")),
    },
    Asset {
        name: "react.production.min.js",
        content_type: JS,
        cache_control: CACHE_FOREVER,
        body: include_bytes!(concat!(env!("OUT_DIR"), "/react.production.min.js")),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: JS,
        cache_control: CACHE_FOREVER,
        body: include_bytes!(concat!(env!("OUT_DIR"), "/react-dom.production.min.js")),
    },
    Asset {
        name: "explorer.js",
        content_type: JS,
        cache_control: CACHE_NEVER,
        body: include_bytes!("../../explorer/explorer.js"),
    },
];

/// The explorer's routes: `GET /graphiql` (the page) and `GET /graphiql/assets/<file>`.
///
/// Stateless; merge it into the application router. `HEAD` is answered too.
pub fn router() -> Router {
    ASSETS.iter().fold(Router::new().route(PAGE_PATH, get(page)), |router, asset| {
        router.route(&format!("{PAGE_PATH}/assets/{}", asset.name), get(move || async move { serve(asset) }))
    })
}

/// `GET /graphiql`.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, HTML),
            (header::CACHE_CONTROL, CACHE_NEVER),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(asset.cache_control)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_nothing_from_other_hosts() {
        for needle in ["http://", "https://", "//cdn", "__ASSET_VERSION__"] {
            assert!(!PAGE.contains(needle), "page contains {needle:?}");
        }
        let script = std::str::from_utf8(ASSETS[4].body).expect("explorer.js is UTF-8");
        assert!(!script.contains("http://") && !script.contains("https://"));
    }

    #[test]
    fn page_references_exactly_the_served_assets() {
        for asset in &ASSETS {
            assert!(PAGE.contains(&format!("{PAGE_PATH}/assets/{}", asset.name)), "{} not used", asset.name);
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
        }
        assert_eq!(PAGE.matches("/graphiql/assets/").count(), ASSETS.len());
    }
}
