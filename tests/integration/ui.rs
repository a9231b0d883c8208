//! Compile errors are part of the interface: each `ui-tests/<topic>/<rule>.rs` must fail (or,
//! under `pass/`, compile) and its `.stderr` snapshot must match.
//!
//! rustc's wording changes between releases, so the snapshots are checked only on the minor
//! version they were made with; elsewhere the test says so and checks nothing.

use std::process::Command;

/// The rustc release the `.stderr` snapshots were made with.
const SNAPSHOT_RUSTC: &str = "1.95.";

fn rustc_version() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    String::from_utf8(out.stdout).ok()
}

#[test]
fn compile_errors_match_their_snapshots() {
    let version = rustc_version().unwrap_or_default();
    if !version.starts_with(&format!("rustc {SNAPSHOT_RUSTC}")) {
        eprintln!(
            "SKIPPED ui tests: snapshots were made with rustc {SNAPSHOT_RUSTC}x, this is {:?}",
            version.trim()
        );
        return;
    }
    let t = trybuild::TestCases::new();
    for topic in [
        "mismatch", "unbound", "bound", "runtime", "size", "conv", "images", "train", "custom",
        "compose",
    ] {
        t.compile_fail(format!("ui-tests/{topic}/*.rs"));
    }
    t.pass("ui-tests/pass/*.rs");
}
