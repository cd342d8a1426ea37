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

use std::{
    fmt,
    io::{self, Read as _, Seek as _},
};

use serde::{Deserialize, Serialize};

use crate::{
    merge::Merger,
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
            .ok()
            .filter(|&l| l <= MAX_CHUNK_LEN)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "chunk larger than 256 MiB"))?;
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

/// A capture as read: everything up to its last complete chunk, minus
/// what corrupt chunks took.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub header: CaptureHeader,
    pub system: Option<SystemContext>,
    pub system_end: Option<MemoryState>,
    /// The interval reports, when read with [`read`]; [`read_stream`] hands
    /// them out one by one instead and keeps none.
    pub intervals: Vec<Report>,
    pub final_report: Option<Report>,
    /// Absent when the capture was cut short (killed, crashed, disk full).
    pub end: Option<CaptureEnd>,
    /// Bytes up to the end of the last complete chunk, and in the file.
    pub complete_bytes: usize,
    pub file_bytes: usize,
    /// Kinds of chunks this version does not know, skipped.
    pub skipped: Vec<String>,
    /// Corrupt stretches skipped, in file order.
    pub damage: Vec<Damage>,
    /// Interval reports read, and the seconds into the run they reach.
    pub interval_count: usize,
    covered_s: f64,
    /// The intervals merged, for a whole-run report when the final one is
    /// missing (when asked for: see [`read_stream`]).
    merged: Option<Merger>,
    /// The next interval index expected, to see which ones were lost.
    next_interval: Option<u64>,
}

/// A corrupt stretch of a capture, skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    /// Where the corrupt chunk starts.
    pub at: usize,
    pub why: String,
    /// Where reading went on (the next intact chunk), or None when no
    /// intact chunk follows.
    pub resumed_at: Option<usize>,
    /// Interval reports missing because of it (first..=last index), when
    /// later intervals show the gap.
    pub lost_intervals: Option<(u64, u64)>,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt chunk at byte {} ({}): ", self.at, self.why)?;
        match self.resumed_at {
            Some(next) => write!(f, "skipped bytes {}..{} up to the next intact chunk", self.at, next)?,
            None => write!(f, "no intact chunk follows; everything after byte {} is lost", self.at)?,
        }
        match self.lost_intervals {
            Some((a, b)) if a == b => write!(f, "; interval report {} is lost", a + 1),
            Some((a, b)) => write!(f, "; interval reports {}-{} are lost", a + 1, b + 1),
            None => Ok(()),
        }
    }
}

/// The largest chunk a capture may hold (the writer refuses larger ones):
/// a length above it is corruption, and reading never buffers more.
pub const MAX_CHUNK_LEN: u32 = 256 << 20;

/// Reads a capture held in memory. Never panics, whatever the bytes.
pub fn read(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let mut intervals = Vec::new();
    let mut capture = read_stream(io::Cursor::new(bytes), true, |_, r| {
        intervals.push(r);
        Ok(())
    })
    .map_err(|e| match e {
        StreamError::Capture(e) => e,
        StreamError::Io(e) => CaptureError::Corrupt { at: 0, why: e.to_string() },
        StreamError::Consumer(e) => CaptureError::Corrupt { at: 0, why: e.to_string() },
    })?;
    capture.intervals = intervals;
    Ok(capture)
}

/// Why [`read_stream`] stopped.
#[derive(Debug)]
pub enum StreamError {
    Capture(CaptureError),
    Io(io::Error),
    /// The interval consumer failed.
    Consumer(anyhow::Error),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Capture(e) => e.fmt(f),
            StreamError::Io(e) => write!(f, "reading failed: {e}"),
            StreamError::Consumer(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        StreamError::Io(e)
    }
}

/// Reads a capture chunk by chunk, handing each interval report to
/// `on_interval` as it comes, so that memory does not grow with the
/// capture (see `merge` below). A corrupt chunk after
/// the header is skipped (recorded in [`Capture::damage`]) and reading goes
/// on from the next intact chunk, found by its kind and checksum. Files
/// that are not captures are refused after their first 13 bytes. Never
/// panics, whatever the bytes.
///
/// With `merge`, the intervals are also merged as they come, for
/// [`Capture::whole_report`] when the final report is missing; without,
/// memory stays that of one chunk (read again with `merge` if
/// [`Capture::needs_merge`]).
pub fn read_stream<R: io::Read + io::Seek>(
    input: R,
    merge: bool,
    mut on_interval: impl FnMut(&Capture, Report) -> anyhow::Result<()>,
) -> Result<Capture, StreamError> {
    let mut input = io::BufReader::with_capacity(1 << 16, input);
    let mut start = [0u8; FILE_HEADER_LEN];
    let got = read_up_to(&mut input, &mut start)?;
    let bytes = &start[..got];
    if bytes.is_empty() {
        return Err(StreamError::Capture(CaptureError::Empty));
    }
    let magic_len = MAGIC.len().min(bytes.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(StreamError::Capture(CaptureError::NotACapture));
    }
    let Some(version) = bytes.get(MAGIC.len()..FILE_HEADER_LEN) else {
        return Err(StreamError::Capture(CaptureError::NoHeader));
    };
    let version = u32::from_le_bytes(version.try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(StreamError::Capture(CaptureError::NewerVersion(version)));
    }
    if version == 0 {
        return Err(StreamError::Capture(CaptureError::Corrupt {
            at: MAGIC.len(),
            why: "format version 0".into(),
        }));
    }

    // Whether the header chunk was read (it must come first).
    let mut have_header = false;
    let mut capture = Capture {
        header: CaptureHeader::default(),
        system: None,
        system_end: None,
        intervals: Vec::new(),
        final_report: None,
        end: None,
        complete_bytes: FILE_HEADER_LEN,
        file_bytes: FILE_HEADER_LEN,
        skipped: Vec::new(),
        damage: Vec::new(),
        interval_count: 0,
        covered_s: 0.0,
        merged: merge.then(Merger::default),
        next_interval: Some(0),
    };
    let mut at = FILE_HEADER_LEN;
    while capture.end.is_none() {
        let (kind, payload) = match read_chunk(&mut input)? {
            ChunkRead::Intact(kind, payload) => (kind, payload),
            // An incomplete chunk at the end is where the writer stopped;
            // unless intact chunks follow: then its length was corrupt.
            ChunkRead::Incomplete(read) => {
                if have_header && let Ok(Some(next)) = resynchronise(&mut input, at) {
                    let why = "a length that runs past the end of the file".to_string();
                    capture.damage.push(Damage { at, why, resumed_at: Some(next), lost_intervals: None });
                    at = next;
                    continue;
                }
                capture.file_bytes = at + read;
                break;
            }
            ChunkRead::Corrupt(why) if !have_header => {
                return Err(StreamError::Capture(CaptureError::Corrupt { at, why }));
            }
            ChunkRead::Corrupt(why) => {
                // A pipe cannot be searched: then nothing more is read.
                let resumed_at = resynchronise(&mut input, at).unwrap_or(None);
                capture.damage.push(Damage { at, why, resumed_at, lost_intervals: None });
                match resumed_at {
                    Some(next) => {
                        at = next;
                        continue;
                    }
                    None => {
                        capture.file_bytes = input.seek(io::SeekFrom::End(0)).map_or(at, |end| end as usize);
                        break;
                    }
                }
            }
        };
        let chunk_at = at;
        at += CHUNK_HEADER_LEN + payload.len();
        let name = String::from_utf8_lossy(&kind).into_owned();
        let corrupt = |why: String| StreamError::Capture(CaptureError::Corrupt { at: chunk_at, why });
        if !have_header && kind != HEADER {
            return Err(corrupt(format!("the first chunk is {name}, not the header")));
        }
        match parse_chunk(kind, &payload) {
            Ok(Item::Header(h)) => {
                capture.header = *h;
                have_header = true;
            }
            Ok(Item::SystemStart(system)) => capture.system = Some(*system),
            Ok(Item::Interval(report)) => {
                capture.note_interval(&report);
                if let Some(merged) = &mut capture.merged {
                    merged.add(&report);
                }
                on_interval(&capture, *report).map_err(StreamError::Consumer)?;
            }
            Ok(Item::SystemEnd(state)) => capture.system_end = Some(*state),
            Ok(Item::Final(report)) => capture.final_report = Some(*report),
            Ok(Item::End(end)) => capture.end = Some(end),
            Ok(Item::Unknown) => capture.skipped.push(name),
            // Intact (the checksum matched) but not what this version can
            // read: the header is needed, anything else is damage to skip.
            Err(why) if !have_header => return Err(corrupt(why)),
            Err(why) => {
                capture.damage.push(Damage { at: chunk_at, why, resumed_at: Some(at), lost_intervals: None })
            }
        }
        capture.complete_bytes = at;
        capture.file_bytes = at;
    }
    if capture.end.is_some() {
        // Whatever follows the end marker is not read; say how much there
        // is (when the input can tell: a pipe cannot).
        capture.file_bytes = input.seek(io::SeekFrom::End(0)).map_or(at, |end| (end as usize).max(at));
    }
    if !have_header {
        return Err(StreamError::Capture(CaptureError::NoHeader));
    }
    Ok(capture)
}

/// A chunk's payload, parsed.
enum Item {
    Header(Box<CaptureHeader>),
    SystemStart(Box<SystemContext>),
    Interval(Box<Report>),
    SystemEnd(Box<MemoryState>),
    Final(Box<Report>),
    End(CaptureEnd),
    Unknown,
}

fn parse_chunk(kind: [u8; 4], payload: &[u8]) -> Result<Item, String> {
    fn json<T: serde::de::DeserializeOwned>(kind: [u8; 4], payload: &[u8]) -> Result<Box<T>, String> {
        serde_json::from_slice(payload)
            .map_err(|e| format!("{} chunk does not parse ({e})", String::from_utf8_lossy(&kind)))
    }
    Ok(match kind {
        HEADER => Item::Header(json(kind, payload)?),
        SYSTEM_START => Item::SystemStart(json(kind, payload)?),
        INTERVAL => Item::Interval(json(kind, payload)?),
        SYSTEM_END => Item::SystemEnd(json(kind, payload)?),
        FINAL => Item::Final(json(kind, payload)?),
        END => Item::End(*json(kind, payload)?),
        _ => Item::Unknown,
    })
}

enum ChunkRead {
    Intact([u8; 4], Vec<u8>),
    /// The file ends inside the chunk, after this many of its bytes.
    Incomplete(usize),
    Corrupt(String),
}

/// Fills `buf` as far as the input goes; returns how much it read.
fn read_up_to(input: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The chunk at the reader's position. Never buffers more than
/// [`MAX_CHUNK_LEN`], whatever length the chunk claims.
fn read_chunk(input: &mut impl io::Read) -> io::Result<ChunkRead> {
    let mut head = [0u8; CHUNK_HEADER_LEN];
    let got = read_up_to(input, &mut head)?;
    if got < CHUNK_HEADER_LEN {
        return Ok(ChunkRead::Incomplete(got));
    }
    let kind: [u8; 4] = head[0..4].try_into().expect("4 bytes");
    let length = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if length > MAX_CHUNK_LEN {
        return Ok(ChunkRead::Corrupt(format!("a length of {length} bytes, more than any chunk holds")));
    }
    let mut payload = Vec::new();
    let got = io::Read::take(&mut *input, u64::from(length)).read_to_end(&mut payload)?;
    if got < length as usize {
        return Ok(ChunkRead::Incomplete(CHUNK_HEADER_LEN + got));
    }
    if chunk_crc(kind, length, &payload) != crc {
        return Ok(ChunkRead::Corrupt("checksum mismatch".into()));
    }
    Ok(ChunkRead::Intact(kind, payload))
}

const KNOWN_KINDS: [[u8; 4]; 6] = [HEADER, SYSTEM_START, INTERVAL, SYSTEM_END, FINAL, END];

/// After a corrupt chunk at `corrupt_at`: the offset of the next intact
/// chunk (a known kind whose checksum matches), positioned there, or None.
/// A chunk is never longer than [`MAX_CHUNK_LEN`], so the next one starts
/// within that distance: the search goes no further (an endless input
/// cannot keep it reading).
fn resynchronise<R: io::Read + io::Seek>(
    input: &mut io::BufReader<R>,
    corrupt_at: usize,
) -> io::Result<Option<usize>> {
    let limit = corrupt_at as u64 + (CHUNK_HEADER_LEN as u64) * 2 + u64::from(MAX_CHUNK_LEN);
    let mut window_start = corrupt_at as u64 + 1;
    const WINDOW: usize = 1 << 16;
    let mut window = vec![0u8; WINDOW + 3];
    while window_start < limit {
        input.seek(io::SeekFrom::Start(window_start))?;
        let got = read_up_to(input, &mut window)?;
        if got < 4 {
            return Ok(None);
        }
        for offset in 0..got - 3 {
            let candidate: [u8; 4] = window[offset..offset + 4].try_into().expect("4 bytes");
            if !KNOWN_KINDS.contains(&candidate) {
                continue;
            }
            let at = window_start + offset as u64;
            input.seek(io::SeekFrom::Start(at))?;
            if let ChunkRead::Intact(..) = read_chunk(input)? {
                input.seek(io::SeekFrom::Start(at))?;
                return Ok(Some(at as usize));
            }
        }
        if got < window.len() {
            return Ok(None);
        }
        window_start += WINDOW as u64;
    }
    Ok(None)
}

impl Capture {
    /// Counts an interval and sees whether intervals before it were lost.
    fn note_interval(&mut self, report: &Report) {
        self.interval_count += 1;
        self.covered_s = report.window.offset_s + report.window.duration_s;
        let Some(index) = report.window.interval else { return };
        if let Some(expected) = self.next_interval
            && index > expected
            && let Some(damage) = self.damage.last_mut()
            && damage.lost_intervals.is_none()
        {
            damage.lost_intervals = Some((expected, index - 1));
        }
        self.next_interval = Some(index + 1);
    }

    /// The whole-run report must be rebuilt from the intervals, and they
    /// were read without merging them.
    pub fn needs_merge(&self) -> bool {
        self.final_report.is_none() && self.merged.is_none()
    }

    pub fn cut_short(&self) -> bool {
        self.end.is_none()
    }

    /// Seconds into the run that the complete intervals cover.
    pub fn covered_s(&self) -> f64 {
        self.covered_s
    }

    /// What `report` says on stderr about corrupt chunks skipped.
    pub fn damage_notices(&self) -> Vec<String> {
        let whole = if self.final_report.is_some() {
            "the whole-run report is intact"
        } else {
            "the whole-run report is rebuilt from the intervals that are left"
        };
        self.damage.iter().map(|d| format!("{d}; {whole}")).collect()
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
            format!("the whole-run report is rebuilt from {}", complete_intervals(self.interval_count))
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
    /// lost it (cut short, or a corrupt chunk), the intervals merged.
    pub fn whole_report(&self) -> Report {
        if let Some(report) = &self.final_report {
            return report.clone();
        }
        let h = &self.header;
        let mut report = self.merged.clone().unwrap_or_default().finish();
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
        if self.cut_short() {
            report.warnings.push(format!(
                "rebuilt from {} of a capture cut short {:.1}s into the run",
                complete_intervals(self.interval_count),
                self.covered_s()
            ));
        }
        for damage in &self.damage {
            report.warnings.push(format!("rebuilt without what a {damage}"));
        }
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
    use crate::{
        merge::merge_intervals,
        model::{BlockRow, KernelInfo, Percentiles},
    };

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

    /// A flipped bit in the header chunk loses the capture; anywhere else
    /// it loses that chunk only: reading goes on from the next one, and a
    /// lost interval is named.
    #[test]
    fn a_flipped_bit_loses_only_its_chunk() {
        let (bytes, starts, whole) = complete_capture();
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
            // Kind, checksum and payload bytes (the length is below).
            for at in (start..start + 4).chain(start + 8..end) {
                let mut flipped = bytes.clone();
                flipped[at] ^= 0x10;
                if i == 0 {
                    let err = read(&flipped).unwrap_err();
                    assert_eq!(err, CaptureError::Corrupt { at: start, why: "checksum mismatch".into() });
                    assert!(err.to_string().contains(&format!("corrupt chunk at byte {start}")), "{err}");
                    continue;
                }
                let capture = read(&flipped).unwrap_or_else(|e| panic!("flip at {at}: {e}"));
                let resumed = (end < bytes.len()).then_some(end);
                let damage = Damage {
                    at: start,
                    why: "checksum mismatch".into(),
                    resumed_at: resumed,
                    lost_intervals: None,
                };
                let lost_interval = (2..=4).contains(&i).then(|| i as u64 - 2);
                assert_eq!(capture.damage.len(), 1, "flip at {at}");
                assert_eq!(capture.damage[0].at, damage.at);
                assert_eq!(capture.damage[0].resumed_at, damage.resumed_at);
                // The last interval's loss shows in no later interval.
                let shown = lost_interval.filter(|&k| k < 2).map(|k| (k, k));
                assert_eq!(capture.damage[0].lost_intervals, shown, "flip at {at}");
                assert_eq!(capture.intervals.len(), 3 - usize::from(lost_interval.is_some()));
                assert_eq!(
                    capture.end.is_some(),
                    resumed.is_some(),
                    "only the end marker's loss cuts it short"
                );
                if i != 6 {
                    assert_eq!(capture.whole_report(), whole, "the final report is intact: flip at {at}");
                } else {
                    let rebuilt = capture.whole_report();
                    assert_eq!(rebuilt.block[0].count, 33, "rebuilt from all intervals");
                    assert!(
                        rebuilt
                            .warnings
                            .iter()
                            .any(|w| w.contains(&format!("corrupt chunk at byte {start}")))
                    );
                }
                let notice = &capture.damage_notices()[0];
                assert!(
                    notice.starts_with(&format!("corrupt chunk at byte {start} (checksum mismatch)")),
                    "{notice}"
                );
            }
        }
    }

    #[test]
    fn damage_says_what_was_lost() {
        let lost = |lost_intervals| Damage {
            at: 700,
            why: "checksum mismatch".into(),
            resumed_at: Some(900),
            lost_intervals,
        };
        assert_eq!(
            lost(Some((2, 2))).to_string(),
            "corrupt chunk at byte 700 (checksum mismatch): skipped bytes 700..900 up to the next intact chunk; \
             interval report 3 is lost"
        );
        assert!(lost(Some((2, 4))).to_string().ends_with("interval reports 3-5 are lost"));
        let tail = Damage { resumed_at: None, ..lost(None) };
        assert!(
            tail.to_string().ends_with("no intact chunk follows; everything after byte 700 is lost"),
            "{tail}"
        );
    }

    /// A flipped length breaks the checksum or points past the end: the
    /// chunk is lost, never misread, and the chunks after it are found.
    #[test]
    fn a_flipped_length_is_never_read_as_complete() {
        let (bytes, starts, _) = complete_capture();
        for (i, &start) in starts.iter().enumerate() {
            for at in start + 4..start + 8 {
                for bit in 0..8 {
                    let mut flipped = bytes.clone();
                    flipped[at] ^= 1 << bit;
                    match read(&flipped) {
                        Err(CaptureError::Corrupt { at: where_, .. }) => assert_eq!(where_, start),
                        Err(e) => assert_eq!(e, CaptureError::NoHeader, "flip at {at}"),
                        Ok(capture) if i + 1 < starts.len() => {
                            assert_eq!(capture.damage[0].at, start, "flip at {at}");
                            assert_eq!(capture.damage[0].resumed_at, Some(starts[i + 1]), "flip at {at}");
                            assert!(!capture.cut_short(), "flip at {at}");
                        }
                        Ok(capture) => assert!(capture.cut_short(), "flip at {at}"),
                    }
                }
            }
        }
    }

    /// A pipe: complete, cut short and damaged captures read without
    /// seeking (a corrupt chunk then ends the reading).
    #[test]
    fn unseekable_input_reads_without_searching() {
        struct Pipe<'a>(&'a [u8]);
        impl io::Read for Pipe<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                io::Read::read(&mut self.0, buf)
            }
        }
        impl io::Seek for Pipe<'_> {
            fn seek(&mut self, _: io::SeekFrom) -> io::Result<u64> {
                Err(io::Error::from_raw_os_error(libc::ESPIPE))
            }
        }
        let (bytes, starts, whole) = complete_capture();
        let capture = read_stream(Pipe(&bytes), true, |_, _| Ok(())).unwrap();
        assert_eq!((capture.whole_report(), capture.interval_count), (whole, 3));
        let cut = read_stream(Pipe(&bytes[..starts[4] + 20]), true, |_, _| Ok(())).unwrap();
        assert!(cut.cut_short() && cut.damage.is_empty());
        assert_eq!(cut.whole_report().block[0].count, 21, "rebuilt from the first two intervals");
        let mut flipped = bytes.clone();
        flipped[starts[3] + 20] ^= 1;
        let damaged = read_stream(Pipe(&flipped), true, |_, _| Ok(())).unwrap();
        assert_eq!(damaged.damage[0].resumed_at, None);
        assert_eq!(damaged.interval_count, 1);
    }

    /// Refused after the file header, whatever follows: nothing is read
    /// past it (an endless input would otherwise be read for ever).
    #[test]
    fn endless_non_captures_are_refused_at_once() {
        struct Endless(u64);
        impl io::Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(0);
                self.0 += buf.len() as u64;
                assert!(self.0 < 1 << 24, "read 16 MiB of an endless input");
                Ok(buf.len())
            }
        }
        impl io::Seek for Endless {
            fn seek(&mut self, _: io::SeekFrom) -> io::Result<u64> {
                Ok(self.0)
            }
        }
        let err = read_stream(Endless(0), false, |_, _| Ok(())).unwrap_err();
        assert!(matches!(err, StreamError::Capture(CaptureError::NotACapture)), "{err}");
        // A capture's magic, then zeros: the first chunk is not a header.
        let mut magic = io::Cursor::new([&MAGIC[..], &1u32.to_le_bytes()].concat()).chain(Endless(0));
        let mut start = vec![0; FILE_HEADER_LEN];
        io::Read::read_exact(&mut magic, &mut start).unwrap();
        let mut bytes = start;
        bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
        let err = read(&bytes).unwrap_err();
        assert!(matches!(err, CaptureError::Corrupt { at: 13, .. }), "{err}");
        // A chunk that claims more than any chunk holds is not buffered.
        let mut huge = CaptureWriter::new(Vec::new()).unwrap().get_ref().clone();
        huge.extend_from_slice(b"HEAD");
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 64]);
        let err = read(&huge).unwrap_err();
        assert!(err.to_string().contains("more than any chunk holds"), "{err}");
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
