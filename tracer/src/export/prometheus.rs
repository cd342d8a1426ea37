//! Prometheus exposition of [`Metrics`]: the text format (classic `le`
//! buckets, for scrapers that do not ask for native histograms) and the
//! protobuf format (`io.prometheus.client.MetricFamily`, length-delimited),
//! which carries both the classic buckets and the native histogram with
//! tracer's own buckets.

use std::fmt::Write as _;

use prost::Message as _;
use tracer_common::hist::{LatencyHist, MAX_EXP};

use super::{Metrics, SparseBuckets};

/// What Prometheus sends in `Accept` when it wants the protobuf format
/// (the only one that carries native histograms).
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Classic bucket edges: every power of two of nanoseconds from 1 us, each
/// an edge of tracer's own buckets, so the classic buckets are exact sums.
fn classic_edges() -> impl Iterator<Item = u64> {
    (10..=MAX_EXP).map(|e| 1u64 << e)
}

/// The subset of the official `io/prometheus/client/metrics.proto`
/// (client_model) that tracer sends, with its field numbers.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counter {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, optional, tag = "1")]
        pub cumulative_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub upper_bound: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, optional, tag = "1")]
        pub offset: Option<i32>,
        #[prost(uint32, optional, tag = "2")]
        pub length: Option<u32>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(sint32, optional, tag = "5")]
        pub schema: Option<i32>,
        #[prost(double, optional, tag = "6")]
        pub zero_threshold: Option<f64>,
        #[prost(uint64, optional, tag = "7")]
        pub zero_count: Option<u64>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, packed = "false", tag = "13")]
        pub positive_delta: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Gauge>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Counter>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub help: Option<String>,
        /// COUNTER = 0, GAUGE = 1, HISTOGRAM = 4.
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }
}

pub use pb::MetricFamily;

const COUNTER: i32 = 0;
const GAUGE: i32 = 1;
const HISTOGRAM: i32 = 4;

/// One value of a family: labels and a number or a histogram.
enum Value<'a> {
    Number(f64),
    Histogram(&'a LatencyHist),
}

struct Family<'a> {
    name: &'static str,
    help: &'static str,
    kind: i32,
    samples: Vec<(Vec<(&'static str, String)>, Value<'a>)>,
}

/// Every family, in a fixed order; both formats render these.
fn families(m: &Metrics) -> Vec<Family<'_>> {
    let number = |labels: Vec<(&'static str, String)>, v: u64| (labels, Value::Number(v as f64));
    let block = |name, help, kind, f: &dyn Fn(&super::LatencySeries) -> Value<'_>| Family {
        name,
        help,
        kind,
        samples: m
            .block
            .iter()
            .map(|((device, op), s)| (vec![("device", device.clone()), ("op", op.clone())], f(s)))
            .collect(),
    };
    let mut out = vec![
        Family {
            name: "tracer_build_info",
            help: "tracer's build and the traced kernel; always 1",
            kind: GAUGE,
            samples: vec![(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("commit", env!("TRACER_GIT_COMMIT").to_string()),
                    ("linkage", crate::build_info::LINKAGE.to_string()),
                    ("host", m.hostname.clone()),
                    ("kernel_release", m.kernel_release.clone()),
                ],
                Value::Number(1.0),
            )],
        },
        Family {
            name: "tracer_start_time_seconds",
            help: "when tracing started, seconds since the Unix epoch",
            kind: GAUGE,
            samples: vec![(vec![], Value::Number(m.start_unix_s))],
        },
        block(
            "tracer_block_requests_total",
            "completed block requests (JSON block[].count)",
            COUNTER,
            &|s| Value::Number(s.count as f64),
        ),
        block(
            "tracer_block_bytes_total",
            "bytes of completed block requests (block[].bytes)",
            COUNTER,
            &|s| Value::Number(s.bytes as f64),
        ),
        block(
            "tracer_block_errors_total",
            "block requests completed with an error (block[].errors)",
            COUNTER,
            &|s| Value::Number(s.errors as f64),
        ),
        block(
            "tracer_block_latency_nanoseconds",
            "block request latency, issue (or insert with --queued) to completion (block[].histogram)",
            HISTOGRAM,
            &|s| Value::Histogram(&s.hist),
        ),
        Family {
            name: "tracer_stall_latency_nanoseconds",
            help: "reclaim and compaction stalls by kind (reclaim[], compaction.stalls)",
            kind: HISTOGRAM,
            samples: m
                .stalls
                .iter()
                .map(|(kind, s)| (vec![("kind", kind.clone())], Value::Histogram(&s.hist)))
                .collect(),
        },
        Family {
            name: "tracer_stalls_total",
            help: "reclaim and compaction stalls by kind and memory cgroup (reclaim[].cgroups[].count)",
            kind: COUNTER,
            samples: m
                .stalls_by_cgroup
                .iter()
                .map(|((kind, cgroup), (count, _))| {
                    number(vec![("kind", kind.clone()), ("cgroup", cgroup.clone())], *count)
                })
                .collect(),
        },
        Family {
            name: "tracer_stall_seconds_total",
            help: "time stalled by kind and memory cgroup (reclaim[].cgroups[].total_ms)",
            kind: COUNTER,
            samples: m
                .stalls_by_cgroup
                .iter()
                .map(|((kind, cgroup), (_, ns))| {
                    (
                        vec![("kind", kind.clone()), ("cgroup", cgroup.clone())],
                        Value::Number(*ns as f64 / 1e9),
                    )
                })
                .collect(),
        },
        Family {
            name: "tracer_alloc_failures_total",
            help: "page allocation failures by order and whether direct reclaim was allowed (alloc_failures[])",
            kind: COUNTER,
            samples: m
                .alloc_failures
                .iter()
                .map(|((order, can_reclaim), n)| {
                    number(vec![("order", order.to_string()), ("can_reclaim", can_reclaim.to_string())], *n)
                })
                .collect(),
        },
        Family {
            name: "tracer_oom_kills_total",
            help: "OOM kills by the victim's memory cgroup (oom_kills[])",
            kind: COUNTER,
            samples: m
                .oom_kills
                .iter()
                .map(|(cgroup, n)| number(vec![("cgroup", cgroup.clone())], *n))
                .collect(),
        },
        Family {
            name: "tracer_thp_splits_total",
            help: "transparent huge page PMD splits (thp.splits)",
            kind: COUNTER,
            samples: vec![number(vec![], m.thp_splits)],
        },
    ];
    let lost_total: u64 = m.lost.values().sum();
    let mut lost = vec![number(vec![("reason", "all".into())], lost_total)];
    lost.extend(m.lost.iter().map(|(reason, n)| number(vec![("reason", reason.clone())], *n)));
    out.push(Family {
        name: "tracer_lost_events",
        help: "events the kernel side could not record, by reason (lost[]); never dropped silently",
        kind: COUNTER,
        samples: lost,
    });
    out
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn label_text(labels: &[(&str, String)], extra: Option<(&str, String)>) -> String {
    let parts: Vec<String> =
        labels.iter().cloned().chain(extra).map(|(k, v)| format!("{k}=\"{}\"", escape(&v))).collect();
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

/// Cumulative counts at each classic edge, and the total.
fn classic_buckets(h: &LatencyHist) -> (Vec<(u64, u64)>, u64) {
    let mut edges = Vec::new();
    let mut slots = h.buckets.iter().enumerate().peekable();
    let mut cumulative = 0;
    for edge in classic_edges() {
        while let Some(&(slot, count)) = slots.peek() {
            if tracer_common::hist::slot_values(slot).1 > edge {
                break;
            }
            cumulative += count;
            slots.next();
        }
        edges.push((edge, cumulative));
    }
    (edges, h.buckets.iter().sum())
}

/// The text exposition format, version 0.0.4.
pub fn text(m: &Metrics) -> String {
    let mut out = String::new();
    for family in families(m) {
        let kind = match family.kind {
            COUNTER => "counter",
            GAUGE => "gauge",
            _ => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for (labels, value) in &family.samples {
            match value {
                Value::Number(v) => {
                    let _ = writeln!(out, "{}{} {v}", family.name, label_text(labels, None));
                }
                Value::Histogram(h) => {
                    let (edges, total) = classic_buckets(h);
                    for (edge, cumulative) in edges {
                        let le = Some(("le", edge.to_string()));
                        let _ =
                            writeln!(out, "{}_bucket{} {cumulative}", family.name, label_text(labels, le));
                    }
                    let inf = Some(("le", "+Inf".to_string()));
                    let _ = writeln!(out, "{}_bucket{} {total}", family.name, label_text(labels, inf));
                    let _ = writeln!(out, "{}_sum{} {}", family.name, label_text(labels, None), h.sum_ns);
                    let _ = writeln!(out, "{}_count{} {total}", family.name, label_text(labels, None));
                }
            }
        }
    }
    out
}

fn histogram_message(h: &LatencyHist) -> pb::Histogram {
    let (edges, total) = classic_buckets(h);
    let sparse = SparseBuckets::of(h);
    let mut spans: Vec<pb::BucketSpan> = sparse
        .spans
        .iter()
        .map(|&(offset, length)| pb::BucketSpan { offset: Some(offset), length: Some(length) })
        .collect();
    if spans.is_empty() {
        // Without it, an empty native histogram reads as a classic one.
        spans.push(pb::BucketSpan { offset: Some(0), length: Some(0) });
    }
    pb::Histogram {
        sample_count: Some(total),
        sample_sum: Some(h.sum_ns as f64),
        bucket: edges
            .into_iter()
            .map(|(edge, cumulative)| pb::Bucket {
                cumulative_count: Some(cumulative),
                upper_bound: Some(edge as f64),
            })
            .collect(),
        schema: Some(tracer_common::hist::SCHEMA as i32),
        zero_threshold: Some(0.0),
        zero_count: Some(sparse.zero_count),
        positive_span: spans,
        positive_delta: sparse.deltas(),
    }
}

/// Every family as protobuf messages.
pub fn protobuf_families(m: &Metrics) -> Vec<MetricFamily> {
    families(m)
        .into_iter()
        .map(|family| MetricFamily {
            name: Some(family.name.into()),
            help: Some(family.help.into()),
            r#type: Some(family.kind),
            metric: family
                .samples
                .iter()
                .map(|(labels, value)| pb::Metric {
                    label: labels
                        .iter()
                        .map(|(k, v)| pb::LabelPair { name: Some((*k).into()), value: Some(v.clone()) })
                        .collect(),
                    gauge: match value {
                        Value::Number(v) if family.kind == GAUGE => Some(pb::Gauge { value: Some(*v) }),
                        _ => None,
                    },
                    counter: match value {
                        Value::Number(v) if family.kind == COUNTER => Some(pb::Counter { value: Some(*v) }),
                        _ => None,
                    },
                    histogram: match value {
                        Value::Histogram(h) => Some(histogram_message(h)),
                        Value::Number(_) => None,
                    },
                })
                .collect(),
        })
        .collect()
}

/// The protobuf exposition: length-delimited `MetricFamily` messages.
pub fn protobuf(m: &Metrics) -> Vec<u8> {
    let mut out = Vec::new();
    for family in protobuf_families(m) {
        family.encode_length_delimited(&mut out).expect("a Vec grows");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        let mut m = Metrics::new("host1", "6.1.0-test", 1.0);
        let series = m.block.entry(("loop7".into(), "read".into())).or_default();
        for v in [0u64, 1000, 1024, 1025, 3000, 1 << 20] {
            series.hist.record(v);
        }
        series.count = 6;
        series.bytes = 6 * 4096;
        m.alloc_failures.insert((3, true), 12);
        m.oom_kills.insert("/a\"b".into(), 1);
        m.lost.insert("ringbuf_full".into(), 2);
        m
    }

    #[test]
    fn text_has_classic_buckets_on_tracer_edges() {
        let text = text(&metrics());
        assert!(text.contains("tracer_block_requests_total{device=\"loop7\",op=\"read\"} 6\n"), "{text}");
        // 0, 1000 and 1024 are <= 1024 ns (upper-inclusive); 1025 is not.
        assert!(text.contains(
            "tracer_block_latency_nanoseconds_bucket{device=\"loop7\",op=\"read\",le=\"1024\"} 3\n"
        ));
        assert!(text.contains("le=\"2048\"} 4\n"));
        assert!(text.contains("le=\"4096\"} 5\n"));
        assert!(text.contains("le=\"+Inf\"} 6\n"));
        assert!(text.contains("tracer_block_latency_nanoseconds_count{device=\"loop7\",op=\"read\"} 6\n"));
        assert!(text.contains("tracer_oom_kills_total{cgroup=\"/a\\\"b\"} 1\n"), "labels escaped");
        assert!(text.contains("tracer_lost_events{reason=\"all\"} 2\n"));
        assert!(text.contains("# TYPE tracer_block_latency_nanoseconds histogram\n"));
    }

    #[test]
    fn protobuf_carries_the_native_histogram_exactly() {
        let bytes = protobuf(&metrics());
        let mut rest = &bytes[..];
        let mut found = None;
        while !rest.is_empty() {
            let family = MetricFamily::decode_length_delimited(&mut rest).unwrap();
            if family.name.as_deref() == Some("tracer_block_latency_nanoseconds") {
                found = Some(family);
            }
        }
        let family = found.expect("the latency family");
        assert_eq!(family.r#type, Some(HISTOGRAM));
        let h = family.metric[0].histogram.as_ref().unwrap();
        assert_eq!(h.schema, Some(4));
        assert_eq!(h.zero_count, Some(1));
        assert_eq!(h.sample_count, Some(6));
        // Undo spans and deltas: indexes and counts must be tracer's.
        let mut index = 0;
        let mut count = 0i64;
        let mut decoded = Vec::new();
        let mut deltas = h.positive_delta.iter();
        for span in &h.positive_span {
            index += span.offset.unwrap();
            for _ in 0..span.length.unwrap() {
                count += deltas.next().unwrap();
                decoded.push((index, count as u64));
                index += 1;
            }
        }
        let mut expected = Vec::new();
        let series = &metrics().block[&("loop7".to_string(), "read".to_string())];
        for (slot, &c) in series.hist.buckets.iter().enumerate() {
            if let (Some(i), true) = (tracer_common::hist::schema_index(slot), c > 0) {
                expected.push((i, c));
            }
        }
        assert_eq!(decoded, expected);
    }

    /// The Grafana dashboard in docs/ queries only metrics tracer exports.
    #[test]
    fn the_dashboard_uses_exported_names() {
        let dashboard = include_str!("../../../docs/grafana/tracer.json");
        let exported: Vec<String> = families(&metrics()).iter().map(|f| f.name.to_string()).collect();
        let mut used = 0;
        for (at, _) in dashboard.match_indices("tracer_") {
            let name: String =
                dashboard[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(exported.contains(&name), "the dashboard queries {name}, which tracer does not export");
            used += 1;
        }
        assert!(used >= 7, "the dashboard queries tracer's metrics");
    }
}
