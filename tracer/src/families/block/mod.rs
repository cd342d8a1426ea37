//! Block I/O latency per device and operation (kernel side:
//! `tracer-ebpf/src/block.rs`).

use std::{
    collections::BTreeMap,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, EbpfLoader};
use tracer_common::block::{BlockKey, BlockOffsets, BlockStats, SlowRequest};
use tracer_common::maps;

use super::{
    EventRing, Family, Hook, KernelEnv, ProgramFlavor, Scope, drain_ring, event_log::EventLog,
    load_and_attach, per_cpu_rows, watch_ring,
};
use crate::{
    kernel::{btf::KernelBtf, devices},
    model::{BlockRow, Percentiles, Report, SlowIo, buckets_of},
};

pub mod report;

/// The family in the registry.
pub const FAMILY: super::FamilySpec = super::family_spec!(
    "block",
    "Block I/O latency per device and operation",
    hooks: |env, options| probe_hooks(env, options.queued),
    build: build,
);

fn build(setup: &super::Setup<'_>) -> Result<Box<dyn Family>> {
    let options = BlockOptions {
        from_insert: setup.options.queued,
        disks: setup.disks.to_vec(),
        slow_io: setup.options.slow_io,
        whole_run_events: setup.options.whole_run_events,
    };
    Ok(Box::new(BlockFamily::new(options, setup.env)?))
}

/// Slow requests kept per report (the slowest).
pub const SLOW_IOS_KEPT: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct BlockOptions {
    /// Start latency at `block_rq_insert` (queue + device time).
    pub from_insert: bool,
    /// `--disk` filter: names and `dev_t`s; empty traces every disk.
    pub disks: Vec<(String, u32)>,
    /// Requests at least this slow are reported one by one.
    pub slow_io: Option<Duration>,
    /// [`super::Options::whole_run_events`].
    pub whole_run_events: bool,
}

/// Cumulative per-row totals, summed over CPUs.
pub type BlockSnapshot = BTreeMap<BlockKey, BlockStats>;

pub struct BlockFamily {
    options: BlockOptions,
    offsets: BlockOffsets,
    filter_disks: u8,
    from_insert: u8,
    slow_ns: u64,
    started_mono_ns: u64,
    events: Option<EventRing>,
    /// Slow requests seen, with their process name.
    slow: EventLog<(SlowRequest, String)>,
    /// Raw `req_op` value -> read/write/flush/discard/other.
    op_names: BTreeMap<u32, String>,
    /// The program flavour that attached.
    flavor: Option<ProgramFlavor>,
    latest: BlockSnapshot,
    reported: BlockSnapshot,
}

const TRACEPOINTS: [(&str, &str); 4] = [
    ("block_rq_issue", "request start (issue to the driver)"),
    ("block_rq_complete", "request completion"),
    ("block_rq_insert", "request start with --queued (insert into the queue)"),
    ("block_rq_merge", "forgets requests merged away, with --queued"),
];

impl BlockFamily {
    /// Resolves what the kernel programs need; fails when this kernel cannot
    /// support the family (no BTF, unknown struct layout).
    pub fn new(options: BlockOptions, env: &KernelEnv) -> Result<Self> {
        let btf = env.btf.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let offsets = resolve_offsets(btf)?;
        let op_names = op_names(btf);
        Ok(Self {
            filter_disks: u8::from(!options.disks.is_empty()),
            from_insert: u8::from(options.from_insert),
            slow_ns: options.slow_io.map_or(u64::MAX, |d| d.as_nanos().min(u64::MAX as u128 - 1) as u64),
            started_mono_ns: env.started_mono_ns,
            events: None,
            slow: EventLog::new(SLOW_IOS_KEPT, options.whole_run_events),
            options,
            offsets,
            op_names,
            flavor: None,
            latest: BlockSnapshot::new(),
            reported: BlockSnapshot::new(),
        })
    }
}

/// `struct request` layout from BTF: the disk through `rq->q->disk` (or the
/// older `rq->rq_disk`), and the operation bits of `cmd_flags`.
pub fn resolve_offsets(btf: &KernelBtf) -> Result<BlockOffsets> {
    let rq_disk = btf.member_offset("request", "rq_disk").ok();
    let q_disk = btf.member_offset("request_queue", "disk").ok();
    if rq_disk.is_none() && q_disk.is_none() {
        bail!("neither request.rq_disk nor request_queue.disk is in kernel BTF");
    }
    // REQ_OP_BITS is a macro, but the first request flag bit is defined as it.
    let op_bits = btf.enum_value("req_flag_bits", "__REQ_FAILFAST_DEV").unwrap_or(8).clamp(1, 31) as u32;
    Ok(BlockOffsets {
        rq_q: btf.member_offset("request", "q")?,
        rq_cmd_flags: btf.member_offset("request", "cmd_flags")?,
        q_disk: q_disk.unwrap_or(0),
        rq_disk: rq_disk.unwrap_or(u32::MAX),
        disk_major: btf.member_offset("gendisk", "major")?,
        disk_first_minor: btf.member_offset("gendisk", "first_minor")?,
        req_op_mask: (1u32 << op_bits) - 1,
        rq_sector: btf.member_offset("request", "__sector")?,
    })
}

/// Names of `enum req_op` values, collapsed to the categories of
/// /sys/block/*/stat; kernels before 5.19 call the enum `req_opf`.
pub fn op_names(btf: &KernelBtf) -> BTreeMap<u32, String> {
    let members = btf.enum_members("req_op").or_else(|_| btf.enum_members("req_opf"));
    let members = members.unwrap_or_else(|_| {
        // Values stable since 4.10; only used when BTF lacks the enum.
        vec![
            ("REQ_OP_READ".into(), 0),
            ("REQ_OP_WRITE".into(), 1),
            ("REQ_OP_FLUSH".into(), 2),
            ("REQ_OP_DISCARD".into(), 3),
        ]
    });
    members.into_iter().map(|(name, value)| (value as u32, op_category(&name).to_string())).collect()
}

pub fn op_category(req_op_name: &str) -> &'static str {
    match req_op_name {
        "REQ_OP_READ" => "read",
        "REQ_OP_WRITE" => "write",
        "REQ_OP_FLUSH" => "flush",
        "REQ_OP_DISCARD" => "discard",
        _ => "other",
    }
}

impl BlockFamily {
    fn keep_slow(&mut self, batch: Vec<SlowRequest>) {
        let with_comms = batch.into_iter().map(|request| {
            // Named by the kernel when the request started: the process
            // may be gone by now.
            let end = request.comm.iter().position(|&b| b == 0).unwrap_or(request.comm.len());
            (request, String::from_utf8_lossy(&request.comm[..end]).into_owned())
        });
        self.slow.extend(with_comms, |(r, _)| r.latency_ns, |(r, _)| r.ts_ns);
    }
}

impl Family for BlockFamily {
    fn name(&self) -> &'static str {
        "block"
    }

    fn hook_summary(&self) -> String {
        let start = if self.options.from_insert { "insert" } else { "issue" };
        let flavor = self.flavor.map_or("tp_btf or raw_tp", ProgramFlavor::as_str);
        format!("{flavor} block:block_rq_{start} -> block:block_rq_complete, keyed by struct request *")
    }

    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global(maps::BLOCK_OFFSETS, &self.offsets, true);
        loader.override_global(maps::BLOCK_FILTER_DISKS, &self.filter_disks, true);
        loader.override_global(maps::BLOCK_FROM_INSERT, &self.from_insert, true);
        loader.override_global(maps::BLOCK_SLOW_NS, &self.slow_ns, true);
    }

    fn attach(&mut self, ebpf: &mut Ebpf, env: &KernelEnv) -> Result<()> {
        if !self.options.disks.is_empty() {
            let mut filter: aya::maps::HashMap<_, u32, u8> =
                aya::maps::HashMap::try_from(ebpf.map_mut(maps::BLOCK_DISKS).context("BLOCK_DISKS map")?)?;
            for (_, dev) in &self.options.disks {
                filter.insert(dev, 1, 0)?;
            }
        }
        self.events = Some(watch_ring(ebpf, maps::BLOCK_EVENTS)?);
        let mut tracepoints = vec!["block_rq_issue", "block_rq_complete"];
        if self.options.from_insert {
            tracepoints.extend(["block_rq_insert", "block_rq_merge"]);
        }
        self.flavor = Some(load_and_attach(ebpf, &tracepoints, env)?);
        Ok(())
    }

    fn poll_events(&mut self, cx: &mut Context<'_>, _ebpf: &Ebpf) -> Poll<()> {
        let Poll::Ready(batch) = drain_ring::<SlowRequest>(self.events.as_mut(), cx) else {
            return Poll::Pending;
        };
        self.keep_slow(batch);
        Poll::Ready(())
    }

    fn sample(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        self.latest = per_cpu_rows(ebpf, maps::BLOCK_ROWS, |cpus| {
            let mut total = BlockStats::zeroed();
            for stats in cpus.iter() {
                merge(&mut total, stats);
            }
            Some(total)
        })?;
        Ok(())
    }

    fn fill(&mut self, report: &mut Report, scope: Scope, _ebpf: &Ebpf) {
        let names = devices::names(&devices::list());
        let base = match scope {
            Scope::Interval => std::mem::replace(&mut self.reported, self.latest.clone()),
            Scope::Whole => BlockSnapshot::new(),
        };
        report.block = block_rows(&self.latest, &base, &names, &self.op_names, scope);
        let mut slow: Vec<SlowIo> = self
            .slow
            .for_report(scope)
            .iter()
            .map(|(r, comm)| SlowIo {
                at_s: r.ts_ns.saturating_sub(self.started_mono_ns) as f64 / 1e9,
                latency_us: r.latency_ns as f64 / 1e3,
                device: devices::display_name(r.dev, &names),
                op: self.op_names.get(&r.op).cloned().unwrap_or_else(|| "other".into()),
                bytes: r.bytes as u64,
                // The kernel's "no sector" is -1 (flushes).
                sector: (r.sector != u64::MAX).then_some(r.sector),
                pid: r.tgid,
                comm: comm.clone(),
            })
            .collect();
        slow.sort_by(|a, b| b.latency_us.total_cmp(&a.latency_us));
        report.slow_ios_dropped = self.slow.dropped(scope) + slow.len().saturating_sub(SLOW_IOS_KEPT) as u64;
        slow.truncate(SLOW_IOS_KEPT);
        report.slow_ios = slow;
    }
}

pub fn probe_hooks(env: &KernelEnv, from_insert: bool) -> Vec<Hook> {
    let btf_note = match &env.btf {
        Ok(btf) => resolve_offsets(btf).err().map(|e| e.to_string()),
        Err(e) => Some(e.clone()),
    };
    let mut hooks: Vec<Hook> = TRACEPOINTS
        .iter()
        .map(|(tp, what)| {
            let exists = env.tracefs.has_event("block", tp);
            let needed = matches!(*tp, "block_rq_issue" | "block_rq_complete") || from_insert;
            Hook {
                name: format!("block:{tp}"),
                available: exists,
                used: exists && needed && btf_note.is_none(),
                required: needed,
                note: if exists { (*what).to_string() } else { "no such tracepoint on this kernel".into() },
            }
        })
        .collect();
    hooks.push(super::tp_btf_hook(env, &["block_rq_issue", "block_rq_complete"]));
    hooks.push(Hook {
        name: "BTF struct request layout".into(),
        available: btf_note.is_none(),
        used: btf_note.is_none(),
        required: true,
        note: btf_note
            .unwrap_or_else(|| "device and operation read via rq->q->disk and rq->cmd_flags".into()),
    });
    hooks
}

pub fn merge(total: &mut BlockStats, other: &BlockStats) {
    total.completed += other.completed;
    total.bytes += other.bytes;
    total.errors += other.errors;
    total.untimed += other.untimed;
    total.latency.merge(&other.latency);
}

/// Rows for `latest - base`, one per device and operation category (raw
/// operations of the same category are merged), busiest device first.
pub fn block_rows(
    latest: &BlockSnapshot,
    base: &BlockSnapshot,
    dev_names: &BTreeMap<u32, String>,
    op_names: &BTreeMap<u32, String>,
    scope: Scope,
) -> Vec<BlockRow> {
    let mut grouped: BTreeMap<(u32, String), BlockStats> = BTreeMap::new();
    for (key, now) in latest {
        let delta = match base.get(key) {
            Some(before) => delta(now, before),
            None => *now,
        };
        if requests_in(&delta) == 0 {
            continue;
        }
        let op = op_names.get(&key.op).cloned().unwrap_or_else(|| "other".into());
        merge(grouped.entry((key.dev, op)).or_insert_with(BlockStats::zeroed), &delta);
    }
    let mut rows: Vec<BlockRow> = grouped
        .into_iter()
        .map(|((dev, op), stats)| {
            let mut latency = stats.latency;
            if scope == Scope::Interval {
                latency.max_ns = interval_max(&latency);
            }
            let (major, minor) = devices::major_minor(dev);
            BlockRow {
                device: devices::display_name(dev, dev_names),
                dev: format!("{major}:{minor}"),
                op,
                count: requests_in(&stats),
                bytes: stats.bytes,
                errors: stats.errors,
                untimed: stats.untimed,
                latency_us: Percentiles::of(&latency),
                histogram: buckets_of(&latency),
            }
        })
        .collect();
    sort_rows(&mut rows);
    rows
}

/// Requests in a row: timed ones (the histogram) and untimed ones. Not
/// the row's completion counter, which a read can catch a request ahead
/// of the histogram (the program on another CPU between the two adds),
/// making an interval's histogram and count disagree by one; over the run
/// both are exact.
fn requests_in(stats: &BlockStats) -> u64 {
    stats.latency.buckets.iter().sum::<u64>() + stats.untimed
}

/// Report order: by device, then read, write, flush, discard, other.
pub fn sort_rows(rows: &mut [BlockRow]) {
    let op_rank = |op: &str| ["read", "write", "flush", "discard", "other"].iter().position(|o| *o == op);
    rows.sort_by(|a, b| a.device.cmp(&b.device).then(op_rank(&a.op).cmp(&op_rank(&b.op))));
}

fn delta(now: &BlockStats, before: &BlockStats) -> BlockStats {
    BlockStats {
        completed: now.completed.saturating_sub(before.completed),
        bytes: now.bytes.saturating_sub(before.bytes),
        errors: now.errors.saturating_sub(before.errors),
        untimed: now.untimed.saturating_sub(before.untimed),
        latency: now.latency.delta_since(&before.latency),
    }
}

/// The kernel keeps one running maximum, which cannot be split into
/// intervals; an interval's maximum is the upper edge of its highest
/// non-empty bucket, capped by the running maximum.
fn interval_max(hist: &tracer_common::hist::LatencyHist) -> u64 {
    let top = hist.buckets.iter().rposition(|&c| c > 0);
    match top {
        Some(slot) => tracer_common::hist::slot_values(slot).1.min(hist.max_ns.max(1)),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::devices::kernel_dev;

    fn stats(latencies_ns: &[u64], untimed: u64) -> BlockStats {
        let mut s = BlockStats::zeroed();
        for &ns in latencies_ns {
            s.completed += 1;
            s.bytes += 4096;
            s.latency.record(ns);
        }
        s.completed += untimed;
        s.untimed = untimed;
        s
    }

    fn ops() -> BTreeMap<u32, String> {
        [(0, "read"), (1, "write"), (2, "flush"), (9, "other"), (5, "other")]
            .into_iter()
            .map(|(v, n)| (v, n.to_string()))
            .collect()
    }

    #[test]
    fn a_row_read_between_the_kernels_two_adds_still_adds_up() {
        let loop0 = kernel_dev(7, 0);
        // Counted as completed, not yet in the histogram (the program on
        // another CPU was between the two adds when the map was read).
        let mut caught = stats(&[1000, 2000], 1);
        caught.completed += 1;
        let mut latest = BlockSnapshot::new();
        latest.insert(BlockKey { dev: loop0, op: 0 }, caught);
        let rows = block_rows(&latest, &BlockSnapshot::new(), &BTreeMap::new(), &ops(), Scope::Interval);
        let timed: u64 = rows[0].histogram.iter().map(|b| b.count).sum();
        assert_eq!(rows[0].count, timed + rows[0].untimed);
        assert_eq!(rows[0].count, 3);
    }

    #[test]
    fn rows_are_deltas_grouped_by_category() {
        let loop0 = kernel_dev(7, 0);
        let mut base = BlockSnapshot::new();
        base.insert(BlockKey { dev: loop0, op: 0 }, stats(&[1000, 2000], 0));
        let mut latest = BlockSnapshot::new();
        latest.insert(BlockKey { dev: loop0, op: 0 }, stats(&[1000, 2000, 50_000], 1));
        latest.insert(BlockKey { dev: loop0, op: 9 }, stats(&[7000], 0));
        latest.insert(BlockKey { dev: loop0, op: 5 }, stats(&[9000], 0));
        let names: BTreeMap<u32, String> = [(loop0, "loop0".to_string())].into();

        let rows = block_rows(&latest, &base, &names, &ops(), Scope::Interval);
        assert_eq!(rows.len(), 2);
        let read = &rows[0];
        assert_eq!(
            (read.device.as_str(), read.op.as_str(), read.count, read.untimed),
            ("loop0", "read", 2, 1)
        );
        assert_eq!(read.histogram.iter().map(|b| b.count).sum::<u64>(), 1);
        let other = &rows[1];
        assert_eq!((other.op.as_str(), other.count), ("other", 2));

        let whole = block_rows(&latest, &BlockSnapshot::new(), &names, &ops(), Scope::Whole);
        assert_eq!(whole[0].count, 4);
        assert_eq!(whole[0].latency_us.max, 50.0);
    }

    #[test]
    fn interval_max_is_bucket_bound_capped_by_running_max() {
        let mut h = tracer_common::hist::LatencyHist::zeroed();
        h.record(1_000_000);
        h.record(3_000);
        let m = interval_max(&h);
        assert_eq!(m, 1_000_000, "capped by the exact running max");
        h.max_ns = 5_000_000; // an older, bigger max from a previous interval
        let m = interval_max(&h);
        assert!((1_000_000..=1_000_000 + 1_000_000 / 16).contains(&m), "{m}");
    }
}
