//! Static CSS and ES modules, compiled into the binary and served under names that carry a
//! hash of their content, so they can be cached for a year and still never go stale.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

struct Source {
    stem: &'static str,
    ext: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const SOURCES: &[Source] = &[
    Source {
        stem: "app",
        ext: "css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../static/app.css"),
    },
    Source {
        stem: "visit",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/visit.js"),
    },
    Source {
        stem: "device-check",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/device-check.js"),
    },
    Source {
        stem: "app",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/app.js"),
    },
];

#[derive(Debug)]
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
}

/// The hashed names and their contents.
#[derive(Debug)]
pub struct Assets {
    by_name: HashMap<String, Asset>,
    /// `stem.ext` → `/static/stem.<hash>.ext`
    urls: HashMap<String, String>,
}

impl Default for Assets {
    fn default() -> Self {
        let mut by_name = HashMap::new();
        let mut urls = HashMap::new();
        for s in SOURCES {
            let hash = hex::encode(&telesafe_crypto::sha256(s.body)[..8]);
            let name = format!("{}.{hash}.{}", s.stem, s.ext);
            urls.insert(format!("{}.{}", s.stem, s.ext), format!("/static/{name}"));
            by_name.insert(name, Asset { content_type: s.content_type, body: s.body });
        }
        Self { by_name, urls }
    }
}

impl Assets {
    /// The hashed URL of `logical` (for example `app.css`).
    pub fn url(&self, logical: &str) -> &str {
        self.urls.get(logical).map(String::as_str).unwrap_or("/static/missing")
    }
}

pub async fn serve(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.assets.by_name.get(&name) {
        Some(a) => {
            let mut resp = a.body.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            resp
        }
        None => AppError::NotFound.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_content_hashes() {
        let a = Assets::default();
        let css = a.url("app.css");
        assert!(css.starts_with("/static/app.") && css.ends_with(".css"), "{css}");
        assert_eq!(css.len(), "/static/app.".len() + 16 + ".css".len());
        assert!(a.by_name.contains_key(css.trim_start_matches("/static/")));
    }
}
