//! Capture files: a recorded run that `tracer report` renders anywhere.
//! Pure: the writer writes to any `Write`, the reader reads bytes; the
//! format is documented in docs/capture.md.
//!
//! ```text
//! file  = "TRACERCAP" version:u32le chunk*
//! chunk = kind:[u8; 4] length:u32le crc32:u32le payload:[u8; length]
//! ```
//!
//! The CRC-32 covers kind, length and payload. Payloads are JSON. Chunks
//! are written whole and flushed one by one as the run goes (header, system
//! context, one per interval, system counters at the end, the final report,
//! the end marker), so a capture cut short by SIGKILL or a crash still
//! reads up to its last complete chunk.

use std::{fmt, io};

use serde::{Deserialize, Serialize};

use crate::{
    merge::merge_intervals,
    model::{FamilyStatus, Host, MemoryState, Report, SystemContext, Window},
};

pub const MAGIC: &[u8; 9] = b"TRACERCAP";
/// The format this version writes and the newest it reads. 2: histogram
/// buckets are exponential (schema 4) and carry their index; format 1's
/// log-linear buckets still read.
pub const FORMAT_VERSION: u32 = 2;
const FILE_HEADER_LEN: usize = MAGIC.len() + 4;
const CHUNK_HEADER_LEN: usize = 12;

/// What a run was, written first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureHeader {
    pub tool: String,
    pub version: String,
    /// The command that recorded it, as typed.
    pub command_line: Vec<String>,
    /// Wall clock when tracing started, seconds since the Unix epoch.
    pub start_unix_s: f64,
    pub host: Host,
    /// Per family: traced or not, with which hook.
    pub families: Vec<FamilyStatus>,
    /// `--duration`: how long the run was to last.
    pub duration_s: f64,
    /// `--interval`, when given (interval reports were printed too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<f64>,
    /// How often an interval report was written: `--interval`, else 1 s.
    pub sample_period_s: f64,
    /// `--json`: how `record` printed its report.
    pub json: bool,
}

/// The end marker: the run ended normally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureEnd {
    /// "duration", "interrupted" (SIGINT) or "terminated" (SIGTERM).
    pub ended_by: String,
    pub intervals: u64,
}

/// One chunk to write.
pub enum Chunk<'a> {
    Header(&'a CaptureHeader),
    /// The system context as the run started (without `end`).
    SystemStart(&'a SystemContext),
    Interval(&'a Report),
    /// The memory counters as the run ended.
    SystemEnd(&'a MemoryState),
    /// The whole-run report, as `record` printed it.
    Final(&'a Report),
    End(&'a CaptureEnd),
}

const HEADER: [u8; 4] = *b"HEAD";
const SYSTEM_START: [u8; 4] = *b"SYSS";
const INTERVAL: [u8; 4] = *b"IVAL";
const SYSTEM_END: [u8; 4] = *b"SYSE";
const FINAL: [u8; 4] = *b"FINL";
const END: [u8; 4] = *b"DONE";

impl Chunk<'_> {
    fn kind(&self) -> [u8; 4] {
        match self {
            Chunk::Header(_) => HEADER,
            Chunk::SystemStart(_) => SYSTEM_START,
            Chunk::Interval(_) => INTERVAL,
            Chunk::SystemEnd(_) => SYSTEM_END,
            Chunk::Final(_) => FINAL,
            Chunk::End(_) => END,
        }
    }

    fn payload(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Chunk::Header(h) => serde_json::to_vec(h),
            Chunk::SystemStart(s) => serde_json::to_vec(s),
            Chunk::Interval(r) | Chunk::Final(r) => serde_json::to_vec(r),
            Chunk::SystemEnd(m) => serde_json::to_vec(m),
            Chunk::End(e) => serde_json::to_vec(e),
        }
    }
}

/// Writes a capture chunk by chunk, each in one write and flushed.
pub struct CaptureWriter<W: io::Write> {
    out: W,
}

impl<W: io::Write> CaptureWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = Vec::with_capacity(FILE_HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.write_all(&header)?;
        out.flush()?;
        Ok(Self { out })
    }

    pub fn write(&mut self, chunk: Chunk<'_>) -> io::Result<()> {
        let payload = chunk.payload()?;
        let length = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk larger than 4 GiB"))?;
        let mut bytes = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len());
        bytes.extend_from_slice(&chunk.kind());
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&chunk_crc(chunk.kind(), length, &payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        self.out.write_all(&bytes)?;
        self.out.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

fn chunk_crc(kind: [u8; 4], length: u32, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&kind);
    crc.update(&length.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// Why a file cannot be read as a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    Empty,
    NotACapture,
    /// Written by a newer tracer.
    NewerVersion(u32),
    /// A capture cut short before anything could be recovered.
    NoHeader,
    /// A chunk that fails its checksum or does not parse, at this offset.
    Corrupt {
        at: usize,
        why: String,
    },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Empty => write!(f, "the file is empty: not a tracer capture"),
            CaptureError::NotACapture => {
                write!(
                    f,
                    "not a tracer capture (it does not start with TRACERCAP; `tracer record -o FILE` writes them)"
                )
            }
            CaptureError::NewerVersion(v) => write!(
                f,
                "written by a newer format version ({v}; this tracer reads up to {FORMAT_VERSION}): \
                 report it with a newer tracer"
            ),
            CaptureError::NoHeader => {
                write!(f, "a tracer capture cut short before its header was complete: nothing to report")
            }
            CaptureError::Corrupt { at, why } => write!(f, "corrupt chunk at byte {at}: {why}"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// A capture as read: everything up to its last complete chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub header: CaptureHeader,
    pub system: Option<SystemContext>,
    pub system_end: Option<MemoryState>,
    pub intervals: Vec<Report>,
    pub final_report: Option<Report>,
    /// Absent when the capture was cut short (killed, crashed, disk full).
    pub end: Option<CaptureEnd>,
    /// Bytes up to the end of the last complete chunk, and in the file.
    pub complete_bytes: usize,
    pub file_bytes: usize,
    /// Kinds of chunks this version does not know, skipped.
    pub skipped: Vec<String>,
}

/// Reads a capture. Never panics, whatever the bytes.
pub fn read(bytes: &[u8]) -> Result<Capture, CaptureError> {
    if bytes.is_empty() {
        return Err(CaptureError::Empty);
    }
    let magic_len = MAGIC.len().min(bytes.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(CaptureError::NotACapture);
    }
    let Some(version) = bytes.get(MAGIC.len()..FILE_HEADER_LEN) else {
        return Err(CaptureError::NoHeader);
    };
    let version = u32::from_le_bytes(version.try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(CaptureError::NewerVersion(version));
    }
    if version == 0 {
        return Err(CaptureError::Corrupt { at: MAGIC.len(), why: "format version 0".into() });
    }

    let mut header = None;
    let mut capture = Capture {
        header: CaptureHeader::default(),
        system: None,
        system_end: None,
        intervals: Vec::new(),
        final_report: None,
        end: None,
        complete_bytes: FILE_HEADER_LEN,
        file_bytes: bytes.len(),
        skipped: Vec::new(),
    };
    let mut at = FILE_HEADER_LEN;
    while capture.end.is_none() {
        // An incomplete chunk at the end is where the writer stopped.
        let Some(chunk_header) = bytes.get(at..at + CHUNK_HEADER_LEN) else {
            break;
        };
        let kind: [u8; 4] = chunk_header[0..4].try_into().expect("4 bytes");
        let length = u32::from_le_bytes(chunk_header[4..8].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(chunk_header[8..12].try_into().expect("4 bytes"));
        let start = at + CHUNK_HEADER_LEN;
        let Some(payload) = start.checked_add(length as usize).and_then(|end| bytes.get(start..end)) else {
            break;
        };
        let corrupt = |why: String| CaptureError::Corrupt { at, why };
        if chunk_crc(kind, length, payload) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        let name = String::from_utf8_lossy(&kind).into_owned();
        let parse_error = |e: serde_json::Error| corrupt(format!("{name} chunk does not parse ({e})"));
        if header.is_none() && kind != HEADER {
            return Err(corrupt(format!("the first chunk is {name}, not the header")));
        }
        match kind {
            HEADER => header = Some(serde_json::from_slice(payload).map_err(parse_error)?),
            SYSTEM_START => capture.system = Some(serde_json::from_slice(payload).map_err(parse_error)?),
            INTERVAL => capture.intervals.push(serde_json::from_slice(payload).map_err(parse_error)?),
            SYSTEM_END => capture.system_end = Some(serde_json::from_slice(payload).map_err(parse_error)?),
            FINAL => capture.final_report = Some(serde_json::from_slice(payload).map_err(parse_error)?),
            END => capture.end = Some(serde_json::from_slice(payload).map_err(parse_error)?),
            _ => capture.skipped.push(name),
        }
        at = start + payload.len();
        capture.complete_bytes = at;
    }
    capture.header = header.ok_or(CaptureError::NoHeader)?;
    Ok(capture)
}

impl Capture {
    pub fn cut_short(&self) -> bool {
        self.end.is_none()
    }

    /// Seconds into the run that the complete intervals cover.
    pub fn covered_s(&self) -> f64 {
        self.intervals.last().map_or(0.0, |r| r.window.offset_s + r.window.duration_s)
    }

    /// What `report` says on stderr about a capture cut short.
    pub fn cut_short_notice(&self) -> Option<String> {
        if !self.cut_short() {
            return None;
        }
        let covered = self.covered_s();
        let partial = if self.complete_bytes < self.file_bytes {
            format!(" and {} bytes of an incomplete chunk", self.file_bytes - self.complete_bytes)
        } else {
            String::new()
        };
        let whole = if self.final_report.is_some() {
            "its whole-run report is complete".to_string()
        } else {
            format!("the whole-run report is rebuilt from {}", complete_intervals(self.intervals.len()))
        };
        Some(format!(
            "the capture was cut short {:.1}s into a {:.1}s run (at {}): it ends after byte {}{partial}; {whole}",
            covered,
            self.header.duration_s,
            utc(self.header.start_unix_s + covered),
            self.complete_bytes,
        ))
    }

    /// The whole-run report: the one `record` printed, or, when the capture
    /// was cut short before it, the complete intervals merged.
    pub fn whole_report(&self) -> Report {
        if let Some(report) = &self.final_report {
            return report.clone();
        }
        let h = &self.header;
        let mut report = merge_intervals(&self.intervals);
        report.tool = h.tool.clone();
        report.version = h.version.clone();
        report.host = h.host.clone();
        report.families = h.families.clone();
        report.window = Window {
            start_unix_s: h.start_unix_s,
            offset_s: 0.0,
            duration_s: self.covered_s(),
            interval: None,
        };
        report.system = self.system.clone().map(|s| SystemContext { end: self.system_end.clone(), ..s });
        report.warnings.push(format!(
            "rebuilt from {} of a capture cut short {:.1}s into the run",
            complete_intervals(self.intervals.len()),
            self.covered_s()
        ));
        report
    }
}

fn complete_intervals(n: usize) -> String {
    if n == 1 { "1 complete interval".into() } else { format!("{n} complete intervals") }
}

/// `2026-11-22 04:12:03 UTC` for seconds since the Unix epoch.
pub fn utc(unix_s: f64) -> String {
    let secs = unix_s.max(0.0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlockRow, KernelInfo, Percentiles};

    fn header() -> CaptureHeader {
        CaptureHeader {
            tool: "tracer".into(),
            version: "0.1.0".into(),
            command_line: vec!["tracer".into(), "record".into(), "-o".into(), "x.cap".into()],
            start_unix_s: 1_795_000_000.25,
            host: Host { hostname: "db7".into(), kernel_release: "6.18.44".into() },
            families: vec![FamilyStatus {
                family: "block".into(),
                state: "traced".into(),
                hook: "tp_btf".into(),
                detail: String::new(),
            }],
            duration_s: 10.0,
            interval_s: None,
            sample_period_s: 1.0,
            json: true,
        }
    }

    fn interval(index: u64, count: u64) -> Report {
        Report {
            tool: "tracer".into(),
            version: "0.1.0".into(),
            window: Window {
                start_unix_s: 1_795_000_000.25 + index as f64,
                offset_s: index as f64,
                duration_s: 1.0,
                interval: Some(index),
            },
            block: vec![BlockRow {
                device: "loop0".into(),
                dev: "7:0".into(),
                op: "read".into(),
                count,
                bytes: count * 4096,
                errors: 0,
                untimed: count,
                latency_us: Percentiles { relative_error: 0.03125, ..Percentiles::default() },
                histogram: Vec::new(),
            }],
            ..Report::default()
        }
    }

    fn system() -> SystemContext {
        SystemContext {
            kernel: KernelInfo {
                release: "6.18.44".into(),
                build_id: Some("ab12".into()),
                stext: Some(0xffff_ffff_8100_0000),
                ..KernelInfo::default()
            },
            cmdline: "root=/dev/vda1".into(),
            ..SystemContext::default()
        }
    }

    /// A capture of three intervals; returns the bytes and where each
    /// chunk starts.
    fn complete_capture() -> (Vec<u8>, Vec<usize>, Report) {
        fn put(w: &mut CaptureWriter<Vec<u8>>, starts: &mut Vec<usize>, chunk: Chunk<'_>) {
            starts.push(w.get_ref().len());
            w.write(chunk).unwrap();
        }
        let (mut writer, mut starts) = (CaptureWriter::new(Vec::new()).unwrap(), Vec::new());
        put(&mut writer, &mut starts, Chunk::Header(&header()));
        put(&mut writer, &mut starts, Chunk::SystemStart(&system()));
        let intervals: Vec<Report> = (0..3).map(|i| interval(i, 10 + i)).collect();
        for r in &intervals {
            put(&mut writer, &mut starts, Chunk::Interval(r));
        }
        let end_state = MemoryState { taken_unix_s: 1_795_000_003.0, ..MemoryState::default() };
        put(&mut writer, &mut starts, Chunk::SystemEnd(&end_state));
        let mut whole = merge_intervals(&intervals);
        whole.system = Some(SystemContext { end: Some(end_state), ..system() });
        put(&mut writer, &mut starts, Chunk::Final(&whole));
        put(&mut writer, &mut starts, Chunk::End(&CaptureEnd { ended_by: "duration".into(), intervals: 3 }));
        let bytes = writer.get_ref().clone();
        (bytes, starts, whole)
    }

    #[test]
    fn round_trips() {
        let (bytes, _, whole) = complete_capture();
        assert_eq!(&bytes[..9], b"TRACERCAP");
        assert_eq!(&bytes[9..13], &FORMAT_VERSION.to_le_bytes());
        let capture = read(&bytes).unwrap();
        assert_eq!(capture.header, header());
        assert_eq!(capture.system, Some(system()));
        assert_eq!(capture.intervals.len(), 3);
        assert_eq!(capture.intervals[2], interval(2, 12));
        assert_eq!(capture.final_report.as_ref(), Some(&whole));
        assert_eq!(capture.whole_report(), whole);
        assert!(!capture.cut_short());
        assert_eq!(capture.cut_short_notice(), None);
        assert_eq!((capture.complete_bytes, capture.file_bytes), (bytes.len(), bytes.len()));
    }

    #[test]
    fn floats_survive_exactly() {
        let mut report = interval(0, 1);
        report.window.start_unix_s = 1_795_000_000.123_456_7;
        report.block[0].latency_us.mean = 0.1 + 0.2;
        report.block[0].latency_us.p99 = 1.0 / 3.0;
        let mut writer = CaptureWriter::new(Vec::new()).unwrap();
        writer.write(Chunk::Header(&header())).unwrap();
        writer.write(Chunk::Final(&report)).unwrap();
        let capture = read(writer.get_ref()).unwrap();
        let again = capture.final_report.unwrap();
        assert_eq!(again, report);
        assert_eq!(
            crate::render::json::render(&again).unwrap(),
            crate::render::json::render(&report).unwrap()
        );
    }

    #[test]
    fn empty_and_foreign_files() {
        assert_eq!(read(b""), Err(CaptureError::Empty));
        assert_eq!(read(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"), Err(CaptureError::NotACapture));
        assert_eq!(read(b"{\"tool\": \"tracer\"}"), Err(CaptureError::NotACapture));
        assert_eq!(read(b"TRACER"), Err(CaptureError::NoHeader), "a prefix of the magic: cut short");
        assert!(read(b"").unwrap_err().to_string().contains("empty"));
        assert!(read(b"hello").unwrap_err().to_string().contains("not a tracer capture"));
    }

    /// A format-1 capture (log-linear buckets, no index) still reads, and
    /// its intervals merge into exponential buckets holding the same counts,
    /// each within one bucket of where it was.
    #[test]
    fn format_1_captures_still_read() {
        let bytes = include_bytes!("../../fuzz/seeds/capture_reader/complete.cap");
        assert_eq!(&bytes[9..13], &1u32.to_le_bytes());
        let capture = read(bytes).unwrap();
        let merged = merge_intervals(&capture.intervals);
        let old: Vec<_> = capture.intervals.iter().flat_map(|r| r.block.iter()).collect();
        assert!(!old.is_empty(), "the seed has block rows");
        let old_total: u64 = old.iter().flat_map(|row| row.histogram.iter()).map(|b| b.count).sum();
        let new_total: u64 = merged.block.iter().flat_map(|row| row.histogram.iter()).map(|b| b.count).sum();
        assert_eq!(old_total, new_total);
        for bucket in merged.block.iter().flat_map(|row| row.histogram.iter()) {
            assert!(bucket.index.is_some(), "merged buckets are exponential: {bucket:?}");
            let old_near = old.iter().flat_map(|row| row.histogram.iter()).any(|b| {
                let mid = (b.low_us + b.high_us) / 2.0;
                bucket.low_us < mid && mid <= bucket.high_us
            });
            assert!(old_near, "{bucket:?} holds a format-1 bucket's midpoint");
        }
    }

    #[test]
    fn newer_versions_are_refused() {
        let (mut bytes, _, _) = complete_capture();
        bytes[9..13].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let err = read(&bytes).unwrap_err();
        assert_eq!(err, CaptureError::NewerVersion(FORMAT_VERSION + 1));
        assert!(err.to_string().contains(&format!("newer format version ({}", FORMAT_VERSION + 1)), "{err}");
    }

    #[test]
    fn truncated_anywhere_reads_the_complete_chunks() {
        let (bytes, starts, _) = complete_capture();
        let boundaries: Vec<usize> = starts.iter().copied().chain([bytes.len()]).collect();
        let (header_end, end_marker) = (starts[1], starts[7]);
        for len in 0..bytes.len() {
            let result = read(&bytes[..len]);
            if len < header_end {
                assert!(result.is_err(), "{len} bytes: no complete header, nothing to report");
                continue;
            }
            let capture = result.unwrap_or_else(|e| panic!("{len} bytes: {e}"));
            assert!(capture.cut_short(), "{len} bytes");
            assert_eq!(capture.header, header());
            let complete_end = boundaries.iter().copied().filter(|&b| b <= len).max().unwrap();
            assert_eq!(capture.complete_bytes, complete_end, "{len} bytes");
            // Interval chunks are the 3rd to 5th; each is complete when its
            // end is in.
            let intervals = (3..6).filter(|&j| boundaries[j] <= len).count();
            assert_eq!(capture.intervals.len(), intervals, "{len} bytes");
            let notice = capture.cut_short_notice().unwrap();
            assert!(notice.contains("cut short"), "{notice}");
            if len < end_marker {
                let whole = capture.whole_report();
                let count: u64 = whole.block.iter().map(|r| r.count).sum();
                let expected: u64 = (0..intervals as u64).map(|i| 10 + i).sum();
                assert_eq!(count, expected, "{len} bytes");
                assert_eq!(whole.timeline.len(), intervals);
                assert_eq!(whole.host, header().host);
                assert!(whole.warnings.iter().any(|w| w.contains("rebuilt from")), "{:?}", whole.warnings);
            }
        }
    }

    #[test]
    fn cut_short_notice_says_when() {
        let (bytes, starts, _) = complete_capture();
        let capture = read(&bytes[..starts[4] + 20]).unwrap();
        let notice = capture.cut_short_notice().unwrap();
        assert_eq!(capture.intervals.len(), 2);
        assert!(notice.contains("cut short 2.0s into a 10.0s run"), "{notice}");
        assert!(notice.contains(&format!("ends after byte {}", starts[4])), "{notice}");
        assert!(notice.contains("20 bytes of an incomplete chunk"), "{notice}");
        assert!(notice.contains("rebuilt from 2 complete intervals"), "{notice}");
        assert!(notice.contains("2026-11-18"), "{notice}");
    }

    #[test]
    fn a_flipped_bit_is_a_corrupt_chunk() {
        let (bytes, starts, _) = complete_capture();
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
            // Kind, checksum and payload bytes (the length is below).
            for at in (start..start + 4).chain(start + 8..end) {
                let mut flipped = bytes.clone();
                flipped[at] ^= 0x10;
                let err = read(&flipped).unwrap_err();
                assert_eq!(
                    err,
                    CaptureError::Corrupt { at: start, why: "checksum mismatch".into() },
                    "flip at {at}"
                );
                assert!(err.to_string().contains(&format!("corrupt chunk at byte {start}")), "{err}");
            }
        }
    }

    /// A flipped length either breaks the checksum or points past the end
    /// (where a cut-short capture ends too): never a silent misread.
    #[test]
    fn a_flipped_length_is_never_read_as_complete() {
        let (bytes, starts, _) = complete_capture();
        for &start in &starts {
            for at in start + 4..start + 8 {
                for bit in 0..8 {
                    let mut flipped = bytes.clone();
                    flipped[at] ^= 1 << bit;
                    match read(&flipped) {
                        Err(CaptureError::Corrupt { at: where_, .. }) => assert_eq!(where_, start),
                        Err(e) => assert_eq!(e, CaptureError::NoHeader, "flip at {at}"),
                        Ok(capture) => assert!(capture.cut_short(), "flip at {at}"),
                    }
                }
            }
        }
    }

    #[test]
    fn the_first_chunk_must_be_the_header() {
        let mut writer = CaptureWriter::new(Vec::new()).unwrap();
        writer.write(Chunk::Interval(&interval(0, 1))).unwrap();
        let err = read(writer.get_ref()).unwrap_err();
        assert_eq!(err.to_string(), "corrupt chunk at byte 13: the first chunk is IVAL, not the header");
    }

    #[test]
    fn a_payload_that_does_not_parse_is_corrupt() {
        let mut bytes = CaptureWriter::new(Vec::new()).unwrap().get_ref().clone();
        let payload = b"{\"tool\": 3}";
        bytes.extend_from_slice(b"HEAD");
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&chunk_crc(*b"HEAD", payload.len() as u32, payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.starts_with("corrupt chunk at byte 13: HEAD chunk does not parse"), "{err}");
    }

    #[test]
    fn unknown_chunks_are_skipped() {
        let (bytes, starts, _) = complete_capture();
        let mut with_unknown = bytes[..starts[2]].to_vec();
        let payload = b"{}";
        with_unknown.extend_from_slice(b"XTRA");
        with_unknown.extend_from_slice(&2u32.to_le_bytes());
        with_unknown.extend_from_slice(&chunk_crc(*b"XTRA", 2, payload).to_le_bytes());
        with_unknown.extend_from_slice(payload);
        with_unknown.extend_from_slice(&bytes[starts[2]..]);
        let capture = read(&with_unknown).unwrap();
        assert_eq!(capture.skipped, ["XTRA"]);
        assert_eq!(capture.intervals.len(), 3);
        assert!(!capture.cut_short());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_000_003.9), "2026-11-18 11:06:43 UTC");
    }
}
