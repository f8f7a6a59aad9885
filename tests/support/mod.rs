//! Shared helpers for integration tests.
//!
//! Each integration test crate compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod cli;
pub mod fake_apiserver;
pub mod seed;
