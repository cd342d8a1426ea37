//! How this binary was built (commit and target from build.rs): `tracer
//! --version` and the `system.tracer` object of reports and captures say
//! it, so that a capture names the exact binary that recorded it.

use crate::model::TracerBuild;

/// "static" when the C runtime is linked in (`crt-static`, the musl
/// target's default): the binary then runs on any host of its architecture.
pub const LINKAGE: &str = if cfg!(target_feature = "crt-static") { "static" } else { "dynamic" };

macro_rules! long_version {
    ($linkage:literal) => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (commit ",
            env!("TRACER_GIT_COMMIT"),
            ", ",
            env!("TRACER_TARGET"),
            ", ",
            $linkage,
            ")"
        )
    };
}

/// `0.1.0 (commit 1a2b3c4d5e6f, x86_64-unknown-linux-musl, static)`.
#[cfg(target_feature = "crt-static")]
pub const LONG_VERSION: &str = long_version!("static");
#[cfg(not(target_feature = "crt-static"))]
pub const LONG_VERSION: &str = long_version!("dynamic");

pub fn tracer_build() -> TracerBuild {
    TracerBuild {
        version: env!("CARGO_PKG_VERSION").into(),
        commit: env!("TRACER_GIT_COMMIT").into(),
        target: env!("TRACER_TARGET").into(),
        linkage: LINKAGE.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_says_commit_target_and_linkage() {
        let build = tracer_build();
        assert!(build.target.contains("linux"), "{build:?}");
        assert!(!build.commit.is_empty(), "{build:?}");
        let expected = format!("{} (commit {}, {}, {})", build.version, build.commit, build.target, LINKAGE);
        assert_eq!(LONG_VERSION, expected);
    }
}
