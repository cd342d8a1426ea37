//! Chrome trace-event JSON, which ui.perfetto.dev and chrome://tracing open:
//! stalls, slow I/Os, OOM kills and allocation failures on one time line,
//! with the per-interval counts as counter tracks below them.
//!
//! - Each reclaim or compaction stall is a complete event (`"ph":"X"`) on
//!   the thread that stalled (`pid` = its process, `tid` = the thread).
//! - Each slow block request is a complete event on a track of its device,
//!   from its start (`at_s - latency`) to its completion. Requests overlap
//!   on a busy disk, and slices on one track must nest, so a device has as
//!   many lanes (threads) as requests overlapped.
//! - OOM kills and allocation failures (at their first occurrence) are
//!   global instant events (`"ph":"i"`, `"s":"g"`).
//! - The timeline's counts per interval are counter events (`"ph":"C"`), one
//!   per interval start, and a 0 at the end of the last interval so it has
//!   a width. Series that are 0 throughout are left out.
//!
//! `ts` and `dur` are microseconds since tracing started (the model's
//! seconds × 10⁶), kept to the nanosecond, so fractional. Processes and
//! threads are named by metadata events with their `comm`; viewers add the
//! pid (Perfetto shows `comm 1234`, chrome://tracing `comm (pid 1234)`).
//! Devices and counters are on synthetic processes numbered from
//! [`SYNTHETIC_PID_BASE`], above any Linux pid.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde_json::{Map, Value, json};

use crate::{
    model::{Frame, Report, TimelinePoint},
    symbolize::frame_labels,
};

/// Linux pids are below `PID_MAX_LIMIT` (2²², 4194304), so synthetic
/// processes from here on never collide with a real one.
pub const SYNTHETIC_PID_BASE: u64 = 1 << 22;
/// The process that holds the counter tracks.
pub const COUNTERS_PID: u64 = SYNTHETIC_PID_BASE;
/// Device number `i`, in name order, is process `DEVICES_PID_BASE + i`.
pub const DEVICES_PID_BASE: u64 = SYNTHETIC_PID_BASE + 1;

/// The trace as one line of JSON, newline-terminated.
pub fn render(report: &Report) -> Result<String> {
    let mut trace = Trace::default();
    trace.stalls(report);
    trace.slow_ios(report);
    trace.oom_kills(report)?;
    trace.alloc_failures(report)?;
    trace.counters(&report.timeline);
    if let Some(t) = &report.trigger {
        let name = format!("trigger: {}", t.trigger);
        trace.global_instant(&name, "watch", t.at_s * 1e6, json!({ "what": t.what }));
    }

    let mut events: Vec<Value> = Vec::new();
    for (pid, name) in &trace.processes {
        events.push(json!({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}}));
    }
    for ((pid, tid), name) in &trace.threads {
        events
            .push(json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}));
    }
    trace.timed.sort_by(|a, b| {
        a.ts.total_cmp(&b.ts)
            .then(a.pid.cmp(&b.pid))
            .then(a.tid.cmp(&b.tid))
            // Enclosing slices first.
            .then(b.dur.total_cmp(&a.dur))
    });
    events.extend(trace.timed.into_iter().map(|t| t.event));

    let w = &report.window;
    let document = json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "metadata": {
            "tool": report.tool,
            "version": report.version,
            "hostname": report.host.hostname,
            "kernel_release": report.host.kernel_release,
            "start_unix_s": w.start_unix_s,
            "offset_s": w.offset_s,
            "duration_s": w.duration_s,
            "time_origin": "ts: microseconds since tracing started",
            "stalls_dropped": report.stalls_dropped,
            "slow_ios_dropped": report.slow_ios_dropped,
            "lost_events": report.lost_events,
            "warnings": report.warnings,
        },
    });
    Ok(serde_json::to_string(&document)? + "\n")
}

/// An event with a time, and what it sorts by.
struct Timed {
    ts: f64,
    pid: u64,
    tid: u64,
    dur: f64,
    event: Value,
}

#[derive(Default)]
struct Trace {
    processes: BTreeMap<u64, String>,
    threads: BTreeMap<(u64, u64), String>,
    timed: Vec<Timed>,
}

impl Trace {
    /// A slice on thread `tid` of process `pid`.
    fn complete(&mut self, (pid, tid): (u64, u64), name: &str, cat: &str, ts: f64, dur: f64, args: Value) {
        let event = json!({
            "ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args,
        });
        self.timed.push(Timed { ts, pid, tid, dur, event });
    }

    fn global_instant(&mut self, name: &str, cat: &str, ts: f64, args: Value) {
        let event = json!({"ph": "i", "s": "g", "name": name, "cat": cat, "ts": ts, "args": args});
        self.timed.push(Timed { ts, pid: 0, tid: 0, dur: 0.0, event });
    }

    fn stalls(&mut self, report: &Report) {
        for stall in &report.stalls {
            let (pid, tid) = (u64::from(stall.tgid), u64::from(stall.pid));
            self.threads.entry((pid, tid)).or_insert_with(|| stall.comm.clone());
            // A process is named after its main thread when that stalled,
            // else after the first of its threads that did.
            if stall.pid == stall.tgid {
                self.processes.insert(pid, stall.comm.clone());
            } else {
                self.processes.entry(pid).or_insert_with(|| stall.comm.clone());
            }
            let (name, cat) = match stall.kind.as_str() {
                "direct" => ("direct reclaim", "reclaim"),
                "memcg" => ("memcg reclaim", "reclaim"),
                "compaction" => ("compaction", "compaction"),
                other => (other, "stall"),
            };
            let args = json!({
                "order": stall.order,
                "cgroup": stall.cgroup,
                "result": stall.result,
                "comm": stall.comm,
                "duration_ms": stall.duration_ms,
            });
            self.complete((pid, tid), name, cat, us(stall.start_s), ms_to_us(stall.duration_ms), args);
        }
    }

    fn slow_ios(&mut self, report: &Report) {
        let devices: BTreeSet<&str> = report.slow_ios.iter().map(|io| io.device.as_str()).collect();
        let device_pid: BTreeMap<&str, u64> =
            devices.iter().zip(DEVICES_PID_BASE..).map(|(device, pid)| (*device, pid)).collect();
        for (device, pid) in &device_pid {
            self.processes.insert(*pid, format!("disk {device}"));
        }
        // (start, duration, end) in µs; in order of start for the lanes.
        let mut ios: Vec<_> = report
            .slow_ios
            .iter()
            .map(|io| {
                let (end, dur) = (us(io.at_s), ms_to_us(io.latency_us / 1000.0));
                (end - dur, dur, end, io)
            })
            .collect();
        ios.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Per device, when each lane is free again.
        let mut lanes: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (start, dur, end, io) in ios {
            let pid = device_pid[io.device.as_str()];
            let free_at = lanes.entry(io.device.as_str()).or_default();
            let lane = match free_at.iter().position(|&free| free <= start) {
                Some(lane) => lane,
                None => {
                    free_at.push(end);
                    free_at.len() - 1
                }
            };
            free_at[lane] = end;
            let tid = lane as u64 + 1;
            self.threads.entry((pid, tid)).or_insert_with(|| format!("slow I/O, lane {tid}"));
            let args = json!({
                "device": io.device,
                "op": io.op,
                "bytes": io.bytes,
                "sector": io.sector,
                "latency_us": io.latency_us,
                "pid": io.pid,
                "comm": io.comm,
            });
            self.complete((pid, tid), &io.op, "block", start, dur, args);
        }
    }

    fn oom_kills(&mut self, report: &Report) -> Result<()> {
        for kill in &report.oom_kills {
            let mut args = object(serde_json::to_value(kill)?);
            // The time is `ts`; stacks as labels rather than frames.
            args.remove("at_s");
            args.insert("trigger_kernel_stack".into(), stack_labels(&kill.trigger_kernel_stack).into());
            args.insert("trigger_user_stack".into(), stack_labels(&kill.trigger_user_stack).into());
            let name = format!("OOM kill: {} ({})", kill.victim_comm, kill.victim_pid);
            self.global_instant(&name, "oom", us(kill.at_s), Value::Object(args));
        }
        Ok(())
    }

    fn alloc_failures(&mut self, report: &Report) -> Result<()> {
        for failure in &report.alloc_failures {
            let mut args = object(serde_json::to_value(failure)?);
            args.remove("first_seen_s");
            args.insert("kernel_stack".into(), stack_labels(&failure.kernel_stack).into());
            args.insert("user_stack".into(), stack_labels(&failure.user_stack).into());
            let name = format!("alloc failure: order {}", failure.order);
            self.global_instant(&name, "alloc", us(failure.first_seen_s), Value::Object(args));
        }
        Ok(())
    }

    fn counters(&mut self, timeline: &[TimelinePoint]) {
        type Series = (&'static str, &'static str, fn(&TimelinePoint) -> f64);
        const SERIES: [Series; 10] = [
            ("block p99 latency", "us", |p| p.block_p99_us),
            ("block max latency", "us", |p| p.block_max_us),
            ("block requests", "per interval", |p| p.block_requests as f64),
            ("direct reclaim stall time", "ms per interval", |p| p.direct_reclaim.total_ms),
            ("memcg reclaim stall time", "ms per interval", |p| p.memcg_reclaim.total_ms),
            ("compaction stall time", "ms per interval", |p| p.compaction.total_ms),
            ("THP splits", "per interval", |p| p.thp_splits as f64),
            ("kswapd wakes", "per interval", |p| p.kswapd_wakes as f64),
            ("alloc failures", "per interval", |p| p.alloc_failures as f64),
            ("OOM kills", "per interval", |p| p.oom_kills as f64),
        ];
        let Some(last) = timeline.last() else { return };
        let end = us(last.offset_s + last.duration_s);
        let mut any = false;
        for (name, unit, value) in SERIES {
            if timeline.iter().all(|p| value(p) == 0.0) {
                continue;
            }
            any = true;
            let samples = timeline.iter().map(|p| (us(p.offset_s), value(p))).chain([(end, 0.0)]);
            for (ts, v) in samples {
                let event =
                    json!({"ph": "C", "name": name, "ts": ts, "pid": COUNTERS_PID, "args": {unit: v}});
                self.timed.push(Timed { ts, pid: COUNTERS_PID, tid: 0, dur: 0.0, event });
            }
        }
        if any {
            self.processes.insert(COUNTERS_PID, "counters per interval".into());
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Frame labels leaf first (inlined functions innermost first), as in the
/// text report.
fn stack_labels(frames: &[Frame]) -> Vec<String> {
    frames.iter().flat_map(|f| frame_labels(f).into_iter().rev()).collect()
}

/// Seconds to microseconds, to the nanosecond.
fn us(seconds: f64) -> f64 {
    (seconds * 1e9).round() / 1e3
}

/// Milliseconds to microseconds, to the nanosecond.
fn ms_to_us(ms: f64) -> f64 {
    (ms * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllocFailure, OomKill, SlowIo, Stall, StallBrief};

    fn parse(report: &Report) -> Value {
        let text = render(report).unwrap();
        assert!(text.ends_with('\n'));
        serde_json::from_str(&text).unwrap()
    }

    fn events(trace: &Value) -> &Vec<Value> {
        trace["traceEvents"].as_array().unwrap()
    }

    fn with<'a>(trace: &'a Value, ph: &str) -> Vec<&'a Value> {
        events(trace).iter().filter(|e| e["ph"] == ph).collect()
    }

    /// The name a metadata event gives to `pid` (process) or `pid`/`tid`.
    fn meta_name(trace: &Value, what: &str, pid: u64, tid: Option<u64>) -> Option<String> {
        events(trace)
            .iter()
            .find(|e| {
                e["ph"] == "M" && e["name"] == what && e["pid"] == pid && tid.is_none_or(|t| e["tid"] == t)
            })
            .map(|e| e["args"]["name"].as_str().unwrap().to_string())
    }

    fn stall(kind: &str, start_s: f64, duration_ms: f64, pid: u32, tgid: u32, comm: &str) -> Stall {
        Stall {
            kind: kind.into(),
            start_s,
            duration_ms,
            pid,
            tgid,
            comm: comm.into(),
            cgroup: "/system.slice/db.service".into(),
            order: 3,
            result: "12 pages reclaimed".into(),
        }
    }

    fn slow_io(device: &str, at_s: f64, latency_us: f64) -> SlowIo {
        SlowIo {
            at_s,
            latency_us,
            device: device.into(),
            op: "write".into(),
            bytes: 4096,
            sector: Some(2048),
            pid: 77,
            comm: "kworker/u8:1".into(),
        }
    }

    #[test]
    fn empty_report_is_a_valid_empty_trace() {
        let trace = parse(&Report::default());
        assert!(events(&trace).is_empty());
        assert_eq!(trace["displayTimeUnit"], "ms");
        assert!(trace["metadata"].is_object());
    }

    #[test]
    fn stalls_are_complete_events_on_their_threads() {
        let report = Report {
            stalls: vec![
                stall("direct", 1.5, 2.25, 101, 100, "db-worker"),
                stall("compaction", 0.25, 0.5, 100, 100, "db"),
                stall("memcg", 3.0, 1.0, 200, 200, "cron"),
            ],
            ..Report::default()
        };
        let trace = parse(&report);
        let slices = with(&trace, "X");
        assert_eq!(slices.len(), 3);
        // Sorted by time.
        let compaction = slices[0];
        assert_eq!(compaction["name"], "compaction");
        assert_eq!(compaction["cat"], "compaction");
        assert_eq!(compaction["ts"], 250_000.0);
        assert_eq!(compaction["dur"], 500.0);
        let direct = slices[1];
        assert_eq!(direct["name"], "direct reclaim");
        assert_eq!(direct["cat"], "reclaim");
        assert_eq!(direct["ts"], 1_500_000.0);
        assert_eq!(direct["dur"], 2250.0);
        assert_eq!((direct["pid"].as_u64(), direct["tid"].as_u64()), (Some(100), Some(101)));
        assert_eq!(direct["args"]["order"], 3);
        assert_eq!(direct["args"]["cgroup"], "/system.slice/db.service");
        assert_eq!(direct["args"]["result"], "12 pages reclaimed");
        assert_eq!(slices[2]["name"], "memcg reclaim");
        assert_eq!(slices[2]["ts"], 3_000_000.0);

        // The process is named after its main thread, though a worker
        // thread's stall came first in the model.
        assert_eq!(meta_name(&trace, "process_name", 100, None).as_deref(), Some("db"));
        assert_eq!(meta_name(&trace, "thread_name", 100, Some(101)).as_deref(), Some("db-worker"));
        assert_eq!(meta_name(&trace, "thread_name", 100, Some(100)).as_deref(), Some("db"));
        assert_eq!(meta_name(&trace, "process_name", 200, None).as_deref(), Some("cron"));
        // Metadata first.
        let first_timed = events(&trace).iter().position(|e| e["ph"] != "M").unwrap();
        assert!(events(&trace)[first_timed..].iter().all(|e| e["ph"] != "M"));
    }

    #[test]
    fn slow_ios_are_on_device_tracks_with_lanes_for_overlaps() {
        let report = Report {
            // Slowest first, as in the model.
            slow_ios: vec![
                slow_io("sdb", 2.0, 50_000.0),
                slow_io("sda", 1.0, 30_000.0),
                slow_io("sda", 1.01, 20_000.0),
                slow_io("sda", 1.5, 10_000.0),
            ],
            ..Report::default()
        };
        let trace = parse(&report);
        let sda = DEVICES_PID_BASE;
        let sdb = DEVICES_PID_BASE + 1;
        assert!(sda > 4_194_304, "synthetic pids must be above PID_MAX_LIMIT");
        assert_eq!(meta_name(&trace, "process_name", sda, None).as_deref(), Some("disk sda"));
        assert_eq!(meta_name(&trace, "process_name", sdb, None).as_deref(), Some("disk sdb"));
        let slices = with(&trace, "X");
        let got: Vec<(f64, f64, u64, u64)> = slices
            .iter()
            .map(|e| {
                (
                    e["ts"].as_f64().unwrap(),
                    e["dur"].as_f64().unwrap(),
                    e["pid"].as_u64().unwrap(),
                    e["tid"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                // 0.970 s - 1.000 s, then 0.990 s - 1.010 s overlaps it:
                // second lane. 1.490 s - 1.500 s fits the first lane again.
                (970_000.0, 30_000.0, sda, 1),
                (990_000.0, 20_000.0, sda, 2),
                (1_490_000.0, 10_000.0, sda, 1),
                (1_950_000.0, 50_000.0, sdb, 1),
            ]
        );
        assert_eq!(slices[0]["name"], "write");
        assert_eq!(slices[0]["cat"], "block");
        assert_eq!(slices[0]["args"]["comm"], "kworker/u8:1");
        assert_eq!(slices[0]["args"]["latency_us"], 30_000.0);
        assert_eq!(slices[0]["args"]["bytes"], 4096);
        assert!(meta_name(&trace, "thread_name", sda, Some(2)).is_some());
    }

    #[test]
    fn oom_kills_and_alloc_failures_are_global_instants() {
        let report = Report {
            oom_kills: vec![OomKill {
                at_s: 4.5,
                victim_pid: 300,
                victim_comm: "apache2".into(),
                anon_rss_kb: 123_456,
                trigger_pid: 301,
                trigger_kernel_stack: vec![Frame {
                    symbol: Some("out_of_memory".into()),
                    offset: Some(0x2a),
                    ..Frame::default()
                }],
                ..OomKill::default()
            }],
            alloc_failures: vec![AllocFailure {
                count: 7,
                order: 2,
                gfp: "GFP_ATOMIC|__GFP_NOWARN".into(),
                first_seen_s: 0.125,
                last_seen_s: 3.0,
                comm: "swapper/0".into(),
                ..AllocFailure::default()
            }],
            ..Report::default()
        };
        let trace = parse(&report);
        let instants = with(&trace, "i");
        assert_eq!(instants.len(), 2);
        assert!(instants.iter().all(|e| e["s"] == "g"));
        let failure = instants[0];
        assert_eq!(failure["name"], "alloc failure: order 2");
        assert_eq!(failure["ts"], 125_000.0);
        assert_eq!(failure["args"]["count"], 7);
        assert_eq!(failure["args"]["order"], 2);
        assert_eq!(failure["args"]["gfp"], "GFP_ATOMIC|__GFP_NOWARN");
        assert_eq!(failure["args"]["last_seen_s"], 3.0);
        let kill = instants[1];
        assert_eq!(kill["name"], "OOM kill: apache2 (300)");
        assert_eq!(kill["ts"], 4_500_000.0);
        assert_eq!(kill["args"]["anon_rss_kb"], 123_456);
        assert_eq!(kill["args"]["trigger_pid"], 301);
        assert_eq!(kill["args"]["trigger_kernel_stack"], json!(["out_of_memory+0x2a"]));
    }

    #[test]
    fn counters_come_from_the_timeline() {
        let point = |offset_s: f64, p99: f64, reclaim_ms: f64, splits: u64| TimelinePoint {
            offset_s,
            duration_s: 1.0,
            block_p99_us: p99,
            direct_reclaim: StallBrief { count: 1, total_ms: reclaim_ms, max_ms: reclaim_ms },
            thp_splits: splits,
            ..TimelinePoint::default()
        };
        let report = Report {
            timeline: vec![point(0.0, 800.0, 0.0, 0), point(1.0, 25_000.0, 40.5, 12)],
            ..Report::default()
        };
        let trace = parse(&report);
        let counters = with(&trace, "C");
        assert!(counters.iter().all(|c| c["pid"] == COUNTERS_PID));
        let series = |name: &str, unit: &str| -> Vec<(f64, f64)> {
            counters
                .iter()
                .filter(|c| c["name"] == name)
                .map(|c| (c["ts"].as_f64().unwrap(), c["args"][unit].as_f64().unwrap()))
                .collect()
        };
        assert_eq!(series("block p99 latency", "us"), vec![(0.0, 800.0), (1e6, 25_000.0), (2e6, 0.0)]);
        assert_eq!(
            series("direct reclaim stall time", "ms per interval"),
            vec![(0.0, 0.0), (1e6, 40.5), (2e6, 0.0)]
        );
        assert_eq!(series("THP splits", "per interval"), vec![(0.0, 0.0), (1e6, 12.0), (2e6, 0.0)]);
        // Zero throughout: no track.
        assert!(series("OOM kills", "per interval").is_empty());
        assert!(counters.iter().all(|c| c["name"] != "memcg reclaim stall time"));
        assert_eq!(
            meta_name(&trace, "process_name", COUNTERS_PID, None).as_deref(),
            Some("counters per interval")
        );
    }
}
