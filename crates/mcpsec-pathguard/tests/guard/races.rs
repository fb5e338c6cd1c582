//! Check-then-use races: one thread swaps a path component between
//! something inside and a symlink to outside, atomically
//! (`renameat2(RENAME_EXCHANGE)` of pre-made entries), while another
//! calls the sandbox. Not once may the outside be read or written.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use rustix::fs::{CWD, RenameFlags, renameat_with};

use crate::support::{Fx, INSIDE, SENTINEL};

const ROUNDS: usize = 5_000;

/// Swaps `a` and `b` atomically; with `b` a symlink, `a` is one between
/// two swaps and the other in between.
fn exchange(a: &Path, b: &Path) {
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).unwrap();
}

/// Runs `attack` `rounds` times while another thread exchanges `a` and
/// `b` `rounds` times (an even number). Returns how many attacks succeeded.
fn race(rounds: usize, a: &Path, b: &Path, mut attack: impl FnMut() -> bool) -> usize {
    assert_eq!(rounds % 2, 0);
    let mut ok = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..rounds {
                exchange(a, b);
            }
        });
        for _ in 0..rounds {
            if attack() {
                ok += 1;
            }
        }
    });
    // The flipper ran an even number of swaps: everything is back in place.
    ok
}

#[test]
fn a_symlink_flipped_between_inside_and_outside_never_reads_outside() {
    let fx = Fx::attack();
    fx.link("race", "f.txt");
    fx.link("race_alt", &format!("{}/secret", fx.outside.display()));
    let sb = fx.sandbox();
    let ok = race(ROUNDS, &fx.root.join("race"), &fx.root.join("race_alt"), || match sb.read("race") {
        Ok(data) => {
            assert_eq!(data, INSIDE.as_bytes(), "read returned something else");
            true
        }
        Err(e) => {
            assert!(!e.to_string().contains(SENTINEL));
            false
        }
    });
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
    let ok = race(ROUNDS, &fx.root.join("d"), &fx.root.join("d_alt"), || match sb.read("d/secret") {
        Ok(data) => {
            assert_eq!(data, INSIDE.as_bytes(), "read returned something else");
            true
        }
        Err(_) => false,
    });
    assert_eq!(sb.read("d/secret").unwrap(), INSIDE.as_bytes());
    eprintln!("dir swap: {ok} of {ROUNDS} reads succeeded, none read outside");
}

#[test]
fn a_file_swapped_for_a_symlink_out_never_reads_outside() {
    let fx = Fx::attack();
    fx.link("f_alt", "../ws-evil/secret");
    let sb = fx.sandbox();
    let ok = race(ROUNDS, &fx.root.join("f.txt"), &fx.root.join("f_alt"), || match sb.read("f.txt") {
        Ok(data) => {
            assert_eq!(data, INSIDE.as_bytes(), "read returned something else");
            true
        }
        Err(_) => false,
    });
    eprintln!("file swap: {ok} of {ROUNDS} reads succeeded, none read outside");
}

#[test]
fn writes_and_mkdirs_under_a_swapped_directory_never_land_outside() {
    let fx = Fx::attack();
    fx.dir("d");
    fx.link("d_alt", "../ws-evil/dir");
    let sb = fx.sandbox();
    let before = fx.outside_snapshot();
    let mut n = 0usize;
    // Every write is flushed to disk: fewer rounds keep this quick.
    let rounds = ROUNDS / 5;
    let ok = race(rounds, &fx.root.join("d"), &fx.root.join("d_alt"), || {
        n += 1;
        let wrote = sb.write(&format!("d/w{}", n % 7), b"written").is_ok();
        let made = sb.create_dir_all(&format!("d/m{}/x", n % 5)).is_ok();
        wrote || made
    });
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
    // Each round: reset both names, then race one delete against a few
    // swaps.
    for _ in 0..200 {
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
