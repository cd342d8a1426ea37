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
