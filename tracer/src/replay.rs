//! `tracer report`: renders a capture written by `record`, on any machine.
//! Needs no root, no BPF, no tracefs: only the file (and, to resolve
//! kernel frames again, the traced kernel's vmlinux).

use std::{io::Write as _, path::Path, process::ExitCode};

use anyhow::{Context as _, Result, anyhow};

use crate::{
    capture::{self, Capture},
    cli::{ReportArgs, ReportFormat},
    model::Report,
    render,
    session::render_report,
    symbolize::{self, KernelSymbolizer},
};

pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    let path = &args.capture;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the capture {}", path.display()))?;
    let capture = capture::read(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if let Some(notice) = capture.cut_short_notice() {
        eprintln!("tracer: {}: {notice}", path.display());
    }
    if !capture.skipped.is_empty() {
        log::info!("skipped chunks this version does not know: {}", capture.skipped.join(", "));
    }
    let (mut intervals, mut whole) = reports(&capture);
    let kernel = match &args.vmlinux {
        Some(vmlinux) => Some(recorded_kernel_symbolizer(&capture, vmlinux)?),
        None => None,
    };
    for report in intervals.iter_mut().chain(std::iter::once(&mut whole)) {
        resolve_again(report, kernel.as_ref());
    }
    let text = render_capture(&intervals, &whole, args.format, capture.header.interval_s.is_some())?;
    match &args.output {
        Some(out) => std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The interval reports `record` printed (with `--interval` only) and the
/// whole-run report.
fn reports(capture: &Capture) -> (Vec<Report>, Report) {
    let intervals = if capture.header.interval_s.is_some() { capture.intervals.clone() } else { Vec::new() };
    (intervals, capture.whole_report())
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
                out += &render_report(report, json, printed_intervals)?;
            }
            out
        }
        ReportFormat::Folded => render::folded::render(whole),
        ReportFormat::Svg => render::flame::render(whole)?,
        ReportFormat::Perfetto => render::perfetto::render(whole)?,
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
        Capture {
            header: CaptureHeader { interval_s, ..CaptureHeader::default() },
            system: None,
            system_end: None,
            intervals: vec![report(Some(0)), report(Some(1))],
            final_report: Some(report(None)),
            end: None,
            complete_bytes: 0,
            file_bytes: 0,
            skipped: Vec::new(),
        }
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
