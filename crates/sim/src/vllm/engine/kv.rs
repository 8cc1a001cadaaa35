//! The paged KV cache: reference-counted blocks, prefix reuse by hash chain, LRU eviction.

use std::collections::{BTreeMap, HashMap};

use super::tokenizer;

pub(super) type BlockId = usize;

#[derive(Clone, Debug)]
pub(super) struct Block {
    pub(super) refs: u32,
    hash: Option<u64>,
    /// Position in the free queue while `refs == 0`.
    free_stamp: Option<u64>,
}

/// The paged KV cache: reference-counted blocks, a hash → block map of reusable full blocks,
/// and an LRU queue of free blocks (front = next to be reused).
#[derive(Clone, Debug)]
pub(super) struct KvCache {
    pub(super) blocks: Vec<Block>,
    free: BTreeMap<u64, BlockId>,
    next_stamp: u64,
    pub(super) cached: HashMap<u64, BlockId>,
    pub(super) used: usize,
}

impl KvCache {
    pub(super) fn new(num_blocks: usize) -> Self {
        let mut kv = KvCache {
            blocks: vec![
                Block {
                    refs: 0,
                    hash: None,
                    free_stamp: None,
                };
                num_blocks
            ],
            free: BTreeMap::new(),
            next_stamp: 0,
            cached: HashMap::new(),
            used: 0,
        };
        for b in 0..num_blocks {
            kv.push_free(b);
        }
        kv
    }

    fn push_free(&mut self, b: BlockId) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.free.insert(stamp, b);
        self.blocks[b].free_stamp = Some(stamp);
    }

    pub(super) fn num_free(&self) -> usize {
        self.free.len()
    }

    /// The cached blocks of the longest prefix of `hashes`.
    pub(super) fn lookup(&self, hashes: &[u64]) -> Vec<BlockId> {
        hashes
            .iter()
            .map_while(|h| self.cached.get(h).copied())
            .collect()
    }

    /// Takes a reference on a (cached) block, pulling it out of the free queue if needed.
    pub(super) fn touch(&mut self, b: BlockId) {
        let block = &mut self.blocks[b];
        if block.refs == 0 {
            let stamp = block.free_stamp.take().expect("free block has a stamp");
            self.free.remove(&stamp);
            self.used += 1;
        }
        self.blocks[b].refs += 1;
    }

    /// A fresh block from the front of the free queue, evicting the prefix it held.
    pub(super) fn allocate(&mut self) -> Option<BlockId> {
        let (_, b) = self.free.pop_first()?;
        let block = &mut self.blocks[b];
        block.free_stamp = None;
        if let Some(h) = block.hash.take() {
            if self.cached.get(&h) == Some(&b) {
                self.cached.remove(&h);
            }
        }
        block.refs = 1;
        self.used += 1;
        Some(b)
    }

    pub(super) fn release(&mut self, b: BlockId) {
        let block = &mut self.blocks[b];
        block.refs -= 1;
        if block.refs == 0 {
            self.used -= 1;
            self.push_free(b);
        }
    }

    /// Makes a just-filled block reusable under `hash` (unless another block already is).
    pub(super) fn register(&mut self, b: BlockId, hash: u64) {
        if self.blocks[b].hash.is_none() && !self.cached.contains_key(&hash) {
            self.blocks[b].hash = Some(hash);
            self.cached.insert(hash, b);
        }
    }

    pub(super) fn cached_free_blocks(&self) -> usize {
        self.free
            .values()
            .filter(|b| self.blocks[**b].hash.is_some())
            .count()
    }
}

/// The hash of a full block: its parent's hash and its tokens.
pub(super) fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    tokens.iter().fold(tokenizer::mix(parent), |h, t| {
        tokenizer::mix(h ^ u64::from(*t))
    })
}

pub(super) const ROOT_HASH: u64 = 0x00c0_ffee;
