//! Fault injection for tests: named points in the code that a test arms to
//! make them fail (panic), so that what a crash does is tested on the real
//! binary rather than assumed.
//!
//! A point is armed by name (`panic-in-tool`) or by name and detail
//! (`panic-in-tool:read_text_file`). The binary arms points once at start-up
//! with [`arm`]; in mcpsec that is only a debug build, from the
//! `MCPSEC_FAILPOINTS` variable (a comma-separated list), so a release build
//! has no point armed and the check is one load of an empty cell.

use std::sync::OnceLock;

static ARMED: OnceLock<Vec<String>> = OnceLock::new();

/// Arms the points in `list` (comma-separated `name` or `name:detail`).
/// Only the first call counts.
pub fn arm(list: &str) {
    let points = list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
    let _ = ARMED.set(points);
}

/// Whether the point `name`, for `detail`, is armed.
pub fn armed(name: &str, detail: &str) -> bool {
    let Some(points) = ARMED.get() else { return false };
    points.iter().any(|p| match p.split_once(':') {
        Some((n, d)) => n == name && d == detail,
        None => p == name,
    })
}

/// Panics when the point `name`, for `detail`, is armed.
#[track_caller]
pub fn panic_if_armed(name: &str, detail: &str) {
    if armed(name, detail) {
        panic!("failpoint `{name}:{detail}` armed by MCPSEC_FAILPOINTS");
    }
}
