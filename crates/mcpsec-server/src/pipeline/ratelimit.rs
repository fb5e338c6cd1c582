//! Per-principal rate limits (GCRA, from `governor`), checked before any
//! other work, and an exact, quiet account of what they refused.
//!
//! A principal may make `calls` calls per `window` (bursts up to `calls`),
//! and per tool as configured. A refused call is answered with a tool error
//! that says when to retry. So that a flood of refused calls cannot flood
//! the audit log, the first refusal of a run is recorded at once and the
//! rest of the run are counted and recorded as one record, with the exact
//! count, when the principal's next call is allowed (or the server stops).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::{Quota, RateLimiter};

/// `[rate_limit]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Calls per window per principal.
    pub calls: u32,
    /// The window.
    pub window: Duration,
    /// Per-tool calls per window per principal.
    pub tools: Vec<(String, u32)>,
}

impl Limits {
    /// The limits with every per-tool limit keyed by the tool's `canonical`
    /// name, so that a limit holds for the tool whichever name a call uses
    /// (an alias, such as `read_file` for `read_text_file`, shares its
    /// tool's count). With limits set under both names, the lower one is the
    /// tool's.
    pub fn by_canonical_name(mut self, canonical: impl Fn(&str) -> &str) -> Limits {
        let mut tools: Vec<(String, u32)> = Vec::new();
        for (tool, n) in self.tools {
            let tool = canonical(&tool).to_owned();
            match tools.iter_mut().find(|(t, _)| *t == tool) {
                Some((_, m)) => *m = (*m).min(n),
                None => tools.push((tool, n)),
            }
        }
        self.tools = tools;
        self
    }
}

type Keyed<C> =
    RateLimiter<String, governor::state::keyed::HashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The limiters and the refusal counts.
pub struct Limiter<C: Clock = DefaultClock> {
    all: Keyed<C>,
    per_tool: HashMap<String, Keyed<C>>,
    clock: C,
    /// Refusals not yet recorded, per principal.
    unrecorded: Mutex<HashMap<String, u64>>,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("tools", &self.per_tool.len()).finish_non_exhaustive()
    }
}

/// A refused call: when to retry, and whether this refusal is the first of
/// its run (to be recorded now) or one to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// How long until a call would be allowed.
    pub retry_after: Duration,
    /// Which limit refused it (`all tools` or a tool's name).
    pub limit: String,
    /// Record it now (the first refusal of a run)?
    pub record: bool,
}

fn quota(calls: u32, window: Duration) -> Quota {
    let calls = NonZeroU32::new(calls.max(1)).unwrap_or(NonZeroU32::MIN);
    let period = window / calls.get();
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(calls))
        .allow_burst(calls)
}

impl Limiter<DefaultClock> {
    /// Limiters with the real clock.
    pub fn new(limits: &Limits) -> Self {
        Limiter::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// Limiters with `clock` (tests pass a fake one).
    pub fn with_clock(limits: &Limits, clock: C) -> Self {
        let keyed = |calls| RateLimiter::hashmap_with_clock(quota(calls, limits.window), clock.clone());
        Limiter {
            all: keyed(limits.calls),
            per_tool: limits.tools.iter().map(|(t, n)| (t.clone(), keyed(*n))).collect(),
            clock: clock.clone(),
            unrecorded: Mutex::new(HashMap::new()),
        }
    }

    /// Checks one call of `tool` by `user`. `Ok(n)`: allowed, and `n`
    /// refusals of this principal are still to be recorded (one record,
    /// now). `Err`: refused.
    pub fn check(&self, user: &str, tool: &str) -> Result<u64, Refused> {
        let key = user.to_owned();
        let verdict = self.all.check_key(&key).map_err(|not| (not, "all tools".to_owned())).and_then(|()| {
            match self.per_tool.get(tool) {
                Some(l) => l.check_key(&key).map_err(|not| (not, tool.to_owned())),
                None => Ok(()),
            }
        });
        let mut unrecorded = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        match verdict {
            Ok(()) => Ok(unrecorded.remove(user).unwrap_or(0)),
            Err((not, limit)) => {
                let retry_after = not.wait_time_from(self.clock.now());
                let first = !unrecorded.contains_key(user);
                if first {
                    unrecorded.insert(user.to_owned(), 0);
                } else if let Some(n) = unrecorded.get_mut(user) {
                    *n += 1;
                }
                Err(Refused { retry_after, limit, record: first })
            }
        }
    }

    /// Refusals still unrecorded, per principal (at shutdown).
    pub fn drain(&self) -> Vec<(String, u64)> {
        let mut unrecorded = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        unrecorded.drain().filter(|(_, n)| *n > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(calls: u32, tools: &[(&str, u32)]) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limits = Limits {
            calls,
            window: Duration::from_secs(60),
            tools: tools.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
        };
        (Limiter::with_clock(&limits, clock.clone()), clock)
    }

    #[test]
    fn a_burst_is_allowed_then_refused_then_recovered() {
        let (l, clock) = limiter(3, &[]);
        for _ in 0..3 {
            assert_eq!(l.check("alice", "read_text_file"), Ok(0));
        }
        let r = l.check("alice", "read_text_file").unwrap_err();
        assert!(r.record, "the first refusal is recorded at once");
        assert!(r.retry_after > Duration::ZERO && r.retry_after <= Duration::from_secs(20), "{r:?}");
        for _ in 0..5 {
            assert!(!l.check("alice", "read_text_file").unwrap_err().record);
        }
        // Another principal is not affected.
        assert_eq!(l.check("bob", "read_text_file"), Ok(0));
        clock.advance(Duration::from_secs(20));
        // Allowed again, and the 5 counted refusals come back exactly once.
        assert_eq!(l.check("alice", "read_text_file"), Ok(5));
        assert!(l.check("alice", "read_text_file").unwrap_err().record);
    }

    /// Issue 26, point 9: a limit on a tool was bypassed through its alias.
    #[test]
    fn a_limit_set_under_either_name_of_an_aliased_tool_is_the_tools() {
        fn canonical(t: &str) -> &str {
            if t == "read_file" { "read_text_file" } else { t }
        }
        let limits = |tools: &[(&str, u32)]| {
            let tools = tools.iter().map(|(t, n)| (t.to_string(), *n)).collect();
            Limits { calls: 100, window: Duration::from_secs(60), tools }.by_canonical_name(canonical).tools
        };
        assert_eq!(limits(&[("read_file", 2), ("x", 1)]), [("read_text_file".to_owned(), 2), ("x".to_owned(), 1)]);
        assert_eq!(limits(&[("read_text_file", 3), ("read_file", 2)]), [("read_text_file".to_owned(), 2)]);
        assert_eq!(limits(&[("read_text_file", 2), ("read_file", 5)]), [("read_text_file".to_owned(), 2)]);
    }

    #[test]
    fn per_tool_limits_are_separate_and_counts_drain_at_shutdown() {
        let (l, _clock) = limiter(100, &[("delete_file", 1)]);
        assert_eq!(l.check("alice", "delete_file"), Ok(0));
        let r = l.check("alice", "delete_file").unwrap_err();
        assert_eq!(r.limit, "delete_file");
        assert!(l.check("alice", "delete_file").is_err());
        assert!(l.check("alice", "delete_file").is_err());
        assert_eq!(l.drain(), vec![("alice".to_string(), 2)]);
        assert!(l.drain().is_empty());
    }
}
