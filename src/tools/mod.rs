//! The tools for recordings that ship in the `tickcast` binary:
//! [`convert`] (any recording to a tick log) and [`inspect`] (what a
//! recording holds).
//!
//! Both stop at the first bad record and say where it is (file and
//! offset), after reporting everything read before it. The command line
//! (`src/cli.rs`) prints their results.
//!
//! Imports: [`crate::model`] and [`crate::recorded`].

pub mod convert;
pub mod inspect;
