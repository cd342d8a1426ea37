//! Where a run's reports go as the run goes: the status line, the
//! printer (`trace`), the capture writer (`record`) and the metrics
//! endpoints (`--metrics`, `--otlp`).

use std::{
    fs::File,
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    capture::{CaptureEnd, CaptureHeader, CaptureWriter, Chunk},
    cli::RunOptions,
    model::{Report, SystemContext},
    render,
};

/// Where a run's reports go, as the run goes.
pub trait ReportSink {
    /// Tracing has started.
    fn begin(&mut self, _header: &CaptureHeader, _system: &SystemContext) -> Result<()> {
        Ok(())
    }
    /// Every interval's report (each `--interval`, else every second).
    fn interval(&mut self, report: &Report) -> Result<()>;
    /// The whole-run report, once everything is detached.
    fn whole(&mut self, report: &Report, end: &CaptureEnd) -> Result<()>;
    /// SIGUSR1 (`watch` only).
    fn on_demand(&mut self) {}
    /// Whether the run should end now (`watch --once` wrote its capture).
    fn finished(&self) -> bool {
        false
    }
}

/// `--metrics`: the cumulative metrics, published at every interval.
pub struct MetricsSink {
    endpoint: Option<crate::export::server::MetricsEndpoint>,
    pusher: Option<crate::export::otlp::Pusher>,
    metrics: crate::export::Metrics,
}

impl MetricsSink {
    pub fn new(
        endpoint: Option<crate::export::server::MetricsEndpoint>,
        pusher: Option<crate::export::otlp::Pusher>,
    ) -> Self {
        Self { endpoint, pusher, metrics: Default::default() }
    }
}

impl MetricsSink {
    fn publish(&self) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.publish(&self.metrics);
        }
        if let Some(pusher) = &self.pusher {
            pusher.push(&self.metrics);
        }
    }
}

impl ReportSink for MetricsSink {
    fn begin(&mut self, header: &CaptureHeader, _system: &SystemContext) -> Result<()> {
        self.metrics = crate::export::Metrics::new(
            &header.host.hostname,
            &header.host.kernel_release,
            header.start_unix_s,
        );
        self.publish();
        Ok(())
    }

    fn interval(&mut self, report: &Report) -> Result<()> {
        self.metrics.add_interval(report);
        self.publish();
        Ok(())
    }

    fn whole(&mut self, _report: &Report, _end: &CaptureEnd) -> Result<()> {
        Ok(())
    }
}

/// The live one-line status on stderr, drawn only on terminals (indicatif
/// draws nothing otherwise) and cleared at the end.
pub struct StatusLine {
    bar: indicatif::ProgressBar,
    status: render::status::Status,
}

impl StatusLine {
    /// `shown`: false when the interval rows on the terminal are the
    /// live status (the two would draw over each other).
    pub fn new(duration: Duration, shown: bool) -> Self {
        let target = if shown {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        };
        Self::drawn_on(duration, target)
    }

    fn drawn_on(duration: Duration, target: indicatif::ProgressDrawTarget) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(Some(duration.as_secs().max(1)), target);
        bar.set_style(
            indicatif::ProgressStyle::with_template("tracer: {elapsed:>4}/{len}s {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        // {wide_msg}: cut to the terminal's width, so the line never wraps
        // (a wrapped line leaves fragments behind when redrawn).
        // Also cleared when a failure drops it: the terminal is left clean.
        let bar = bar.with_finish(indicatif::ProgressFinish::AndClear);
        if std::io::stderr().is_terminal() {
            // A panic message goes on a line of its own, not after the
            // status. Raw escapes, not the bar: its lock may be held.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = std::io::stderr().write_all(b"\r\x1b[2K");
                previous(info);
            }));
        }
        Self { bar, status: render::status::Status::default() }
    }
}

impl ReportSink for StatusLine {
    fn begin(&mut self, _header: &CaptureHeader, _system: &SystemContext) -> Result<()> {
        // Time from attachment, not from start-up.
        self.bar.reset_elapsed();
        Ok(())
    }

    fn interval(&mut self, report: &Report) -> Result<()> {
        self.status.add(report);
        self.bar.set_position(self.bar.elapsed().as_secs());
        self.bar.set_message(self.status.line());
        Ok(())
    }

    fn whole(&mut self, _report: &Report, _end: &CaptureEnd) -> Result<()> {
        self.bar.finish_and_clear();
        Ok(())
    }
}

/// Prints reports: standard output, or `trace -o FILE` (and standard
/// output if writing it fails).
pub struct Printer {
    out: crate::report_output::ReportOutput,
    json: bool,
    /// `--interval` given: interval reports are printed too, and JSON is
    /// one object per line throughout.
    intervals: bool,
    /// Interval reports as one time-line row each (text on a terminal,
    /// unless `--full-intervals`).
    compact: bool,
    /// The time line's header was printed.
    header_printed: bool,
}

impl Printer {
    pub fn open(args: &RunOptions, output: Option<&Path>) -> Result<Self> {
        let out = crate::report_output::ReportOutput::create(output)?;
        Ok(Self {
            out,
            json: args.json,
            intervals: args.interval.is_some(),
            compact: Self::compact_rows(args, output),
            header_printed: false,
        })
    }

    /// Whether interval reports are printed as time-line rows: text, with
    /// --interval, on a terminal, without --full-intervals.
    pub fn compact_rows(args: &RunOptions, output: Option<&Path>) -> bool {
        let terminal = output.is_none() && std::io::stdout().is_terminal();
        terminal && args.interval.is_some() && !args.json && !args.full_intervals
    }

    /// One interval as its time-line row (the header before the first).
    fn print_row(&mut self, report: &Report) -> Result<()> {
        // One pooled p99: a row's columns must not change from row to row.
        let columns = crate::model::TimelinePoint::of(report).columns(&[]);
        let mut text = String::new();
        if !std::mem::replace(&mut self.header_printed, true) {
            text.push_str(&render::text::timeline_header(&columns));
            text.push('\n');
        }
        text.push_str(&render::text::timeline_row(&columns));
        text.push('\n');
        self.out.write(&text)
    }

    fn print(&mut self, report: &Report) -> Result<()> {
        self.out.write(&render::report(report, self.json, self.intervals)?)
    }
}

impl ReportSink for Printer {
    fn interval(&mut self, report: &Report) -> Result<()> {
        match (self.intervals, self.compact) {
            (false, _) => Ok(()),
            (true, true) => self.print_row(report),
            (true, false) => self.print(report),
        }
    }

    fn whole(&mut self, report: &Report, _end: &CaptureEnd) -> Result<()> {
        self.print(report)
    }
}

/// Writes the capture of `record`, chunk by chunk, each synced to disk so
/// that a crash of the machine keeps what was written.
pub struct CaptureSink {
    path: PathBuf,
    writer: CaptureWriter<File>,
    /// Until tracing starts, a failed run leaves no capture behind.
    started: bool,
    /// Why writing failed, after which nothing more is written.
    failed: Option<String>,
}

impl CaptureSink {
    pub fn create(path: &Path) -> Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let cannot = || format!("cannot write the capture to {}", path.display());
        if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("{}: a symbolic link is not followed; give the capture's own path", cannot());
        }
        // Not through a symlink someone else planted; 0600 also when the
        // file existed with wider permissions.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .with_context(cannot)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).with_context(cannot)?;
        let writer = CaptureWriter::new(file).with_context(cannot)?;
        Ok(Self { path: path.to_path_buf(), writer, started: false, failed: None })
    }

    /// A chunk, synced. Once writing fails (a full disk), the capture
    /// stops there, cut short as a crash would leave it, and tracing goes
    /// on: the terminal report stays complete.
    fn write(&mut self, chunk: Chunk<'_>) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        let written = self.writer.write(chunk).and_then(|()| self.writer.get_ref().sync_data());
        if let Err(e) = written {
            eprintln!(
                "tracer: warning: writing the capture {} failed ({e}); it ends there (`tracer report` \
                 reads it as cut short) and tracing goes on: the report below is complete",
                self.path.display()
            );
            self.failed = Some(e.to_string());
        }
        Ok(())
    }
}

impl ReportSink for CaptureSink {
    fn begin(&mut self, header: &CaptureHeader, system: &SystemContext) -> Result<()> {
        self.started = true;
        self.write(Chunk::Header(header))?;
        self.write(Chunk::SystemStart(system))
    }

    fn interval(&mut self, report: &Report) -> Result<()> {
        self.write(Chunk::Interval(report))
    }

    fn whole(&mut self, report: &Report, end: &CaptureEnd) -> Result<()> {
        if let Some(state) = report.system.as_ref().and_then(|s| s.end.as_ref()) {
            self.write(Chunk::SystemEnd(state))?;
        }
        self.write(Chunk::Final(report))?;
        self.write(Chunk::End(end))?;
        match &self.failed {
            None => eprintln!("tracer: capture written to {}", self.path.display()),
            Some(why) => eprintln!("tracer: the capture {} is incomplete ({why})", self.path.display()),
        }
        Ok(())
    }
}

impl Drop for CaptureSink {
    fn drop(&mut self) {
        if !self.started {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlockRow, OomKill, Percentiles};
    use indicatif::{InMemoryTerm, ProgressDrawTarget};

    /// The status line on a virtual terminal `cols` wide, after a busy
    /// interval and then a quiet one.
    fn drawn(cols: u16) -> (String, String) {
        let term = InMemoryTerm::new(4, cols);
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(term.clone()), 200);
        let mut status = StatusLine::drawn_on(Duration::from_secs(600), target);
        let busy = Report {
            block: vec![BlockRow {
                device: "nvme0n1".into(),
                dev: "259:0".into(),
                op: "read".into(),
                count: 123_456,
                bytes: 0,
                errors: 0,
                untimed: 0,
                latency_us: Percentiles { max: 900.0, ..Percentiles::default() },
                histogram: Vec::new(),
            }],
            oom_kills: vec![OomKill {
                victim_comm: "a-rather-long-command-name".into(),
                ..OomKill::default()
            }],
            lost_events: 3,
            ..Report::default()
        };
        status.interval(&busy).unwrap();
        status.bar.force_draw();
        let first = term.contents();
        status.status = render::status::Status::default();
        status.interval(&Report::default()).unwrap();
        status.bar.force_draw();
        (first, term.contents())
    }

    #[test]
    fn the_status_line_fits_narrow_terminals_and_leaves_no_fragments() {
        for cols in [24, 40, 80] {
            let (busy, quiet) = drawn(cols);
            for screen in [&busy, &quiet] {
                let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
                // One line, never wrapped onto a second.
                assert_eq!(lines.len(), 1, "{cols} columns: {screen:?}");
                assert!(lines[0].chars().count() <= cols as usize, "{cols} columns: {screen:?}");
                assert!(lines[0].starts_with("tracer:"), "{screen:?}");
            }
            // The shorter line replaced the longer one entirely.
            assert!(!quiet.contains("OOM") && !quiet.contains("lost 3"), "{cols} columns: {quiet:?}");
            if cols == 80 {
                assert!(busy.contains("1 OOM kill,") && busy.contains("lost 3"), "{busy:?}");
            }
        }
    }
}
