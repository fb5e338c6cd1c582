//! The path guard: the only code that touches the filesystem on behalf of
//! a tool call.
//!
//! It provides [`Sandbox`]: the allowed roots, each opened **once** as a
//! cap-std [`Dir`](cap_std::fs::Dir) handle, the protected-path [`Rules`]
//! and the read cap, and the operations the filesystem tools need (read,
//! atomic write, mkdir -p, list, walk, info, move, delete). [`trash`] adds
//! the keeping variants behind undo: delete and overwrite that first keep
//! what they remove in the trash (by rename or `RENAME_EXCHANGE`, copying
//! only across filesystems), and the restore.
//!
//! # Guarantee
//!
//! Whatever string a caller passes, an operation either fails or touches a
//! file whose real path lies inside a root, and never one that a protected
//! rule forbids for that operation. No check-then-use race can redirect it.
//!
//! # How: one component at a time
//!
//! Paths are resolved by our own resolver on top of cap-std, not by the
//! kernel in one go. Each component is looked up with `lstat` and opened
//! with `O_NOFOLLOW` through the handle of the directory before it, so:
//!
//! - `..` pops back to a handle we already hold, and above the root there
//!   is nothing to pop: the path is refused;
//! - a symlink is read (never followed by the kernel) and its target is
//!   resolved the same way, from where it stands when relative, and from the
//!   root it names when absolute. A target that is not inside a root is
//!   refused *without looking at it*, so a refusal reveals nothing about
//!   what lies outside;
//! - a component swapped for a symlink after we looked at it makes the
//!   `O_NOFOLLOW` open fail: the operation stops, it is not redirected.
//!
//! Because we follow symlinks ourselves, we know the resolved path relative
//! to its root, which is what the protected-path globs are matched against
//! (`paths.deny`, `paths.readonly`). It also lets us support absolute
//! symlinks that point inside a root, which cap-std alone refuses.
//!
//! ```
//! # let tmp = tempfile::tempdir().unwrap();
//! # std::fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
//! use mcpsec_pathguard::{Rules, Sandbox, SandboxOptions};
//!
//! let sandbox = Sandbox::open(
//!     &[tmp.path().to_path_buf()],
//!     SandboxOptions { rules: Rules::none(), max_read: 1 << 20 },
//! ).unwrap();
//! assert_eq!(sandbox.read("notes.txt").unwrap(), b"hello");
//! let err = sandbox.read("../../etc/passwd").unwrap_err();
//! assert!(err.to_string().starts_with("refused: `../../etc/passwd` leads outside"));
//! ```
//!
//! # Non-goals
//!
//! - Hard links: a hard link inside a root to a file elsewhere on the same
//!   filesystem cannot be told apart from an ordinary file. Tools cannot
//!   create hard links; whoever can create them already has the access.
//! - Mount points and bind mounts inside a root are followed.
//! - Windows. The guarantee is argued and tested on Linux.
//!
//! **Architecture invariant:** no other crate opens, lists or changes files
//! for a tool call (a clippy `disallowed-methods` rule keeps `std::fs` out
//! of the other crates). The uses of ambient authority are opening the
//! roots in [`Sandbox::open`] and the trash in [`Trash::open`].

mod error;
mod protected;
mod resolve;
mod rules;
mod sandbox;
pub mod trash;

pub use error::{GuardError, Rule};
pub use protected::{ProtectedPaths, TooManyEntries};
pub use rules::{Rules, Scope, compile_glob};
pub use sandbox::{Entry, EntryKind, Info, MAX_DEPTH, MAX_ENTRIES, OpenError, Sandbox, SandboxOptions, WalkEntry};
pub use trash::{Room, Slot, Trash};
