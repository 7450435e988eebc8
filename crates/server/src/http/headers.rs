//! Security headers on every response.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// No inline script or style anywhere; everything comes from our own origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    media-src 'self' blob:; manifest-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// Powerful features are off everywhere. A visit page that needs camera and microphone
/// sets its own `Permissions-Policy`, which this layer then leaves in place.
pub const PERMISSIONS_POLICY_DEFAULT: &str = "camera=(), microphone=(), geolocation=(), \
    payment=(), usb=(), serial=(), bluetooth=(), hid=(), display-capture=(), \
    accelerometer=(), gyroscope=(), magnetometer=()";

/// What a video-visit page may use: camera, microphone and screen sharing, own origin only.
pub const PERMISSIONS_POLICY_VISIT: &str = "camera=(self), microphone=(self), \
    geolocation=(), payment=(), usb=(), serial=(), bluetooth=(), hid=(), \
    display-capture=(self), accelerometer=(), gyroscope=(), magnetometer=()";

pub async fn layer(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let fixed: [(HeaderName, &'static str); 8] = [
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000; includeSubDomains"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
        (HeaderName::from_static("x-permitted-cross-domain-policies"), "none"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    let pp = HeaderName::from_static("permissions-policy");
    if !h.contains_key(&pp) {
        h.insert(pp, HeaderValue::from_static(PERMISSIONS_POLICY_DEFAULT));
    }
    // Anything that is not an explicitly cacheable static asset may carry patient data.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
