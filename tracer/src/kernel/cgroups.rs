//! Memory cgroups: the hierarchy's mount point, ids (directory inode
//! numbers, what the kernel programs read from `kn->id`) to paths and back.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: String,
    pub fstype: String,
    pub super_options: String,
}

/// Mounts from /proc/self/mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?.replace("\\040", " ");
            let mut right = right.split_whitespace();
            let fstype = right.next()?.to_string();
            let _source = right.next()?;
            let super_options = right.next().unwrap_or_default().to_string();
            Some(Mount { mount_point, fstype, super_options })
        })
        .collect()
}

/// The memory controller's hierarchy: cgroup v1's `memory` mount, or the
/// unified (v2) hierarchy.
pub fn memory_hierarchy(mounts: &[Mount]) -> Option<(PathBuf, u8)> {
    let v1 = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"))
        .map(|m| (PathBuf::from(&m.mount_point), 1));
    v1.or_else(|| mounts.iter().find(|m| m.fstype == "cgroup2").map(|m| (PathBuf::from(&m.mount_point), 2)))
}

/// Most cgroup names remembered.
const PATHS_KEPT: usize = 4096;

pub struct Cgroups {
    root: PathBuf,
    version: u8,
    paths: HashMap<u64, String>,
}

impl Cgroups {
    pub fn find() -> Option<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let (root, version) = memory_hierarchy(&parse_mountinfo(&text))?;
        Some(Self { root, version, paths: HashMap::new() })
    }

    pub fn at(root: impl Into<PathBuf>, version: u8) -> Self {
        Self { root: root.into(), version, paths: HashMap::new() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    /// Directory of a cgroup given as a path in the hierarchy (`/db`) or in
    /// the filesystem (`/sys/fs/cgroup/memory/db`).
    pub fn dir_of(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.starts_with(&self.root) { p.to_path_buf() } else { self.root.join(path.trim_start_matches('/')) }
    }

    /// Id of the cgroup at `path` (`--cgroup`); an error says what exists.
    pub fn id_of(&self, path: &str) -> Result<u64> {
        let dir = self.dir_of(path);
        let meta = fs::metadata(&dir).with_context(|| {
            format!(
                "no memory cgroup `{path}` (looked for {}); memory cgroups live under {}",
                dir.display(),
                self.root.display()
            )
        })?;
        if !meta.is_dir() {
            bail!("{} is not a cgroup directory", dir.display());
        }
        Ok(meta.ino())
    }

    /// Path in the hierarchy ("/" for the root) of the cgroup with `id`,
    /// searching the hierarchy on a miss.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(path) = self.paths.get(&id) {
            return Some(path.clone());
        }
        self.rescan();
        self.paths.get(&id).cloned()
    }

    fn rescan(&mut self) {
        // Names of removed cgroups are kept (a killed container's cgroup is
        // often gone by the report), but not forever: hosts that churn
        // containers for days would grow the map without end.
        if self.paths.len() > PATHS_KEPT {
            self.paths.clear();
        }
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else { continue };
            let relative =
                dir.strip_prefix(&self.root).map(|r| format!("/{}", r.display())).unwrap_or_default();
            self.paths.insert(meta.ino(), relative);
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }

    /// A file of a cgroup (e.g. `memory.limit_in_bytes`), trimmed.
    pub fn read(&self, path: &str, file: &str) -> Option<String> {
        fs::read_to_string(self.dir_of(path).join(file)).ok().map(|s| s.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn prefers_the_v1_memory_hierarchy() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 5);
        assert_eq!(memory_hierarchy(&mounts), Some((PathBuf::from("/sys/fs/cgroup/memory"), 1)));
        let v2_only: Vec<Mount> = mounts.into_iter().filter(|m| m.fstype != "cgroup").collect();
        assert_eq!(memory_hierarchy(&v2_only), Some((PathBuf::from("/sys/fs/cgroup/unified"), 2)));
    }

    #[test]
    fn maps_ids_to_paths_and_back() {
        let root = std::env::temp_dir().join(format!("tracer-cgroups-test-{}", std::process::id()));
        fs::create_dir_all(root.join("db/shard1")).unwrap();
        let mut cg = Cgroups::at(&root, 2);
        let id = cg.id_of("/db/shard1").unwrap();
        assert_eq!(cg.id_of(&root.join("db/shard1").display().to_string()).unwrap(), id);
        assert_eq!(cg.path_of(id).as_deref(), Some("/db/shard1"));
        assert_eq!(cg.path_of(cg.id_of("/").unwrap()).as_deref(), Some("/"));
        let err = cg.id_of("/nope").unwrap_err().to_string();
        assert!(err.contains("no memory cgroup `/nope`"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }
}
