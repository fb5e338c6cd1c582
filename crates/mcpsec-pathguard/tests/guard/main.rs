//! Behaviour tests of the path guard, one binary: the attack corpus,
//! protected paths, the file operations, property tests and races.

#![allow(clippy::unwrap_used)]

mod attacks;
mod ops;
mod props;
mod protected;
mod races;
mod support;
mod trash;
