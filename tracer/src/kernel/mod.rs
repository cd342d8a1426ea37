//! Thin edges to the running kernel: tracefs, BTF, capabilities, devices,
//! and counters the kernel keeps itself. Parsing is pure and unit-tested;
//! the functions that touch the system only read files.

pub mod btf;
pub mod caps;
pub mod cgroups;
pub mod devices;
pub mod gfp;
pub mod sysinfo;
pub mod tracefs;
pub mod vmstat;
pub mod zones;
