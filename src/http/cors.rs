//! CORS from `[server.cors]`: an allowed origin gets the `Access-Control-Allow-*` headers
//! (and its preflight answered); any other origin, or a request without one, gets none.
//!
//! tower-http's layer answers every preflight with the allowed methods, headers and max-age
//! whatever the origin; [`strip`] removes them unless the origin is allowed, so a disallowed
//! origin learns nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::app::App;
use crate::config::CorsConfig;

/// The origins allowed.
#[derive(Debug, Clone)]
struct Allowed {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Allowed {
    fn permits(&self, origin: &HeaderValue) -> bool {
        self.any || self.origins.iter().any(|o| o == origin)
    }
}

const CORS_RESPONSE_HEADERS: [header::HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// Middleware: removes the CORS answer headers unless the request's origin is allowed.
async fn strip(State(allowed): State<Arc<Allowed>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| allowed.permits(o));
    let mut resp = next.run(req).await;
    if !ok {
        let h = resp.headers_mut();
        for name in CORS_RESPONSE_HEADERS {
            h.remove(name);
        }
        h.remove("access-control-allow-private-network");
    }
    resp
}

fn layer(c: &CorsConfig, allowed: &Allowed) -> CorsLayer {
    let origins = if allowed.any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed.origins.iter().cloned())
    };
    let methods: Vec<Method> = c
        .allowed_methods
        .iter()
        .filter_map(|m| m.parse().ok())
        .collect();
    let headers = if c.allowed_headers.iter().any(|h| h == "*") {
        AllowHeaders::any()
    } else {
        AllowHeaders::list(c.allowed_headers.iter().filter_map(|h| h.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(methods)
        .allow_headers(headers)
        .max_age(Duration::from_secs(c.max_age_secs))
}

/// Wraps `router` in the CORS layers when `[server.cors]` allows some origin.
pub fn apply(router: Router<Arc<App>>, app: &App) -> Router<Arc<App>> {
    let c = &app.config.server.cors;
    if !c.enabled() {
        return router;
    }
    let allowed = Allowed {
        any: c.allowed_origins.iter().any(|o| o == "*"),
        origins: c
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect(),
    };
    let cors = layer(c, &allowed);
    router
        .layer(cors)
        .layer(middleware::from_fn_with_state(Arc::new(allowed), strip))
}
