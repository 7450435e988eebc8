//! Prometheus metrics: requests by method, route template and status class, and latency;
//! and how many MQTT messages the device bridge files as one group.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// The registry and the families the middleware records into.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// Messages per group the MQTT bridge files (1 to 512): how much grouping saves.
    pub mqtt_group_size: Histogram,
    /// When `telesafe backup create` last ran, Unix seconds (0: never), read at each scrape.
    pub newest_backup: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("telesafe");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            latency.clone(),
        );
        let mqtt_group_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "mqtt_group_size",
            "Device telemetry messages filed together as one group by the MQTT bridge",
            mqtt_group_size.clone(),
        );
        let newest_backup = Gauge::default();
        registry.register(
            "backup_newest_timestamp_seconds",
            "When telesafe backup create last ran (Unix seconds; 0 if never, and on PostgreSQL, whose backups Telesafe does not see)",
            newest_backup.clone(),
        );
        Self { registry, requests, latency, mqtt_group_size, newest_backup }
    }
}

impl Metrics {
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

pub async fn layer(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = super::trace::route_of(&req);
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: resp.status().as_u16().to_string(),
        })
        .inc();
    m.latency.get_or_create(&RouteLabels { route }).observe(start.elapsed().as_secs_f64());
    resp
}
