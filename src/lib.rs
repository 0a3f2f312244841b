//! weft: a single-node, thread-per-core streaming interval join engine.
//!
//! Sources -> router -> SPSC rings -> shards (join, state) -> sinks. See README.md
//! for the architecture and `docs/SEMANTICS.md` for the join contract.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod alloc;
pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod engine;
pub mod event;
pub mod evolve;
pub mod exchange;
pub mod join;
pub mod loadgen;
pub mod log;
pub mod metrics;
pub mod oracle;
pub mod router;
pub mod schema;
pub mod shard;
pub mod sink;
pub mod source;
pub mod state;
pub mod sys;
pub mod watermark;
