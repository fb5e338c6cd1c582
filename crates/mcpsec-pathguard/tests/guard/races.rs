//! Check-then-use races: one thread swaps a path component between
//! something inside and a symlink to outside, atomically
//! (`renameat2(RENAME_EXCHANGE)` of pre-made entries), while another
//! calls the sandbox. Not once may the outside be read or written.
//!
//! How many attempts of a race succeed depends on the scheduler: on a
//! loaded machine the swapping thread may run between every attempt, or
//! not at all while they run. So the race itself only counts leaks (there
//! must be none), and each test first forces both outcomes it races
//! between, deterministically: with the component inside the attempt
//! succeeds, with it swapped for the symlink the attempt is refused. An
//! attempt that cannot tell the two apart would make the race prove
//! nothing.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::fs::{CWD, RenameFlags, renameat_with};

use crate::support::{Fx, INSIDE, SENTINEL};

const ROUNDS: usize = 5_000;

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// It succeeded on what is inside.
    Inside,
    /// It was refused, revealing nothing.
    Refused,
    /// It read or revealed something of the outside.
    Outside,
}

/// Swaps `a` and `b` atomically; with `b` a symlink, `a` is one between
/// two swaps and the other in between.
fn exchange(a: &Path, b: &Path) {
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).unwrap();
}

/// The attempt `attack` in both states, deterministically: as set up it
/// must succeed, with `a` and `b` exchanged it must be refused. Leaves
/// them as they were.
fn both_outcomes(a: &Path, b: &Path, attack: &mut impl FnMut() -> Seen) {
    assert_eq!(attack(), Seen::Inside, "with {} in place", a.display());
    exchange(a, b);
    let swapped = attack();
    exchange(a, b);
    assert_eq!(swapped, Seen::Refused, "with {} swapped for the symlink", a.display());
}

/// Runs `attack` `rounds` times while another thread exchanges `a` and
/// `b` without pause: from before the first attempt (the attempts wait
/// for its first exchange) until after the last, and an even number of
/// times, so that everything is back in place. Returns how many attempts
/// succeeded and how many reached the outside.
fn race(rounds: usize, a: &Path, b: &Path, mut attack: impl FnMut() -> Seen) -> (usize, usize) {
    let swaps = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let (mut ok, mut leaks) = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            loop {
                let n = swaps.load(Ordering::Acquire);
                if n.is_multiple_of(2) && done.load(Ordering::Acquire) {
                    break;
                }
                exchange(a, b);
                swaps.store(n + 1, Ordering::Release);
            }
        });
        while swaps.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        for _ in 0..rounds {
            match attack() {
                Seen::Inside => ok += 1,
                Seen::Refused => {}
                Seen::Outside => leaks += 1,
            }
        }
        done.store(true, Ordering::Release);
    });
    (ok, leaks)
}

/// A read's outcome: the inside content, or a refusal that names nothing
/// outside.
fn read_outcome(fx: &Fx, read: Result<Vec<u8>, mcpsec_pathguard::GuardError>) -> Seen {
    match read {
        Ok(data) if data == INSIDE.as_bytes() => Seen::Inside,
        Ok(_) => Seen::Outside,
        Err(e) => {
            let msg = e.to_string();
            let outside = fx.outside.display().to_string();
            if msg.contains(SENTINEL) || msg.contains("ws-evil") || msg.contains(&outside) {
                Seen::Outside
            } else {
                Seen::Refused
            }
        }
    }
}

#[test]
fn a_symlink_flipped_between_inside_and_outside_never_reads_outside() {
    let fx = Fx::attack();
    fx.link("race", "f.txt");
    fx.link("race_alt", &format!("{}/secret", fx.outside.display()));
    let sb = fx.sandbox();
    let (a, b) = (fx.root.join("race"), fx.root.join("race_alt"));
    let mut attack = || read_outcome(&fx, sb.read("race"));
    both_outcomes(&a, &b, &mut attack);
    let (ok, leaks) = race(ROUNDS, &a, &b, attack);
    assert_eq!(leaks, 0, "{leaks} of {ROUNDS} reads reached the outside");
    // After the race the link points inside again, and reads work.
    assert_eq!(sb.read("race").unwrap(), INSIDE.as_bytes());
    eprintln!("symlink flip: {ok} of {ROUNDS} reads succeeded, none read outside");
}

#[test]
fn a_directory_swapped_for_a_symlink_out_never_reads_outside() {
    let fx = Fx::attack();
    fx.file("d/secret", INSIDE);
    fx.link("d_alt", fx.outside.to_str().unwrap());
    let sb = fx.sandbox();
    let (a, b) = (fx.root.join("d"), fx.root.join("d_alt"));
    let mut attack = || read_outcome(&fx, sb.read("d/secret"));
    both_outcomes(&a, &b, &mut attack);
    let (ok, leaks) = race(ROUNDS, &a, &b, attack);
    assert_eq!(leaks, 0, "{leaks} of {ROUNDS} reads reached the outside");
    assert_eq!(sb.read("d/secret").unwrap(), INSIDE.as_bytes());
    eprintln!("dir swap: {ok} of {ROUNDS} reads succeeded, none read outside");
}

#[test]
fn a_file_swapped_for_a_symlink_out_never_reads_outside() {
    let fx = Fx::attack();
    fx.link("f_alt", "../ws-evil/secret");
    let sb = fx.sandbox();
    let (a, b) = (fx.root.join("f.txt"), fx.root.join("f_alt"));
    let mut attack = || read_outcome(&fx, sb.read("f.txt"));
    both_outcomes(&a, &b, &mut attack);
    let (ok, leaks) = race(ROUNDS, &a, &b, attack);
    assert_eq!(leaks, 0, "{leaks} of {ROUNDS} reads reached the outside");
    assert_eq!(sb.read("f.txt").unwrap(), INSIDE.as_bytes());
    eprintln!("file swap: {ok} of {ROUNDS} reads succeeded, none read outside");
}

#[test]
fn writes_and_mkdirs_under_a_swapped_directory_never_land_outside() {
    let fx = Fx::attack();
    fx.dir("d");
    fx.link("d_alt", "../ws-evil/dir");
    let sb = fx.sandbox();
    let before = fx.outside_snapshot();
    let (a, b) = (fx.root.join("d"), fx.root.join("d_alt"));
    let mut n = 0usize;
    let mut attack = || {
        n += 1;
        let wrote = sb.write(&format!("d/w{}", n % 7), b"written").is_ok();
        let made = sb.create_dir_all(&format!("d/m{}/x", n % 5)).is_ok();
        if wrote || made { Seen::Inside } else { Seen::Refused }
    };
    both_outcomes(&a, &b, &mut attack);
    assert_eq!(before, fx.outside_snapshot(), "the refused write changed the outside tree");
    // Every write is flushed to disk: fewer rounds keep this quick.
    let rounds = ROUNDS / 5;
    let (ok, _) = race(rounds, &a, &b, attack);
    // A write that landed outside shows in the outside tree.
    assert_eq!(before, fx.outside_snapshot(), "a racing write changed the outside tree");
    for entry in fs::read_dir(fx.root.join("d")).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_string_lossy();
        assert!(name.starts_with('w') || name.starts_with('m'), "unexpected {name}");
    }
    eprintln!("write race: {ok} of {rounds} rounds wrote inside, none outside");
}

#[test]
fn a_recursive_delete_racing_a_swap_never_deletes_outside() {
    let fx = Fx::attack();
    fx.link("victim_alt", "../ws-evil/dir");
    let sb = fx.sandbox();
    let before = fx.outside_snapshot();
    let (victim, alt) = (fx.root.join("victim"), fx.root.join("victim_alt"));
    let reset = || {
        for p in [&victim, &alt] {
            match fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(p).unwrap(),
                Ok(_) => fs::remove_file(p).unwrap(),
                Err(_) => {}
            }
        }
        fs::create_dir_all(victim.join("inner")).unwrap();
        fs::write(victim.join("inner/file"), "inside").unwrap();
        symlink("../ws-evil/dir", &alt).unwrap();
    };
    // Both outcomes, deterministically: the directory inside is deleted
    // with its contents; the symlink to outside is deleted, not followed.
    reset();
    sb.remove("victim", true).unwrap();
    assert!(!fx.exists("victim"));
    reset();
    exchange(&victim, &alt);
    sb.remove("victim", true).unwrap();
    assert!(!fx.exists("victim") && fx.root.join("victim_alt/inner/file").exists());
    assert_eq!(before, fx.outside_snapshot(), "deleting the symlink changed the outside tree");
    // Each round: reset both names, then race one delete against a few
    // swaps.
    for _ in 0..200 {
        reset();
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..4 {
                    if renameat_with(CWD, &victim, CWD, &alt, RenameFlags::EXCHANGE).is_err() {
                        break;
                    }
                }
            });
            let _ = sb.remove("victim", true);
        });
    }
    assert_eq!(before, fx.outside_snapshot(), "a racing delete changed the outside tree");
}
