//! weft: a single-node, thread-per-core streaming interval join engine.
//!
//! Sources -> router -> SPSC rings -> shards (join, state) -> sinks. See README.md
//! for the architecture and `../shared/SEMANTICS.md` for the join contract.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod alloc;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod gen;
pub mod join;
pub mod metrics;
pub mod recovery;
pub mod ring;
pub mod router;
pub mod row;
pub mod schema;
pub mod shard;
pub mod sink;
pub mod source;
pub mod state;
pub mod validate;
pub mod watermark;
