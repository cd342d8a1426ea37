//! `tracer report`: renders a capture written by `record`, on any machine.
//! Needs no root, no BPF, no tracefs: only the file (and, to resolve
//! kernel frames again, the traced kernel's vmlinux).

use std::{
    fs::File,
    io::{BufWriter, Seek as _, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result, anyhow};

use crate::{
    capture::{self, Capture},
    cli::{ReportArgs, ReportFormat},
    model::Report,
    render,
    symbolize::{self, KernelSymbolizer},
};

pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    let path = &args.capture;
    let file = File::open(path).with_context(|| format!("cannot read the capture {}", path.display()))?;
    let mut out = Output::open(args.output.as_deref())?;
    // Interval reports are rendered and written as they are read: memory
    // does not grow with the capture.
    let mut kernel: Option<Option<KernelSymbolizer>> = None;
    let streams_intervals = matches!(args.format, ReportFormat::Text | ReportFormat::Json);
    // A pipe (`<(zcat run.cap.gz)`) cannot be read twice: merge in the
    // first pass in case the final report is missing.
    let seekable = (&file).stream_position().is_ok();
    let mut heatmap = (args.format == ReportFormat::Heatmap).then(render::heatmap::Heatmap::default);
    let mut capture = capture::read_stream(&file, !seekable, |capture, mut report| {
        if let Some(heatmap) = heatmap.as_mut() {
            heatmap.add(&report);
        }
        if !(streams_intervals && capture.header.interval_s.is_some()) {
            return Ok(());
        }
        if kernel.is_none() {
            kernel = Some(kernel_symbolizer(capture, args.vmlinux.as_deref())?);
        }
        resolve_again(&mut report, kernel.as_ref().and_then(Option::as_ref));
        out.write(&render::report(&report, args.format == ReportFormat::Json, true)?)
    })
    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if capture.needs_merge() {
        // Cut short or its final report lost: a second pass merges the
        // intervals (the first kept none).
        (&file).seek(std::io::SeekFrom::Start(0))?;
        capture = capture::read_stream(&file, true, |_, _| Ok(()))
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(notice) = capture.cut_short_notice() {
        eprintln!("tracer: {}: {notice}", path.display());
    }
    for notice in capture.damage_notices() {
        eprintln!("tracer: {}: warning: {notice}", path.display());
    }
    if !capture.skipped.is_empty() {
        log::info!("skipped chunks this version does not know: {}", capture.skipped.join(", "));
    }
    let kernel = match kernel {
        Some(kernel) => kernel,
        None => kernel_symbolizer(&capture, args.vmlinux.as_deref())?,
    };
    let mut whole = capture.whole_report();
    if let Some(heatmap) = &heatmap {
        let title = format!(
            "{} ({}), {}",
            whole.host.hostname,
            whole.host.kernel_release,
            crate::capture::utc(capture.header.start_unix_s)
        );
        out.write(&heatmap.render(&title))?;
        return out.finish().map(|()| ExitCode::SUCCESS);
    }
    resolve_again(&mut whole, kernel.as_ref());
    let printed_intervals = capture.header.interval_s.is_some();
    let rendered = match args.format {
        ReportFormat::Svg => render::flame::render(&whole, args.flame)?,
        format => render_capture(&[], &whole, format, printed_intervals)?,
    };
    out.write(&rendered)?;
    out.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// `report -o OUT`, else standard output.
struct Output {
    out: Box<dyn Write>,
    path: Option<PathBuf>,
}

impl Output {
    fn open(path: Option<&Path>) -> Result<Self> {
        let out: Box<dyn Write> = match path {
            Some(path) => Box::new(BufWriter::new(
                File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
            )),
            None => Box::new(BufWriter::new(std::io::stdout().lock())),
        };
        Ok(Self { out, path: path.map(Path::to_path_buf) })
    }

    fn write(&mut self, text: &str) -> Result<()> {
        self.out.write_all(text.as_bytes()).with_context(|| self.what())
    }

    fn finish(mut self) -> Result<()> {
        self.out.flush().with_context(|| self.what())
    }

    fn what(&self) -> String {
        match &self.path {
            Some(path) => format!("cannot write {}", path.display()),
            None => "cannot write to standard output".into(),
        }
    }
}

/// The interval reports `record` printed (with `--interval` only) and the
/// whole-run report.
#[cfg(test)]
fn reports(capture: &Capture) -> (Vec<Report>, Report) {
    let intervals = if capture.header.interval_s.is_some() { capture.intervals.clone() } else { Vec::new() };
    (intervals, capture.whole_report())
}

fn kernel_symbolizer(capture: &Capture, vmlinux: Option<&Path>) -> Result<Option<KernelSymbolizer>> {
    vmlinux.map(|vmlinux| recorded_kernel_symbolizer(capture, vmlinux)).transpose()
}

fn recorded_kernel_symbolizer(capture: &Capture, vmlinux: &Path) -> Result<KernelSymbolizer> {
    let kernel = capture.system.as_ref().map(|s| &s.kernel);
    KernelSymbolizer::for_recorded_kernel(
        vmlinux,
        kernel.and_then(|k| k.build_id.as_deref()),
        kernel.and_then(|k| k.stext),
    )
    .map_err(|why| anyhow!("{why}"))
}

/// Kernel frames from the vmlinux when one is given; user frames still
/// unresolved from this machine's files or debug files with their build id.
fn resolve_again(report: &mut Report, kernel: Option<&KernelSymbolizer>) {
    if let Some(kernel) = kernel {
        for stack in report.kernel_stacks_mut() {
            kernel.resolve_recorded(stack);
        }
    }
    for stack in report.user_stacks_mut() {
        symbolize::resolve_user_frames(stack);
    }
}

/// The whole output, as `trace` (or `record`) printed it for text and
/// JSON: interval reports first when the run printed them.
pub fn render_capture(
    intervals: &[Report],
    whole: &Report,
    format: ReportFormat,
    printed_intervals: bool,
) -> Result<String> {
    Ok(match format {
        ReportFormat::Text | ReportFormat::Json => {
            let json = format == ReportFormat::Json;
            let mut out = String::new();
            for report in intervals.iter().chain(std::iter::once(whole)) {
                out += &render::report(report, json, printed_intervals)?;
            }
            out
        }
        ReportFormat::Folded => render::folded::render(whole),
        ReportFormat::Svg => render::flame::render(whole, render::flame::FlameUnit::Time)?,
        ReportFormat::Perfetto => render::perfetto::render(whole)?,
        // Drawn from the intervals as the capture streams by (`run`).
        ReportFormat::Heatmap => anyhow::bail!("the heat map is drawn from a capture's intervals"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{capture::CaptureHeader, model::Window};

    fn report(interval: Option<u64>) -> Report {
        Report {
            tool: "tracer".into(),
            window: Window { interval, duration_s: 1.0, ..Window::default() },
            ..Report::default()
        }
    }

    fn capture(interval_s: Option<f64>) -> Capture {
        use crate::capture::{CaptureWriter, Chunk};
        let mut writer = CaptureWriter::new(Vec::new()).unwrap();
        writer.write(Chunk::Header(&CaptureHeader { interval_s, ..CaptureHeader::default() })).unwrap();
        writer.write(Chunk::Interval(&report(Some(0)))).unwrap();
        writer.write(Chunk::Interval(&report(Some(1)))).unwrap();
        writer.write(Chunk::Final(&report(None))).unwrap();
        capture::read(writer.get_ref()).unwrap()
    }

    #[test]
    fn interval_reports_only_when_the_run_printed_them() {
        let (intervals, whole) = reports(&capture(Some(1.0)));
        assert_eq!((intervals.len(), whole.window.interval), (2, None));
        let (intervals, _) = reports(&capture(None));
        assert!(intervals.is_empty());
    }

    #[test]
    fn json_and_text_as_trace_prints_them() {
        let (intervals, whole) = reports(&capture(Some(1.0)));
        let lines = render_capture(&intervals, &whole, ReportFormat::Json, true).unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 3, "JSON Lines: {lines:?}");
        assert_eq!(lines[2], render::json::render_line(&whole).unwrap().trim_end());
        let pretty = render_capture(&[], &whole, ReportFormat::Json, false).unwrap();
        assert_eq!(pretty, render::json::render(&whole).unwrap());
        let text = render_capture(&intervals, &whole, ReportFormat::Text, true).unwrap();
        assert!(text.starts_with("--- interval 1 "), "{text}");
        assert!(text.ends_with(&render::text::render(&whole)), "{text}");
    }
}
