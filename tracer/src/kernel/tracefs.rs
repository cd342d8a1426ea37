//! tracefs: where it is (mounting it when missing), which events exist, and
//! their format files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Finds tracefs, mounting it at /sys/kernel/tracing when it is missing.
    /// Returns a notice for the user when it had to mount.
    pub fn find_or_mount() -> Result<(Self, Option<String>)> {
        for root in [TRACEFS, DEBUGFS_TRACING] {
            if Path::new(root).join("events").is_dir() {
                return Ok((Self { root: root.into() }, None));
            }
        }
        let mounted = mount_tracefs(TRACEFS);
        if Path::new(TRACEFS).join("events").is_dir() {
            return Ok((
                Self { root: TRACEFS.into() },
                Some(format!("tracefs was not mounted; mounted it at {TRACEFS}")),
            ));
        }
        // Not root: tracefs is there but closed to us (mode 0700), or
        // mounting it is refused. Saying "not mounted" would mislead.
        let denied = std::io::ErrorKind::PermissionDenied;
        let read_denied = matches!(fs::read_dir(TRACEFS), Err(e) if e.kind() == denied);
        if read_denied || matches!(&mounted, Err(e) if e.kind() == denied) {
            bail!(
                "reading the kernel's tracepoints needs root: {TRACEFS} is only open to root. \
                 Run it as root (sudo tracer ...)"
            );
        }
        bail!(
            "tracefs is not mounted and mounting it failed ({}); mount it with \
             `mount -t tracefs nodev {TRACEFS}` and run again",
            mounted.err().map_or_else(|| "no events directory".to_string(), |e| e.to_string())
        )
    }

    /// tracefs at a given root (tests, or a non-standard mount point).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.root.join("events").join(category).join(name).is_dir()
    }

    pub fn event_format(&self, category: &str, name: &str) -> Result<EventFormat> {
        let path = self.root.join("events").join(category).join(name).join("format");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        EventFormat::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

fn mount_tracefs(target: &str) -> std::io::Result<()> {
    let source = c"nodev";
    let fstype = c"tracefs";
    let target = std::ffi::CString::new(target).expect("no NUL in a constant path");
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// One field of a tracepoint's record, from its format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub c_type: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
}

impl EventFormat {
    pub fn parse(text: &str) -> Result<Self> {
        let mut name = String::new();
        let mut id = 0;
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("name:") {
                name = rest.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("ID:") {
                id = rest.trim().parse().context("bad ID line")?;
            } else if let Some(rest) = line.strip_prefix("field:") {
                fields.push(parse_field(rest).with_context(|| format!("bad field line: {line}"))?);
            }
        }
        if name.is_empty() {
            bail!("no name line");
        }
        Ok(Self { name, id, fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// `unsigned long pfn;\toffset:8;\tsize:8;\tsigned:0;`
fn parse_field(rest: &str) -> Result<Field> {
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next().unwrap_or_default();
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = Some(v.parse()?);
        } else if let Some(v) = part.strip_prefix("size:") {
            size = Some(v.parse()?);
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v == "1";
        }
    }
    // The name is the last identifier once array brackets are gone, which
    // may follow it (`char rwbs[10]`) or the type (`__data_loc char[] cmd`).
    let mut decl_no_array = String::new();
    let mut depth = 0;
    for c in decl.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => decl_no_array.push(c),
            _ => {}
        }
    }
    let decl_no_array = decl_no_array.trim();
    let split = decl_no_array.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let name = decl_no_array[split..].to_string();
    let c_type = decl_no_array[..split].trim().to_string();
    match (offset, size) {
        (Some(offset), Some(size)) if !name.is_empty() => Ok(Field { name, c_type, offset, size, signed }),
        _ => bail!("missing name, offset or size"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLETE: &str = "name: block_rq_complete
ID: 2107
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
\tfield:__data_loc char[] cmd;\toffset:44;\tsize:4;\tsigned:0;

print fmt: \"%d,%d\", REC->dev
";

    #[test]
    fn parses_fields_arrays_and_data_loc() {
        let f = EventFormat::parse(COMPLETE).unwrap();
        assert_eq!(f.name, "block_rq_complete");
        assert_eq!(f.id, 2107);
        let pid = f.field("common_pid").unwrap();
        assert_eq!((pid.offset, pid.size, pid.signed), (4, 4, true));
        let rwbs = f.field("rwbs").unwrap();
        assert_eq!((rwbs.offset, rwbs.size, rwbs.c_type.as_str()), (34, 10, "char"));
        let cmd = f.field("cmd").unwrap();
        assert_eq!((cmd.offset, cmd.c_type.as_str()), (44, "__data_loc char"));
        assert_eq!(f.field("sector").unwrap().c_type, "sector_t");
    }

    #[test]
    fn rejects_garbage() {
        assert!(EventFormat::parse("hello").is_err());
        assert!(EventFormat::parse("name: x\n\tfield:int a;\toffset:zz;\tsize:4;").is_err());
    }
}
