// Included with `#[path]` by the fuzz targets and the corpus replay tests (see
// bench/fuzz/README.md): arbitrary chunking decided by the input.

/// Splits `data` into chunks whose lengths come from a xorshift generator seeded by `seed`:
/// seed 0 is one chunk, other seeds give lengths 1..=64 (so a boundary falls anywhere,
/// inside a UTF-8 sequence, a `\r\n`, a frame's prelude...).
#[allow(dead_code)]
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 || data.is_empty() {
        return vec![data];
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + (state % 64) as usize).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}
