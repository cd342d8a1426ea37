//! `tracer watch`: tracing that never ends, a rolling window of the last
//! `--keep` of interval reports (events and stacks included) in bounded
//! memory, and a capture of that window plus `--after` written to `--dir`
//! when a trigger fires. The run loop is `trace`'s; this is its sink.

pub mod psi;
pub mod trigger;

use std::{
    collections::VecDeque,
    fs,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use self::{psi::PsiTrigger, trigger::Trigger};
use crate::{
    capture::{CaptureEnd, CaptureHeader, CaptureWriter, Chunk, utc},
    cli::WatchArgs,
    kernel::{cgroups::Cgroups, sysinfo},
    merge::merge_intervals,
    model::{MemoryState, Report, SystemContext, TriggerMark},
    session::{self, Outputs, sinks::ReportSink},
};

pub fn run(args: &WatchArgs) -> Result<ExitCode> {
    // Before the directory and PSI files: "needs root" first.
    crate::kernel::caps::require_tracing()?;
    let mut run = args.run.clone();
    run.intervals_only = true;
    // A slow-request trigger needs those requests reported one by one.
    for needed in args.triggers.iter().filter_map(Trigger::slow_io_needed) {
        if run.slow_io.0.is_none_or(|t| t > needed) {
            run.slow_io.0 = Some(needed);
        }
    }
    let sink: Box<dyn ReportSink> = Box::new(WatchSink::new(args)?);
    session::trace(&run, Outputs { report: None, capture: None, watch: Some((sink, &args.dir)) })
}

/// A trigger that fired, waiting for its `--after` to pass.
struct Pending {
    mark: TriggerMark,
    /// Intervals still to come before the capture is written.
    intervals_left: usize,
    /// Index of the interval in which it fired, counted from the start.
    fired_in: u64,
}

pub struct WatchSink {
    dir: PathBuf,
    triggers: Vec<(Trigger, Option<PsiTrigger>)>,
    last_fired: Vec<Option<Instant>>,
    cooldown: Duration,
    max_disk: u64,
    once: bool,
    /// Intervals kept before a trigger, and after it.
    keep_intervals: usize,
    after_intervals: usize,
    period_s: f64,
    window: VecDeque<Report>,
    /// PSI and refaults at the start of the window's first interval, and at
    /// the end of each of its intervals: a capture's pressure line covers
    /// what it holds, not the watch since it started.
    window_start_pressure: Option<MemoryState>,
    window_end_pressure: VecDeque<MemoryState>,
    cgroup: Option<String>,
    /// Intervals seen since the start.
    seen: u64,
    header: Option<CaptureHeader>,
    system: Option<SystemContext>,
    pending: Option<Pending>,
    demanded: bool,
    written: u64,
}

impl WatchSink {
    pub fn new(args: &WatchArgs) -> Result<Self> {
        let period = args.run.interval.unwrap_or(Duration::from_secs(1));
        prepare_dir(&args.dir)?;
        let mut triggers = Vec::new();
        for trigger in &args.triggers {
            let psi = match trigger {
                Trigger::Psi { full, stall, window, cgroup } => {
                    let dir = match cgroup {
                        Some(path) => {
                            let cgroups =
                                Cgroups::find().context("a PSI trigger on a cgroup: no cgroup hierarchy")?;
                            if cgroups.version() != 2 {
                                bail!("a PSI trigger on a cgroup needs cgroup v2 (memory.pressure)");
                            }
                            Some(cgroups.dir_of(path))
                        }
                        None => None,
                    };
                    Some(PsiTrigger::register(*full, *stall, *window, dir.as_deref())?)
                }
                _ => None,
            };
            triggers.push((trigger.clone(), psi));
        }
        let intervals = |d: Duration| (d.as_secs_f64() / period.as_secs_f64()).ceil() as usize;
        Ok(Self {
            dir: args.dir.clone(),
            last_fired: vec![None; triggers.len()],
            triggers,
            cooldown: args.cooldown,
            max_disk: args.max_disk,
            once: args.once,
            keep_intervals: intervals(args.keep).max(1),
            after_intervals: intervals(args.after),
            period_s: period.as_secs_f64(),
            window: VecDeque::new(),
            seen: 0,
            header: None,
            system: None,
            window_start_pressure: None,
            window_end_pressure: VecDeque::new(),
            cgroup: args.run.cgroup.clone(),
            pending: None,
            demanded: false,
            written: 0,
        })
    }

    /// The first trigger that fires on this interval, past its cooldown.
    fn check_triggers(&mut self, report: &Report) -> Option<TriggerMark> {
        if std::mem::take(&mut self.demanded) {
            return Some(TriggerMark { trigger: "signal".into(), what: "SIGUSR1".into(), at_s: 0.0 });
        }
        for (i, (trigger, psi)) in self.triggers.iter().enumerate() {
            let what = match (trigger, psi) {
                (Trigger::Psi { full, stall, window, .. }, Some(psi)) => psi.fired().then(|| {
                    format!(
                        "memory pressure: {} stall over {} ms in {} s ({})",
                        if *full { "full" } else { "some" },
                        stall.as_millis(),
                        window.as_secs_f64(),
                        psi.path.display()
                    )
                }),
                _ => trigger.fired_by(report),
            };
            let Some(what) = what else { continue };
            if self.last_fired[i].is_some_and(|at| at.elapsed() < self.cooldown) {
                eprintln!(
                    "tracer: watch: trigger {} fired ({what}) within its cooldown: no capture",
                    trigger.name()
                );
                continue;
            }
            self.last_fired[i] = Some(Instant::now());
            return Some(TriggerMark { trigger: trigger.name(), what, at_s: 0.0 });
        }
        None
    }

    /// Writes the window as a capture and prunes the directory.
    fn write_capture(&mut self, pending: Pending) -> Result<()> {
        let (Some(header), Some(system)) = (&self.header, &self.system) else {
            return Ok(());
        };
        let intervals: Vec<Report> = self.window.iter().cloned().collect();
        let Some(first) = intervals.first().map(|r| r.window.clone()) else { return Ok(()) };
        // Re-based: the capture starts with its first interval.
        let base_offset = first.offset_s;
        let first_index = first.interval.unwrap_or(0);
        let intervals: Vec<Report> = intervals
            .into_iter()
            .map(|mut r| {
                r.window.offset_s -= base_offset;
                r.window.interval = r.window.interval.map(|i| i - first_index);
                r
            })
            .collect();
        let fired = intervals
            .iter()
            .find(|r| r.window.interval == Some(pending.fired_in.saturating_sub(first_index)))
            .map_or(0.0, |r| r.window.offset_s + r.window.duration_s);
        let mark = TriggerMark { at_s: fired, ..pending.mark };
        let mut whole = merge_intervals(&intervals);
        let mut system = system.clone();
        if let Some(pressure) = &self.window_start_pressure {
            system.start.psi_memory = pressure.psi_memory;
            system.start.psi_cgroup = pressure.psi_cgroup.clone();
            system.start.vmstat.extend(pressure.vmstat.iter().map(|(k, v)| (k.clone(), *v)));
        }
        whole.system = Some(SystemContext {
            end: Some(sysinfo::memory_state(self.cgroup.as_deref())),
            ..system.clone()
        });
        whole.trigger = Some(mark.clone());
        let header = CaptureHeader {
            start_unix_s: first.start_unix_s,
            duration_s: whole.window.duration_s,
            ..header.clone()
        };
        let stem = format!(
            "tracer-{}-{}",
            utc(first.start_unix_s + fired).trim_end_matches(" UTC").replace([' ', ':'], "-"),
            mark.trigger
        );
        // Only a file this call created is removed when the write fails.
        let mut created: Option<PathBuf> = None;
        let dir = &self.dir;
        let mut write = || -> Result<()> {
            let (file, path) = create_capture(dir, &stem)?;
            created = Some(path);
            let mut writer = CaptureWriter::new(file)?;
            writer.write(Chunk::Header(&header))?;
            writer.write(Chunk::SystemStart(&system))?;
            for report in &intervals {
                writer.write(Chunk::Interval(report))?;
            }
            if let Some(end) = whole.system.as_ref().and_then(|s| s.end.as_ref()) {
                writer.write(Chunk::SystemEnd(end))?;
            }
            writer.write(Chunk::Final(&whole))?;
            let end = CaptureEnd {
                ended_by: format!("trigger: {}", mark.trigger),
                intervals: intervals.len() as u64,
            };
            writer.write(Chunk::End(&end))?;
            writer.get_ref().sync_all()?;
            Ok(())
        };
        let written = write();
        let was_created = created.is_some();
        let path = created.unwrap_or_else(|| self.dir.join(format!("{stem}.cap")));
        match written {
            Ok(()) => {
                self.written += 1;
                eprintln!(
                    "tracer: watch: capture written to {} ({:.0} s before the trigger, {:.0} s after; `tracer report {}`)",
                    path.display(),
                    fired,
                    whole.window.duration_s - fired,
                    path.display()
                );
            }
            Err(e) => {
                // Tracing goes on; a later trigger may find room again.
                if was_created {
                    let _ = fs::remove_file(&path);
                }
                eprintln!("tracer: watch: warning: writing the capture {} failed: {e:#}", path.display());
            }
        }
        prune(&self.dir, self.max_disk, &path);
        Ok(())
    }
}

impl ReportSink for WatchSink {
    fn begin(&mut self, header: &CaptureHeader, system: &SystemContext) -> Result<()> {
        // Reported as one run (its intervals stay in the capture for JSON
        // lines, Perfetto and the time line).
        self.header = Some(CaptureHeader { interval_s: None, json: false, ..header.clone() });
        self.system = Some(system.clone());
        self.window_start_pressure = Some(sysinfo::pressure_state(self.cgroup.as_deref()));
        Ok(())
    }

    fn interval(&mut self, report: &Report) -> Result<()> {
        self.window.push_back(report.clone());
        self.window_end_pressure.push_back(sysinfo::pressure_state(self.cgroup.as_deref()));
        self.seen += 1;
        let limit = self.keep_intervals + self.pending.as_ref().map_or(0, |_| self.after_intervals);
        while self.window.len() > limit {
            self.window.pop_front();
            self.window_start_pressure = self.window_end_pressure.pop_front();
        }
        if self.pending.is_none()
            && let Some(mark) = self.check_triggers(report)
        {
            let now = mark.trigger == "signal";
            eprintln!(
                "tracer: watch: trigger {} fired: {}; {}",
                mark.trigger,
                mark.what,
                if now || self.after_intervals == 0 {
                    "writing a capture now".to_string()
                } else {
                    format!("a capture follows in {:.0} s", self.after_intervals as f64 * self.period_s)
                }
            );
            let intervals_left = if now { 0 } else { self.after_intervals };
            self.pending = Some(Pending { mark, intervals_left, fired_in: self.seen - 1 });
        } else if let Some(pending) = &mut self.pending {
            pending.intervals_left = pending.intervals_left.saturating_sub(1);
        }
        if self.pending.as_ref().is_some_and(|p| p.intervals_left == 0) {
            let pending = self.pending.take().expect("checked");
            self.write_capture(pending)?;
            // The next capture starts afresh: nothing is written twice.
            self.window.clear();
            if let Some(last) = self.window_end_pressure.pop_back() {
                self.window_start_pressure = Some(last);
            }
            self.window_end_pressure.clear();
        }
        Ok(())
    }

    fn whole(&mut self, _report: &Report, _end: &CaptureEnd) -> Result<()> {
        // Stopped while a capture was waiting for its --after: write what
        // there is.
        if let Some(pending) = self.pending.take() {
            self.write_capture(pending)?;
        }
        Ok(())
    }

    fn on_demand(&mut self) {
        eprintln!("tracer: watch: SIGUSR1: a capture at the end of this interval");
        self.demanded = true;
    }

    fn finished(&self) -> bool {
        self.once && self.written > 0
    }
}

/// Creates `dir` 0700; warns when an existing one is open to others.
fn prepare_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the capture directory {}", dir.display()))?;
    }
    let meta = fs::metadata(dir).with_context(|| format!("--dir {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("--dir {} is not a directory", dir.display());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "tracer: watch: warning: {} is readable by others; captures hold command names and stacks \
             (chmod 700 it)",
            dir.display()
        );
    }
    // Fail now, not at the first trigger.
    let probe = dir.join(format!(".tracer-watch-{}", std::process::id()));
    fs::write(&probe, b"").with_context(|| format!("cannot write in {}", dir.display()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Creates `dir/STEM.cap` 0600, or `STEM-2.cap`, `STEM-3.cap`... when a
/// capture of that second and trigger is there already (intervals under a
/// second, SIGUSR1 in consecutive intervals): never over an existing file,
/// never through a symlink.
fn create_capture(dir: &Path, stem: &str) -> std::io::Result<(fs::File, PathBuf)> {
    let mut n = 1;
    loop {
        let path = dir.join(if n == 1 { format!("{stem}.cap") } else { format!("{stem}-{n}.cap") });
        let opened = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        match opened {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Removes the oldest captures of `dir` until it holds at most `max`
/// bytes; never `keep` (the one just written).
pub fn prune(dir: &Path, max: u64, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut captures: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("tracer-") && name.ends_with(".cap")
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, e.path(), meta.len()))
        })
        .collect();
    // Oldest first: by when written, then by name (which starts with the
    // time, but `-2.cap` of the same second sorts before `.cap`).
    captures.sort();
    let mut total: u64 = captures.iter().map(|c| c.2).sum();
    for (_, path, size) in captures {
        if total <= max {
            break;
        }
        if path == keep {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                total -= size;
                eprintln!("tracer: watch: removed {} (--max-disk)", path.display());
            }
            Err(e) => eprintln!("tracer: watch: warning: could not remove {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_removes_the_oldest_but_never_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in
            [("tracer-2026-01-01-a.cap", 100), ("tracer-2026-01-02-b.cap", 100), ("other.txt", 500)]
        {
            fs::write(dir.path().join(name), vec![0u8; size]).unwrap();
        }
        let newest = dir.path().join("tracer-2026-01-03-c.cap");
        fs::write(&newest, vec![0u8; 150]).unwrap();
        prune(dir.path(), 260, &newest);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["other.txt", "tracer-2026-01-02-b.cap", "tracer-2026-01-03-c.cap"]);
        prune(dir.path(), 10, &newest);
        assert!(newest.exists(), "the capture just written stays");
    }

    #[test]
    fn a_capture_of_the_same_second_and_trigger_gets_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let stem = "tracer-2026-11-30-22-50-01-signal";
        let (first, path1) = create_capture(dir.path(), stem).unwrap();
        std::io::Write::write_all(&mut &first, b"first").unwrap();
        let (_, path2) = create_capture(dir.path(), stem).unwrap();
        let (_, path3) = create_capture(dir.path(), stem).unwrap();
        assert_eq!(path1, dir.path().join(format!("{stem}.cap")));
        assert_eq!(path2, dir.path().join(format!("{stem}-2.cap")));
        assert_eq!(path3, dir.path().join(format!("{stem}-3.cap")));
        assert_eq!(fs::read(&path1).unwrap(), b"first", "the first capture is left as it was");
        assert_eq!(fs::metadata(&path2).unwrap().permissions().mode() & 0o777, 0o600);
    }

    /// Times set: a fast file system may give files written in a row one.
    #[test]
    fn pruning_goes_by_when_captures_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let stem = "tracer-2026-11-30-22-50-01-signal";
        let (older, newer, newest) = (
            dir.path().join(format!("{stem}.cap")),
            dir.path().join(format!("{stem}-2.cap")),
            dir.path().join("tracer-2026-11-30-22-50-02-signal.cap"),
        );
        let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for (i, path) in [&older, &newer, &newest].into_iter().enumerate() {
            fs::write(path, vec![0u8; 100]).unwrap();
            let file = fs::File::options().write(true).open(path).unwrap();
            file.set_modified(at + Duration::from_secs(i as u64)).unwrap();
        }
        prune(dir.path(), 200, &newest);
        assert!(!older.exists(), "the one written first goes first");
        assert!(newer.exists() && newest.exists());
    }
}
