//! Test helpers of the client crate: a TCP proxy that can cut the
//! connections through it ([`proxy`]) and the server binary run as a child
//! process that can be killed and started again ([`process`]). Each test
//! file uses some of them, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod process;
pub mod proxy;
