//! Command-line arguments, all in one place.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::units::{
    Threshold, parse_duration, parse_duration_or_zero, parse_interval, parse_size, parse_threshold,
};

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version = crate::build_info::LONG_VERSION,
    about = "eBPF tracing for Linux memory and I/O latency forensics",
    long_about = "eBPF tracing for Linux memory and I/O latency forensics.\n\n\
                  trace, record and probes need root (or CAP_BPF + CAP_PERFMON); report \
                  does not. Everything it attaches is detached when it exits, however it exits."
)]
pub struct Cli {
    /// More diagnostics on stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace now and print a report at the end (and per --interval).
    Trace(TraceArgs),
    /// Trace exactly like `trace` and print the same report, and also write
    /// a capture file (`-o`) that `tracer report` renders on any machine.
    Record(RecordArgs),
    /// Render a capture written by `tracer record`, anywhere: no root, no
    /// BPF, not the traced host.
    Report(ReportArgs),
    /// Show which hooks this kernel offers each family, and which are used.
    Probes(ProbesArgs),
    /// Trace until stopped, keeping the last minutes in memory, and write a
    /// capture of them to --dir when a trigger fires (an OOM kill, a slow
    /// disk, a long stall, memory pressure, SIGUSR1).
    Watch(WatchArgs),
}

/// A probe family named on the command line: its place in
/// [`crate::families::REGISTRY`], which is also its place in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FamilyName(usize);

impl FamilyName {
    pub fn named(name: &str) -> Option<Self> {
        crate::families::REGISTRY.iter().position(|f| f.name == name).map(Self)
    }

    /// Every family, in report order.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..crate::families::REGISTRY.len()).map(Self)
    }

    pub fn spec(self) -> &'static crate::families::FamilySpec {
        &crate::families::REGISTRY[self.0]
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }
}

/// The families' names, each with its one-line help, from the registry.
fn family_parser() -> impl clap::builder::TypedValueParser<Value = FamilyName> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
    let values = crate::families::REGISTRY.iter().map(|f| PossibleValue::new(f.name).help(f.about));
    PossibleValuesParser::new(values).map(|name| FamilyName::named(&name).expect("a registered name"))
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub run: RunOptions,
    /// Write the report to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// The capture file to write (created with mode 0600; replaced if it
    /// exists). The report still goes to standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    pub capture: PathBuf,
    #[command(flatten)]
    pub run: RunOptions,
}

/// What to trace and how: the options `trace` and `record` share.
#[derive(Debug, Clone, Args)]
pub struct RunOptions {
    /// Families to trace (default: every family this version implements).
    #[arg(value_parser = family_parser())]
    pub families: Vec<FamilyName>,
    /// How long to trace, e.g. 10s, 500ms, 2m (default 10s; `watch`: until
    /// stopped). Ctrl-C or SIGTERM ends it early with the final report.
    #[arg(short, long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Also print a report every interval, e.g. 1s.
    #[arg(short, long, value_parser = parse_interval, allow_hyphen_values = true)]
    pub interval: Option<Duration>,
    /// JSON instead of text (one object; with --interval, one line per
    /// interval and the whole run last).
    #[arg(long)]
    pub json: bool,
    /// With --interval on a terminal, print each interval's full report
    /// instead of one time-line row (files and JSON always get them all).
    #[arg(long)]
    pub full_intervals: bool,
    /// Only these disks (e.g. nvme0n1, /dev/sda); repeatable.
    #[arg(long = "disk", value_name = "NAME")]
    pub disks: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics while tracing
    /// (e.g. 127.0.0.1:9435): counters and native histograms, cumulative
    /// since the start (docs/metrics.md).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Push the same metrics every interval as OTLP/HTTP protobuf to an
    /// OpenTelemetry collector, e.g. http://127.0.0.1:4318/v1/metrics.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<crate::export::otlp::Endpoint>,
    /// Block latency from insert into the queue (queue + device time)
    /// instead of from issue to the driver (device time).
    #[arg(short = 'Q', long)]
    pub queued: bool,
    /// Report block requests at least this slow one by one (device,
    /// operation, size, sector, process); "off" to disable.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10ms",
        value_parser = parse_threshold,
        allow_hyphen_values = true
    )]
    pub slow_io: Threshold,
    /// Only this process (its pid). Block I/O is attributed to the process
    /// running when a request starts.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only tasks with this exact name (as in /proc/PID/comm, at most 15
    /// bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only tasks in this memory cgroup or below it, as a path in the
    /// hierarchy (/db) or in the filesystem (/sys/fs/cgroup/memory/db).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Allocation failures of this order and above only.
    #[arg(long, default_value_t = 0)]
    pub min_order: u32,
    /// A vmlinux with debug info for this kernel: file:line and inlined
    /// frames in kernel stacks (else symbol+offset from /proc/kallsyms).
    #[arg(long, value_name = "PATH")]
    pub vmlinux: Option<PathBuf>,
    /// Bytes of user stack copied at allocation failures and OOM triggers
    /// (and at most once a second per process and stack of a stall or
    /// throttle), to unwind binaries without frame pointers from their CFI
    /// (as perf --call-graph dwarf,8192); at most 16K. 0: frame pointers
    /// only.
    #[arg(long, value_name = "SIZE", default_value = "8K", value_parser = parse_user_stack)]
    pub user_stack: u32,
    /// Use raw tracepoints even where BTF tracepoints work.
    #[arg(long, hide = true)]
    pub force_raw_tp: bool,
    /// Set by `watch`: only interval reports matter, so events already in
    /// one are not kept for a whole-run report.
    #[arg(skip)]
    pub intervals_only: bool,
}

impl RunOptions {
    /// What the families read of these options.
    pub fn family_options(&self) -> crate::families::Options {
        crate::families::Options {
            queued: self.queued,
            slow_io: self.slow_io.0,
            min_order: self.min_order,
            user_stack_bytes: self.user_stack,
            whole_run_events: !self.intervals_only,
        }
    }

    /// `--duration`, or trace's default.
    pub fn duration(&self) -> Duration {
        self.duration.unwrap_or(Duration::from_secs(10))
    }
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Where captures are written (created 0700; files 0600).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// What writes a capture; repeatable: oom, alloc-fail[:ORDER],
    /// p99[:DISK]>DURATION, io[:DISK]>DURATION, stall>DURATION,
    /// stall-total>DURATION (per interval), psi:some|full>STALL/WINDOW[@CGROUP],
    /// signal. SIGUSR1 always writes one at once.
    #[arg(long = "trigger", value_name = "SPEC", required = true, value_parser = crate::watch::trigger::parse)]
    pub triggers: Vec<crate::watch::trigger::Trigger>,
    /// How much of the past a capture holds.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub keep: Duration,
    /// How long after the trigger a capture goes on before it is written.
    #[arg(long, default_value = "30s", value_parser = parse_duration_or_zero)]
    pub after: Duration,
    /// At most one capture per trigger in this time.
    #[arg(long, default_value = "10m", value_parser = parse_duration_or_zero)]
    pub cooldown: Duration,
    /// The most --dir may hold; the oldest captures are removed first.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub max_disk: u64,
    /// Exit after the first capture.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A capture written by `tracer record`.
    #[arg(value_name = "FILE")]
    pub capture: PathBuf,
    /// What to render.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write to OUT instead of standard output.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// What the flame graph (`--format svg`) measures: time stalled or
    /// events (never both in one graph).
    #[arg(long, value_enum, default_value_t = crate::render::flame::FlameUnit::Time)]
    pub flame: crate::render::flame::FlameUnit,
    /// The traced kernel's vmlinux with debug info: kernel frames are
    /// resolved again from their addresses (file:line, inlined functions).
    /// Its build id must be the one the capture recorded.
    #[arg(long, value_name = "PATH")]
    pub vmlinux: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// As `tracer trace` prints it.
    Text,
    /// As `tracer trace --json` prints it.
    Json,
    /// Folded stacks (one line per stack and count), for flame graph tools.
    Folded,
    /// A flame graph (SVG).
    Svg,
    /// Perfetto / Chrome trace event JSON, for ui.perfetto.dev.
    Perfetto,
    /// A block latency heat map per disk (SVG): time across, latency up,
    /// colour by requests, from the capture's intervals.
    Heatmap,
}

#[derive(Debug, Clone, Args)]
pub struct ProbesArgs {
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Checks that hold between arguments (each alone parsed fine); the
/// message of a usage error (exit status 2).
pub fn cross_check(cli: &Cli) -> Result<(), String> {
    let run = match &cli.command {
        Command::Trace(args) => &args.run,
        Command::Record(args) => &args.run,
        Command::Watch(args) => {
            if args.keep < args.run.interval.unwrap_or(Duration::from_secs(1)) {
                return Err("--keep is shorter than one interval: a capture would hold nothing".into());
            }
            &args.run
        }
        Command::Report(_) | Command::Probes(_) => return Ok(()),
    };
    match (run.interval, run.duration) {
        (Some(interval), Some(duration)) if interval > duration => Err(format!(
            "--interval {interval:?} is longer than --duration {duration:?}: no interval would end before \
             the run does; trace longer or use a shorter interval",
        )),
        (Some(interval), None) if interval > run.duration() && !matches!(cli.command, Command::Watch(_)) => {
            Err(format!(
                "--interval {interval:?} is longer than the default --duration of 10s: no interval would end \
                 before the run does; give a longer --duration"
            ))
        }
        _ => Ok(()),
    }
}

/// Parses the command line; usage errors (including [`cross_check`]) exit
/// with status 2 and clap's usage line.
pub fn parse() -> Cli {
    use clap::{CommandFactory as _, Parser as _};
    let cli = Cli::parse();
    if let Err(message) = cross_check(&cli) {
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    }
    cli
}

/// `--user-stack`: a size up to what one ring record carries.
fn parse_user_stack(text: &str) -> Result<u32, String> {
    let max = tracer_common::ustack::USER_STACK_MAX as u64;
    if text.trim() == "0" {
        return Ok(0);
    }
    match crate::units::parse_size(text)? {
        bytes if bytes <= max => Ok(bytes as u32),
        bytes => {
            Err(format!("{bytes} bytes is more than one event carries ({max}); 16K at most, 0 for none"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MAX_DURATION;

    #[test]
    fn record_takes_the_trace_options_and_a_capture_path() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "tracer",
            "record",
            "-o",
            "run.cap",
            "block",
            "oom",
            "--interval",
            "1s",
            "--json",
        ])
        .unwrap();
        let Command::Record(args) = cli.command else { panic!("not record: {cli:?}") };
        assert_eq!(args.capture, PathBuf::from("run.cap"));
        assert_eq!(args.run.families.iter().map(|f| f.as_str()).collect::<Vec<_>>(), ["block", "oom"]);
        assert_eq!((args.run.interval, args.run.json), (Some(Duration::from_secs(1)), true));
        assert_eq!(args.run.duration(), Duration::from_secs(10), "the same default as trace");
        let err = Cli::try_parse_from(["tracer", "record", "block"]).unwrap_err();
        assert!(err.to_string().contains("--output <FILE>"), "{err}");
    }

    #[test]
    fn report_takes_a_capture_a_format_and_a_vmlinux() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["tracer", "report", "run.cap"]).unwrap();
        let Command::Report(args) = cli.command else { panic!("not report: {cli:?}") };
        assert_eq!(
            (args.capture, args.format, args.output, args.vmlinux),
            ("run.cap".into(), ReportFormat::Text, None, None)
        );
        let cli = Cli::try_parse_from([
            "tracer",
            "report",
            "run.cap",
            "--format",
            "perfetto",
            "-o",
            "trace.json",
            "--vmlinux",
            "/v",
        ])
        .unwrap();
        let Command::Report(args) = cli.command else { panic!("not report: {cli:?}") };
        assert_eq!(args.format, ReportFormat::Perfetto);
        assert_eq!((args.output, args.vmlinux), (Some("trace.json".into()), Some("/v".into())));
        assert!(Cli::try_parse_from(["tracer", "report", "run.cap", "--format", "pdf"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn absurd_durations_are_errors_not_panics() {
        for absurd in ["99999999999999999999s", "1e400", "99999999999999999999999999999999h", "367d"] {
            assert!(parse_duration(absurd).is_err(), "{absurd}");
        }
        let long = format!("{}s", MAX_DURATION.as_secs() + 1);
        assert!(parse_duration(&long).unwrap_err().contains("too long"));
        assert_eq!(parse_duration("366d").map_err(|e| e.contains("unknown unit")), Err(true));
        assert_eq!(parse_duration("8784h").unwrap(), MAX_DURATION);
        assert!(parse_duration("0.0000000001s").unwrap_err().contains("nanosecond"));
        assert_eq!(parse_duration(".5").unwrap(), Duration::from_millis(500));
        assert!(parse_duration(".").is_err() && parse_duration("").is_err() && parse_duration("s").is_err());
    }

    #[test]
    fn negative_durations_say_so() {
        use clap::Parser as _;
        let err = Cli::try_parse_from(["tracer", "trace", "--duration", "-5s"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("`-5s` is negative: give how long, e.g. 5s"), "{err}");
        let err = Cli::try_parse_from(["tracer", "trace", "--interval", "-1s"]).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        let err = Cli::try_parse_from(["tracer", "trace", "--slow-io", "-2ms"]).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn interval_must_fit_in_the_duration() {
        use clap::Parser as _;
        let parse = |args: &[&str]| Cli::try_parse_from([&["tracer", "record", "-o", "x"], args].concat());
        let cli = parse(&["--duration", "5s", "--interval", "10s"]).unwrap();
        assert!(cross_check(&cli).unwrap_err().contains("--interval 10s is longer than --duration 5s"));
        assert!(cross_check(&parse(&["--duration", "5s", "--interval", "5s"]).unwrap()).is_ok());
        assert!(cross_check(&parse(&["--interval", "1s"]).unwrap()).is_ok());
        let err = parse(&["--interval", "1ms"]).unwrap_err();
        assert!(err.to_string().contains("shorter than 10 ms"), "{err}");
    }

    #[test]
    fn user_stack_sizes() {
        assert_eq!(parse_user_stack("8K"), Ok(8192));
        assert_eq!(parse_user_stack("0"), Ok(0));
        assert_eq!(parse_user_stack("16K"), Ok(16384));
        assert!(parse_user_stack("17K").unwrap_err().contains("16K at most"));
    }
}
