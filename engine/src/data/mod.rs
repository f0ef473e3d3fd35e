//! Token data: llm.c shards written atomically and read through mmap ([`shard`]), train/val shard
//! sets as cllm-prepare writes them ([`shard_set`]), a loader of
//! shuffled (B, T) windows with resumable positions ([`loader`]), and padding with attention
//! masks for variable-length batches ([`pad`]), and tokenizing documents on the sphere workers
//! ([`encode`]).

pub mod encode;
mod error;
pub mod loader;
pub mod pad;
pub mod shard;
pub mod shard_set;

pub use error::DataError;
pub use loader::{shard_paths, DataPosition, Loader, LoaderConfig, TokenSource};
pub use pad::{pad_batch, pad_batch_into, PaddedBatch};
pub use shard::{write_shard, Shard, ShardWriter, TokenWidth, Tokens, MAX_SHARD_TOKENS};
pub use shard_set::{
    shard_name, shard_set_files, write_shard_set, ShardSetConfig, ShardSetSummary, ShardSetWriter,
};
