//! OTLP/HTTP (protobuf) push of [`Metrics`]: the same series as the
//! Prometheus endpoint, latency as exponential histograms at scale 4 with
//! tracer's own buckets, cumulative temporality, and the resource
//! attributes the OpenTelemetry semantic conventions name (`host.name`,
//! `os.type`, `os.version` for the kernel release, `service.name`).
//!
//! The messages are the subset of the official
//! `opentelemetry/proto/{collector/metrics/v1,metrics/v1,common/v1,resource/v1}`
//! definitions that tracer sends, with their field numbers; the integration
//! test decodes them with the official generated types.

use prost::Message as _;
use tracer_common::hist::LatencyHist;

use super::{Metrics, SparseBuckets};

pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;

pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_metrics: Vec<ResourceMetrics>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_metrics: Vec<ScopeMetrics>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeMetrics {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub description: String,
        #[prost(string, tag = "3")]
        pub unit: String,
        #[prost(message, optional, tag = "7")]
        pub sum: Option<Sum>,
        #[prost(message, optional, tag = "10")]
        pub exponential_histogram: Option<ExponentialHistogram>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sum {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
        #[prost(bool, tag = "3")]
        pub is_monotonic: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NumberDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(double, tag = "4")]
        pub as_double: f64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExponentialHistogram {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<ExponentialHistogramDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExponentialHistogramDataPoint {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, optional, tag = "5")]
        pub sum: Option<f64>,
        #[prost(sint32, tag = "6")]
        pub scale: i32,
        #[prost(fixed64, tag = "7")]
        pub zero_count: u64,
        #[prost(message, optional, tag = "8")]
        pub positive: Option<Buckets>,
        #[prost(double, optional, tag = "13")]
        pub max: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Buckets {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint64, repeated, tag = "2")]
        pub bucket_counts: Vec<u64>,
    }
}

fn attribute(key: &str, value: &str) -> pb::KeyValue {
    pb::KeyValue { key: key.into(), value: Some(pb::AnyValue { string_value: value.into() }) }
}

fn attributes(labels: &[(&str, &str)]) -> Vec<pb::KeyValue> {
    labels.iter().map(|(k, v)| attribute(k, v)).collect()
}

/// Tracer's buckets as an OTel exponential histogram at scale 4. OTel's
/// bucket `i` holds `(base^i, base^(i+1)]`, Prometheus' and tracer's bucket
/// `i` holds `(base^(i-1), base^i]`: the same buckets, indexes one apart.
pub fn exponential_point(
    h: &LatencyHist,
    labels: &[(&str, &str)],
    start_ns: u64,
    now_ns: u64,
) -> pb::ExponentialHistogramDataPoint {
    let sparse = SparseBuckets::of(h);
    // Spans become one dense run of counts from the first bucket on.
    let first = sparse.spans.first().map(|&(start, _)| start);
    let mut counts = Vec::new();
    let mut values = sparse.counts.iter();
    for (i, &(offset, length)) in sparse.spans.iter().enumerate() {
        if i > 0 {
            counts.extend(std::iter::repeat_n(0, offset as usize));
        }
        counts.extend(values.by_ref().take(length as usize));
    }
    pb::ExponentialHistogramDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        count: h.buckets.iter().sum(),
        sum: Some(h.sum_ns as f64),
        scale: tracer_common::hist::SCHEMA as i32,
        zero_count: sparse.zero_count,
        positive: Some(pb::Buckets { offset: first.map_or(0, |f| f - 1), bucket_counts: counts }),
        max: (h.max_ns > 0).then_some(h.max_ns as f64),
    }
}

fn sum(name: &str, description: &str, unit: &str, points: Vec<pb::NumberDataPoint>) -> pb::Metric {
    pb::Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        sum: Some(pb::Sum { data_points: points, aggregation_temporality: CUMULATIVE, is_monotonic: true }),
        exponential_histogram: None,
    }
}

/// One export request holding every series, as of `now_ns`.
pub fn request(m: &Metrics, now_ns: u64) -> pb::ExportMetricsServiceRequest {
    let start_ns = (m.start_unix_s * 1e9) as u64;
    let point = |labels: &[(&str, &str)], value: f64| pb::NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        as_double: value,
    };
    let block = |f: &dyn Fn(&super::LatencySeries) -> f64| {
        m.block.iter().map(|((device, op), s)| point(&[("device", device), ("op", op)], f(s))).collect()
    };
    let mut metrics = vec![
        sum("tracer.block.requests", "completed block requests", "{request}", block(&|s| s.count as f64)),
        sum("tracer.block.bytes", "bytes of completed block requests", "By", block(&|s| s.bytes as f64)),
        sum(
            "tracer.block.errors",
            "block requests completed with an error",
            "{request}",
            block(&|s| s.errors as f64),
        ),
        pb::Metric {
            name: "tracer.block.latency".into(),
            description: "block request latency, issue (or insert with --queued) to completion".into(),
            unit: "ns".into(),
            sum: None,
            exponential_histogram: Some(pb::ExponentialHistogram {
                data_points: m
                    .block
                    .iter()
                    .map(|((device, op), s)| {
                        exponential_point(&s.hist, &[("device", device), ("op", op)], start_ns, now_ns)
                    })
                    .collect(),
                aggregation_temporality: CUMULATIVE,
            }),
        },
        pb::Metric {
            name: "tracer.stall.latency".into(),
            description: "reclaim and compaction stalls by kind".into(),
            unit: "ns".into(),
            sum: None,
            exponential_histogram: Some(pb::ExponentialHistogram {
                data_points: m
                    .stalls
                    .iter()
                    .map(|(kind, s)| exponential_point(&s.hist, &[("kind", kind)], start_ns, now_ns))
                    .collect(),
                aggregation_temporality: CUMULATIVE,
            }),
        },
        sum(
            "tracer.alloc.failures",
            "page allocation failures",
            "{failure}",
            m.alloc_failures
                .iter()
                .map(|((order, can_reclaim), n)| {
                    point(
                        &[("order", &order.to_string()), ("can_reclaim", &can_reclaim.to_string())],
                        *n as f64,
                    )
                })
                .collect(),
        ),
        sum(
            "tracer.oom.kills",
            "OOM kills by the victim's memory cgroup",
            "{kill}",
            m.oom_kills.iter().map(|(cgroup, n)| point(&[("cgroup", cgroup)], *n as f64)).collect(),
        ),
        sum(
            "tracer.thp.splits",
            "transparent huge page PMD splits",
            "{split}",
            vec![point(&[], m.thp_splits as f64)],
        ),
    ];
    let lost_total: u64 = m.lost.values().sum();
    let mut lost = vec![point(&[("reason", "all")], lost_total as f64)];
    lost.extend(m.lost.iter().map(|(reason, n)| point(&[("reason", reason)], *n as f64)));
    metrics.push(sum("tracer.lost_events", "events the kernel side could not record", "{event}", lost));
    pb::ExportMetricsServiceRequest {
        resource_metrics: vec![pb::ResourceMetrics {
            resource: Some(pb::Resource {
                attributes: attributes(&[
                    ("service.name", "tracer"),
                    ("host.name", &m.hostname),
                    ("os.type", "linux"),
                    ("os.version", &m.kernel_release),
                ]),
            }),
            scope_metrics: vec![pb::ScopeMetrics {
                scope: Some(pb::InstrumentationScope {
                    name: "tracer".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                metrics,
            }],
        }],
    }
}

pub fn encode(m: &Metrics, now_ns: u64) -> Vec<u8> {
    request(m, now_ns).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_indexes_are_one_below_prometheus() {
        let mut h = LatencyHist::zeroed();
        // 1024 ns = 2^(160/16): Prometheus index 160, OTel index 159
        // (OTel's bucket 159 is (2^(159/16), 2^(160/16)]).
        for v in [1024u64, 1025, 1 << 11] {
            h.record(v);
        }
        let point = exponential_point(&h, &[], 0, 1);
        let positive = point.positive.unwrap();
        assert_eq!(positive.offset, 159);
        // 1025 is in 161 (OTel 160); 2048 closes 176 (OTel 175).
        assert_eq!(positive.bucket_counts.len(), 176 - 160 + 1);
        assert_eq!(positive.bucket_counts[0], 1);
        assert_eq!(positive.bucket_counts[1], 1);
        assert_eq!(positive.bucket_counts[16], 1);
        assert_eq!(positive.bucket_counts.iter().sum::<u64>(), 3);
        assert_eq!(point.count, 3);
        assert_eq!(point.scale, 4);
    }

    #[test]
    fn endpoints_parse_or_say_what_is_wanted() {
        let e: Endpoint = "http://127.0.0.1:4318/v1/metrics".parse().unwrap();
        assert_eq!(e, Endpoint { authority: "127.0.0.1:4318".into(), path: "/v1/metrics".into() });
        let e: Endpoint = "http://collector:4318".parse().unwrap();
        assert_eq!(e.path, "/v1/metrics");
        assert!("https://x:1".parse::<Endpoint>().unwrap_err().contains("http://"));
        assert!("http://nohost".parse::<Endpoint>().unwrap_err().contains("host and port"));
    }
}

/// Where `--otlp` pushes: `http://HOST:PORT/PATH` (plain HTTP, as to a
/// local OpenTelemetry collector; the path defaults to `/v1/metrics`).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub authority: String,
    pub path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "`{url}`: give an http:// URL of an OpenTelemetry collector, e.g. http://127.0.0.1:4318/v1/metrics \
                 (https is not supported: run a local collector)"
            ));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, "v1/metrics"), |(a, p)| (a, p));
        if authority.is_empty() || !authority.contains(':') {
            return Err(format!("`{url}`: the URL needs a host and port, e.g. http://127.0.0.1:4318"));
        }
        let path = if path.is_empty() { "v1/metrics" } else { path };
        Ok(Endpoint { authority: authority.into(), path: format!("/{path}") })
    }
}

/// Pushes in the background; a push still in flight when the next is due
/// makes the next one wait for the following interval (never a queue).
pub struct Pusher {
    endpoint: Endpoint,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Failed pushes are said once, not every interval.
    warned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Pusher {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, in_flight: Default::default(), warned: Default::default() }
    }

    /// Starts a push of `metrics` on the current runtime.
    pub fn push(&self, metrics: &Metrics) {
        use std::sync::atomic::Ordering;
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let body = bytes::Bytes::from(encode(metrics, now_ns));
        let endpoint = self.endpoint.clone();
        let (in_flight, warned) = (self.in_flight.clone(), self.warned.clone());
        tokio::spawn(async move {
            let result = post(&endpoint, body).await;
            match result {
                Ok(()) => warned.store(false, Ordering::Release),
                Err(e) => {
                    if !warned.swap(true, Ordering::AcqRel) {
                        eprintln!(
                            "tracer: warning: OTLP push to http://{}{} failed: {e:#}",
                            endpoint.authority, endpoint.path
                        );
                    }
                }
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

async fn post(endpoint: &Endpoint, body: bytes::Bytes) -> anyhow::Result<()> {
    use anyhow::{Context as _, bail};
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&endpoint.authority),
    )
    .await
    .context("connecting timed out")??;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post(&endpoint.path)
        .header(hyper::header::HOST, &endpoint.authority)
        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(http_body_util::Full::new(body))?;
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(request))
        .await
        .context("timed out")??;
    if !response.status().is_success() {
        bail!("the collector answered {}", response.status());
    }
    Ok(())
}
