//! Layer 2 of `migrate`, cluster access: reads, writes and waits against the API server, each
//! one call or one watch with its error said in words. No step logic here: the executor decides
//! what to call, these know how.

pub mod autoscalers;
pub mod claims;
pub mod consumers;
pub mod events;
pub mod list;
pub mod statefulsets;
pub mod volumes;
pub mod waits;
