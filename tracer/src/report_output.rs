//! Where `trace -o FILE` writes its reports: the file, and standard output
//! once writing the file fails (a full disk, an I/O error), so that a run's
//! report is never lost to its output file.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

pub struct ReportOutput<W: Write = File> {
    /// The file and its path, until writing it fails.
    file: Option<(PathBuf, W)>,
}

impl ReportOutput<File> {
    /// `path`, created now (a bad path is an error before tracing starts),
    /// or standard output.
    pub fn create(path: Option<&Path>) -> Result<Self> {
        let file = match path {
            Some(path) => Some((
                path.to_path_buf(),
                File::create(path)
                    .with_context(|| format!("cannot write the report to {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Self { file })
    }
}

impl<W: Write> ReportOutput<W> {
    /// Writes one report, whole, to the file, else to standard output.
    pub fn write(&mut self, text: &str) -> Result<()> {
        if let Some(warning) = self.try_file(text) {
            eprintln!("tracer: warning: {warning}");
        } else if self.file.is_some() {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }

    /// Writes to the file; on failure, gives it up and says why.
    fn try_file(&mut self, text: &str) -> Option<String> {
        let (path, file) = self.file.as_mut()?;
        let error = file.write_all(text.as_bytes()).and_then(|()| file.flush()).err()?;
        let warning = format!(
            "writing the report to {} failed ({error}): printing it to standard output instead",
            path.display()
        );
        self.file = None;
        Some(warning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then fails as a full disk does.
    struct FullDisk {
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_names_the_file_and_gives_it_up() {
        let mut out =
            ReportOutput { file: Some((PathBuf::from("/mnt/full/report.txt"), FullDisk { room: 10 })) };
        let warning = out.try_file("0123456789abcdef").unwrap();
        assert!(
            warning.starts_with("writing the report to /mnt/full/report.txt failed (No space left on device")
        );
        assert!(warning.ends_with("printing it to standard output instead"), "{warning}");
        assert!(out.file.is_none(), "later reports go to standard output");
        let mut fine = ReportOutput { file: Some((PathBuf::from("r"), FullDisk { room: 100 })) };
        assert_eq!(fine.try_file("report"), None);
        assert!(fine.file.is_some());
    }
}
