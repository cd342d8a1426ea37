//! Prometheus export against a real Prometheus server (Debian's package,
//! installed by `cargo xtask setup`), started here on loopback with native
//! histograms enabled, scraping tracer every second while the test's own
//! loop device does I/O.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{LoopDevice, Tracer, require_root, run_helper};

const HELPER: &str = env!("CARGO_BIN_EXE_tracer-test-helper");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Prometheus server of the test's own, killed and its data removed on
/// drop (also when the test fails).
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-test-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: tracer\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=native-histograms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus (Debian's package; `cargo xtask setup` installs it)");
        let prometheus = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(port, "/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let (status, body) = get(self.port, &format!("/api/v1/query?query={}", url_encode(promql)))
            .expect("querying prometheus");
        assert_eq!(status, 200, "{promql}: {body}");
        let reply: Value = serde_json::from_str(&body).unwrap();
        reply["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// A query's single float value, if it has one.
    fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        result.first().and_then(|r| r["value"][1].as_str()).and_then(|v| v.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls until `f` gives a value equal to the previous poll's (Prometheus
/// has scraped the last interval) or the deadline passes.
fn settled(mut f: impl FnMut() -> Option<f64>) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = f();
        if now.is_some() && now == last {
            return now;
        }
        if Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn prometheus_counts_equal_the_block_stat_and_native_p99_agrees() {
    require_root();
    let disk = LoopDevice::new("export-prom", 64 << 20);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let tracer = Tracer::start(&[
        "trace",
        "block",
        "--disk",
        &disk.name,
        "--duration",
        "120s",
        "--interval",
        "1s",
        "--json",
        "--metrics",
        &metrics_addr,
        // Exact counts: see NO_SLOW_IO in tests/block.rs.
        "--slow-io",
        "off",
    ]);
    let prometheus = Prometheus::start(&metrics_addr);
    let requests = format!("sum(tracer_block_requests_total{{device=\"{}\"}})", disk.name);
    // Nothing yet on the device: the series exists once tracer saw I/O, so
    // the counter's value before the workload is 0 (absent).
    let before_value = prometheus.scalar(&requests).unwrap_or(0.0);
    let before = disk.stat();
    run_helper(HELPER, &["direct-io", &disk.device, "3000", "1000", "50", "10"]);
    let delta = disk.stat().since(&before);
    let after_value = settled(|| prometheus.scalar(&requests)).expect("prometheus scraped tracer's counter");
    assert_eq!(
        (after_value - before_value) as u64,
        delta.total(),
        "counter increase in Prometheus against /sys/block/{}/stat",
        disk.name
    );

    // The latency histogram arrived as a native histogram, with tracer's
    // buckets.
    let series = format!("tracer_block_latency_nanoseconds{{device=\"{}\",op=\"read\"}}", disk.name);
    let native = prometheus.query(&series);
    assert!(
        native.first().is_some_and(|r| r.get("histogram").is_some()),
        "not a native histogram: {native:?}"
    );
    let prom_p99_ns = prometheus
        .scalar(&format!("histogram_quantile(0.99, {series})"))
        .expect("histogram_quantile over the native histogram");

    let done = tracer.stop();
    assert!(done.status.success(), "tracer failed: {}", done.stderr);
    let lines = done.json_lines();
    let whole = lines.last().expect("the whole-run report");
    let read = whole["block"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device"] == disk.name.as_str() && r["op"] == "read")
        .expect("a read row");
    assert_eq!(read["count"].as_u64().unwrap(), delta.reads);
    let tracer_p99_ns = read["latency_us"]["p99"].as_f64().unwrap() * 1000.0;
    // Both fall in the same bucket: a factor of at most 2^(1/16) apart.
    let buckets_apart = (prom_p99_ns / tracer_p99_ns).log2().abs() * 16.0;
    assert!(
        buckets_apart <= 1.0 + 1e-6,
        "Prometheus p99 {prom_p99_ns} ns vs tracer's {tracer_p99_ns} ns: {buckets_apart} buckets apart"
    );
}

/// An OTLP/HTTP receiver of the test's own: the bodies of the POSTs it got.
fn otlp_receiver() -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 65536];
            // Read the head, then exactly Content-Length bytes of body.
            let (head_end, length) = loop {
                let Ok(n) = stream.read(&mut buf) else { break (0, 0) };
                if n == 0 {
                    break (0, 0);
                }
                request.extend_from_slice(&buf[..n]);
                if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (end + 4, length);
                }
            };
            while request.len() < head_end + length {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if head_end > 0 && tx.send(request[head_end..].to_vec()).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// What tracer pushes decodes with the official OpenTelemetry protobuf
/// definitions, and its exponential histograms carry tracer's own bucket
/// counts (those of the final JSON report) at scale 4.
#[test]
fn otlp_push_carries_tracers_buckets() {
    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest, common::v1::any_value::Value as AnyValue,
        metrics::v1::metric::Data,
    };
    use prost::Message as _;

    require_root();
    let disk = LoopDevice::new("export-otlp", 64 << 20);
    let (addr, bodies) = otlp_receiver();
    let url = format!("http://{addr}/v1/metrics");
    let tracer = Tracer::start(&[
        "trace",
        "block",
        "--disk",
        &disk.name,
        "--duration",
        "120s",
        "--interval",
        "1s",
        "--json",
        "--slow-io",
        "off",
        "--otlp",
        &url,
    ]);
    run_helper(HELPER, &["direct-io", &disk.device, "2000", "0", "0", "0"]);
    // Two more intervals: the last push holds every request.
    std::thread::sleep(Duration::from_millis(2500));
    let done = tracer.stop();
    assert!(done.status.success(), "tracer failed: {}", done.stderr);
    let whole = done.json_lines().pop().expect("the whole-run report");
    let read = whole["block"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device"] == disk.name.as_str() && r["op"] == "read")
        .expect("a read row")
        .clone();

    let last = bodies.try_iter().last().expect("tracer pushed OTLP requests");
    let request = ExportMetricsServiceRequest::decode(&last[..]).expect("an OTLP metrics request");
    let resource = request.resource_metrics[0].resource.as_ref().unwrap();
    let attribute = |key: &str| {
        resource.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value.as_ref()?.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
    };
    assert_eq!(attribute("host.name").as_deref(), Some(whole["host"]["hostname"].as_str().unwrap()));
    assert_eq!(attribute("os.version").as_deref(), Some(whole["host"]["kernel_release"].as_str().unwrap()));
    let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
    let latency = metrics.iter().find(|m| m.name == "tracer.block.latency").expect("the latency metric");
    let Some(Data::ExponentialHistogram(h)) = &latency.data else { panic!("not exponential: {latency:?}") };
    let point = h
        .data_points
        .iter()
        .find(|p| {
            let has = |k: &str, v: &str| {
                p.attributes.iter().any(|kv| {
                    kv.key == k
                        && matches!(&kv.value.as_ref().and_then(|x| x.value.clone()), Some(AnyValue::StringValue(s)) if s == v)
                })
            };
            has("device", &disk.name) && has("op", "read")
        })
        .expect("a data point for the read row");
    assert_eq!(point.scale, 4);
    assert_eq!(point.count, read["count"].as_u64().unwrap());
    // OTel bucket i holds (2^(i/16), 2^((i+1)/16)]: tracer's index i+1.
    let positive = point.positive.as_ref().unwrap();
    let mut otel: Vec<(i64, u64)> = positive
        .bucket_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| (positive.offset as i64 + i as i64 + 1, *c))
        .collect();
    otel.sort();
    let mut tracer_buckets: Vec<(i64, u64)> = read["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["index"].as_i64().expect("buckets carry their index"), b["count"].as_u64().unwrap()))
        .collect();
    tracer_buckets.sort();
    assert_eq!(otel, tracer_buckets);
}
