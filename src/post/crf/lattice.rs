//! The permutohedral lattice (Adams, Baek & Davis, "Fast High-Dimensional Filtering
//! Using the Permutohedral Lattice", Eurographics 2010), built and applied the way
//! Krähenbühl's densecrf does it (docs/postprocessing.md §5.3), so that the filtered values match
//! pydensecrf bit for bit on x86-64.
//!
//! A point with `d` features is lifted onto the hyperplane `Σ x = 0` of `R^{d+1}`
//! ("elevation", with the per-axis scale `sf[i] = sqrt(2/3)·(d+1)/sqrt((i+1)(i+2))`),
//! its enclosing simplex is found (nearest remainder-0 point, then the rank of each
//! coordinate's residual), and it gets `d+1` barycentric weights on the simplex's
//! vertices. Filtering a signal is then
//!
//! 1. **splat**: every vertex accumulates `weight · value` of the points around it;
//! 2. **blur**: along each of the `d+1` lattice directions `j = 0..d`, in that order,
//!    `new[v] = old[v] + ½ (old[v − e_j] + old[v + e_j])` (a missing neighbour counts
//!    as zero), all vertices at once (Jacobi style);
//! 3. **slice**: every point reads back `Σ_r (weight_r · value_r) · α` with
//!    `α = 1 / (1 + 2^-d)`.
//!
//! Everything is f32 where densecrf uses `float`, with the same operation order. Two
//! quirks of densecrf's SSE build are reproduced: rounding to the nearest remainder-0
//! point is round-half-even, and when the point count is not a multiple of 4 the
//! lattice vertices of an all-zero feature vector are added (the SSE loop pads its
//! last block with zero points; their vertices relay values during the blur).
//!
//! Parallelism never changes the result: the splat runs sequentially in densecrf's
//! order (the summation order into each vertex matters), the blur is Jacobi style and
//! parallel over vertices, the slice is parallel over points, and the lattice is
//! located per point in parallel but numbered sequentially.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Points (or vertices) per parallel work item.
const CHUNK: usize = 2048;

/// Points per block of the pipelined lattice construction.
const BLOCK: usize = 16 * CHUNK;

/// Largest |lattice coordinate| accepted: integers stay exact in f32 and far from i32
/// limits. densecrf stores coordinates as int16, so real settings are far below this.
const LIMIT: f32 = (1 << 22) as f32;

/// A permutohedral lattice over `n_points` points with `d` features each.
#[derive(Debug, Clone)]
pub(crate) struct Lattice {
    d: usize,
    n_points: usize,
    /// Vertices, not counting the zero slot. Vertex `v` lives in slot `v + 1`; slot 0
    /// is a permanently-zero value that stands for a missing neighbour.
    n_vertices: usize,
    /// `(n_points, d+1)`: slot of the vertex of remainder `r` of each point.
    offsets: Vec<u32>,
    /// `(n_points, d+1)`: barycentric weight of that vertex.
    weights: Vec<f32>,
    /// `(d+1, n_vertices)`: slots of the two blur neighbours of each vertex along each axis.
    neighbors: Vec<[u32; 2]>,
    /// `1 / (1 + 2^-d)` in f32.
    alpha: f32,
    /// Whether the vertex keys were packed (see [`KeyTable`]); for tests.
    #[cfg_attr(not(test), allow(dead_code))]
    packed: bool,
}

/// One located point: its elevation, nearest remainder-0 point, ranks and barycentric
/// weights (scratch reused from point to point).
struct Located {
    el: Vec<f32>,
    rem0: Vec<f32>,
    rank: Vec<i32>,
    bary: Vec<f32>,
    /// `inv_rank[k]` = the coordinate of rank k.
    inv_rank: Vec<usize>,
}

impl Located {
    fn new(d: usize) -> Self {
        Located {
            el: vec![0.0; d + 1],
            rem0: vec![0.0; d + 1],
            rank: vec![0; d + 1],
            bary: vec![0.0; d + 2],
            inv_rank: vec![0; d + 1],
        }
    }

    fn locate(&mut self, cst: &Constants, f: &[f32]) {
        cst.simplex(
            f,
            &mut self.el,
            &mut self.rem0,
            &mut self.rank,
            &mut self.bary,
        );
    }

    fn codes(&mut self, pk: &Packing, out: &mut [u64]) {
        vertex_codes(pk, &self.rem0, &self.rank, &mut self.inv_rank, out);
    }
}

/// Packed keys of the d+1 vertices of a located point, remainder r = 0..=d. Remainder
/// r's key is `rem0 + canonical[r][rank]`; from r−1 to r every coordinate gains 1 and the
/// one of rank d+1−r loses d+1 (the (d+1)-th coordinate is implicit).
#[inline(always)]
fn vertex_codes(pk: &Packing, rem0: &[f32], rank: &[i32], inv_rank: &mut [usize], out: &mut [u64]) {
    let d = rem0.len() - 1;
    let (rank, inv_rank, out) = (&rank[..=d], &mut inv_rank[..=d], &mut out[..=d]);
    for (i, &r) in rank.iter().enumerate() {
        inv_rank[r as usize] = i;
    }
    let mut code = pk.pack(rem0[..d].iter().map(|&v| v as i32));
    out[0] = code;
    for r in 1..=d {
        code = code.wrapping_add(pk.ones);
        let i = inv_rank[d + 1 - r];
        if i < d {
            code = code.wrapping_sub(pk.unit(i, d as u64 + 1));
        }
        out[r] = code;
    }
}

/// Locates a chunk of points and writes their vertex codes and barycentric weights, with
/// the given scratch (fixed-size arrays for small `d`, see [`locate_chunk`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn locate_chunk_with(
    cst: &Constants,
    pk: &Packing,
    f: &[f32],
    codes: &mut [u64],
    bary: &mut [f32],
    el: &mut [f32],
    rem0: &mut [f32],
    rank: &mut [i32],
    b: &mut [f32],
    inv_rank: &mut [usize],
) {
    let dp1 = el.len();
    let d = dp1 - 1;
    for ((f, codes), bary) in f
        .chunks_exact(d)
        .zip(codes.chunks_exact_mut(dp1))
        .zip(bary.chunks_exact_mut(dp1))
    {
        cst.simplex(f, el, rem0, rank, b);
        vertex_codes(pk, rem0, rank, inv_rank, codes);
        bary.copy_from_slice(&b[..dp1]);
    }
}

/// [`locate_chunk_with`] on arrays of `N = d+1` (`M = d+2`) elements.
fn locate_fixed<const N: usize, const M: usize>(
    cst: &Constants,
    pk: &Packing,
    f: &[f32],
    codes: &mut [u64],
    bary: &mut [f32],
) {
    let (mut el, mut rem0, mut rank, mut b, mut inv) =
        ([0f32; N], [0f32; N], [0i32; N], [0f32; M], [0usize; N]);
    locate_chunk_with(
        cst, pk, f, codes, bary, &mut el, &mut rem0, &mut rank, &mut b, &mut inv,
    );
}

/// Locates a chunk of points (`d` features each): vertex codes and barycentric weights.
fn locate_chunk(cst: &Constants, pk: &Packing, f: &[f32], codes: &mut [u64], bary: &mut [f32]) {
    match cst.d {
        1 => locate_fixed::<2, 3>(cst, pk, f, codes, bary),
        2 => locate_fixed::<3, 4>(cst, pk, f, codes, bary),
        3 => locate_fixed::<4, 5>(cst, pk, f, codes, bary),
        4 => locate_fixed::<5, 6>(cst, pk, f, codes, bary),
        5 => locate_fixed::<6, 7>(cst, pk, f, codes, bary),
        6 => locate_fixed::<7, 8>(cst, pk, f, codes, bary),
        7 => locate_fixed::<8, 9>(cst, pk, f, codes, bary),
        8 => locate_fixed::<9, 10>(cst, pk, f, codes, bary),
        d => {
            let mut loc = Located::new(d);
            let Located {
                el,
                rem0,
                rank,
                bary: b,
                inv_rank,
            } = &mut loc;
            locate_chunk_with(cst, pk, f, codes, bary, el, rem0, rank, b, inv_rank);
        }
    }
}

/// The lattice constants of dimension `d` (docs/postprocessing.md §5.3, "Constants").
struct Constants {
    d: usize,
    /// `float(sqrt(2/3)·(d+1)/sqrt((i+1)(i+2)))`, the product taken in double.
    scale: Vec<f32>,
    /// `1.0f / (d+1)`.
    inv_dp1: f32,
    /// `float(d+1)`.
    dp1: f32,
}

impl Constants {
    fn new(d: usize) -> Self {
        let inv_std = ((2.0f64 / 3.0).sqrt() * (d + 1) as f64) as f32;
        let scale = (0..d)
            .map(|i| (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std as f64) as f32)
            .collect();
        Constants {
            d,
            scale,
            inv_dp1: 1.0f32 / (d + 1) as f32,
            dp1: (d + 1) as f32,
        }
    }

    /// Locates one point (`f` has `d` features) in the lattice. `el` is scratch of
    /// length `d+1`; `rem0`, `rank` (length `d+1`) and `bary` (length `d+2`) are outputs.
    /// The caller has checked that the coordinates stay below [`LIMIT`].
    ///
    /// `d` is taken from the scratch lengths, so that a caller with fixed-size arrays gets
    /// a fully unrolled copy after inlining.
    #[inline(always)]
    fn simplex(
        &self,
        f: &[f32],
        el: &mut [f32],
        rem0: &mut [f32],
        rank: &mut [i32],
        bary: &mut [f32],
    ) {
        let d = el.len() - 1;
        debug_assert_eq!(d, self.d);
        let (f, scale) = (&f[..d], &self.scale[..d]);
        let (rem0, rank, bary) = (&mut rem0[..=d], &mut rank[..=d], &mut bary[..d + 2]);
        // Elevate onto the hyperplane Σ x = 0.
        let mut sm = 0f32;
        for j in (1..=d).rev() {
            let cf = f[j - 1] * scale[j - 1];
            el[j] = sm - j as f32 * cf;
            sm += cf;
        }
        el[0] = sm;
        // Nearest remainder-0 point (SSE rounding: half to even).
        let mut sum = 0f32;
        for i in 0..=d {
            let v = round_half_even(self.inv_dp1 * el[i]);
            rem0[i] = v * self.dp1;
            sum += v;
        }
        // Rank of each residual; a tie ranks the later coordinate higher.
        rank.fill(0);
        for i in 0..d {
            let di = el[i] - rem0[i];
            for j in i + 1..=d {
                let lt = (di < el[j] - rem0[j]) as i32;
                rank[i] += lt;
                rank[j] += 1 - lt;
            }
        }
        // Wrap the ranks into 0..=d, moving the remainder-0 point along.
        let sum = sum as i32;
        let dp1 = (d + 1) as i32;
        for i in 0..=d {
            rank[i] += sum;
            if rank[i] < 0 {
                rank[i] += dp1;
                rem0[i] += self.dp1;
            } else if rank[i] > d as i32 {
                rank[i] -= dp1;
                rem0[i] -= self.dp1;
            }
        }
        // Barycentric coordinates.
        bary.fill(0.0);
        for i in 0..=d {
            let t = (el[i] - rem0[i]) * self.inv_dp1;
            let k = d - rank[i] as usize;
            bary[k] += t;
            bary[k + 1] -= t;
        }
        bary[0] += 1.0 + bary[d + 1];
    }
}

/// Open-addressing hash table from lattice keys (the first `d` coordinates of a
/// vertex; the last is implied by Σ = 0) to vertex numbers in insertion order.
///
/// Every key has a 64-bit code. When every coordinate fits in `64/d` bits (always the
/// case for image features of realistic size) the code is the key itself, packed
/// ([`Packing`]); otherwise the code is a hash and a code match is confirmed against the
/// stored coordinates. A slot holds only the vertex number (4 bytes, so that the table
/// of a large lattice stays in the L2 cache); its code is read from `codes`.
struct KeyTable {
    d: usize,
    packing: Option<Packing>,
    /// `vertex + 1`; 0 = empty slot.
    slots: Vec<u32>,
    /// log2 of the slot count.
    shift_bits: u32,
    /// Code of each vertex.
    codes: Vec<u64>,
    /// Coordinates of each vertex, `(n, d)`; only without packing.
    keys: Vec<i32>,
}

/// Keys packed into a `u64`: coordinate `i` in bits `i·bits ..`, offset by `2^(bits−1)`.
/// As long as every coordinate stays inside the field, adding or subtracting packed
/// values acts on each field separately (no carry crosses a field).
#[derive(Debug, Clone, Copy)]
struct Packing {
    bits: u32,
    bias: i64,
    /// 1 in every one of the `d` fields.
    ones: u64,
}

impl Packing {
    /// A packing for `d` coordinates bounded by `max_coord` in magnitude, if one fits.
    fn new(d: usize, max_coord: f64) -> Option<Self> {
        let bits = (64 / d as u32).min(32);
        if bits < 2 {
            return None;
        }
        let bias = 1i64 << (bits - 1);
        (bits >= 2 && max_coord < (bias - 1) as f64).then(|| Packing {
            bits,
            bias,
            ones: (0..d as u32).fold(0u64, |c, i| c | (1u64 << (i * bits))),
        })
    }

    #[inline]
    fn pack(&self, key: impl Iterator<Item = i32>) -> u64 {
        key.enumerate().fold(0u64, |c, (i, k)| {
            c | (((k as i64 + self.bias) as u64) << (i as u32 * self.bits))
        })
    }

    /// `n · (unit vector of coordinate i)`, packed without bias.
    #[inline]
    fn unit(&self, i: usize, n: u64) -> u64 {
        n << (i as u32 * self.bits)
    }
}

impl KeyTable {
    fn new(d: usize, packing: Option<Packing>) -> Self {
        let shift_bits = 12;
        KeyTable {
            d,
            packing,
            slots: vec![0; 1 << shift_bits],
            shift_bits,
            codes: Vec::new(),
            keys: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.codes.len()
    }

    /// The code of a key given by its coordinates.
    #[inline]
    fn code(&self, key: &[i32]) -> u64 {
        match &self.packing {
            Some(pk) => pk.pack(key.iter().copied()),
            None => key.iter().fold(0x243f_6a88_85a3_08d3u64, |h, &k| {
                let h = (h ^ k as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                h ^ (h >> 29)
            }),
        }
    }

    /// First slot to probe for `code` (Fibonacci hashing: the high bits of a product).
    #[inline]
    fn home(&self, code: u64) -> usize {
        (code.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - self.shift_bits)) as usize
    }

    #[inline]
    fn key(&self, v: usize) -> &[i32] {
        &self.keys[v * self.d..(v + 1) * self.d]
    }

    /// Does `slot` hold this key? `key` is only read without packing.
    #[inline]
    fn matches(&self, slot: u32, code: u64, key: &[i32]) -> bool {
        let v = slot as usize - 1;
        self.codes[v] == code
            && (self.packing.is_some() || self.key(v).iter().zip(key).all(|(a, b)| a == b))
    }

    /// Vertex number of the key with this `code` (and, without packing, these coordinates).
    #[inline]
    fn find(&self, code: u64, key: &[i32]) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut h = self.home(code);
        loop {
            let slot = self.slots[h];
            if slot == 0 {
                return None;
            }
            if self.matches(slot, code, key) {
                return Some(slot as usize - 1);
            }
            h = (h + 1) & mask;
        }
    }

    /// As [`KeyTable::find`], inserting the key if absent.
    fn find_or_insert(&mut self, code: u64, key: &[i32]) -> usize {
        if (self.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut h = self.home(code);
        loop {
            let slot = self.slots[h];
            if slot == 0 {
                let v = self.len();
                self.codes.push(code);
                if self.packing.is_none() {
                    self.keys.extend_from_slice(key);
                }
                self.slots[h] = v as u32 + 1;
                return v;
            }
            if self.matches(slot, code, key) {
                return slot as usize - 1;
            }
            h = (h + 1) & mask;
        }
    }

    fn grow(&mut self) {
        self.rehash(self.slots.len() * 2);
    }

    /// Makes room for `n` keys in all (at most half full) with one rehash, instead of
    /// the doublings that inserting them would cause. Vertex numbers do not change.
    fn reserve(&mut self, n: usize) {
        let cap = (n.saturating_add(1).saturating_mul(2)).next_power_of_two();
        if cap > self.slots.len() {
            self.rehash(cap);
        }
    }

    /// Moves the slots into a table of `cap` (a power of two) slots.
    fn rehash(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; cap]);
        self.shift_bits = cap.trailing_zeros();
        let mask = cap - 1;
        for slot in old.into_iter().filter(|&s| s != 0) {
            let mut h = self.home(self.codes[slot as usize - 1]);
            while self.slots[h] != 0 {
                h = (h + 1) & mask;
            }
            self.slots[h] = slot;
        }
    }
}

/// Round half to even, exact for |x| < 2^22 (adding and removing 1.5·2^23 leaves no
/// fraction bits, and the default rounding mode breaks ties to even; unlike
/// `f32::round_ties_even` this needs neither SSE4.1 nor a libm call). Larger values are
/// returned as they are: [`Lattice::new`] rejects them as out of range anyway.
#[inline]
fn round_half_even(x: f32) -> f32 {
    const C: f32 = 12_582_912.0; // 1.5 · 2^23
    if x.abs() < 4_194_304.0 {
        (x + C) - C
    } else {
        x
    }
}

/// `canonical[r][j]`: coordinate `j` of the remainder-`r` vertex of the canonical simplex.
#[inline]
fn canonical(d: usize, r: usize, j: usize) -> i32 {
    if j <= d - r {
        r as i32
    } else {
        r as i32 - (d as i32 + 1)
    }
}

impl Lattice {
    /// Builds the lattice of `features`, point-major `(n_points, d)`.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when the features are so large (a tiny standard
    /// deviation) that lattice coordinates would leave the exactly-representable range,
    /// or when there are too many points for 32-bit indices.
    pub(crate) fn new(features: &[f32], d: usize) -> Result<Self> {
        Self::build(features, d, true)
    }

    /// [`Lattice::new`]; `allow_packed = false` forces hashed keys (tests the fallback).
    fn build(features: &[f32], d: usize, allow_packed: bool) -> Result<Self> {
        if d == 0 || !features.len().is_multiple_of(d) {
            return Err(Error::Internal(format!(
                "lattice: {} features not a multiple of d = {d}",
                features.len()
            )));
        }
        let n_points = features.len() / d;
        let dp1 = d + 1;
        if n_points
            .checked_mul(dp1)
            .is_none_or(|n| n >= u32::MAX as usize)
        {
            return Err(Error::param(
                "image",
                format!("too many pixels ({n_points}) for {d} features"),
            ));
        }
        let cst = Constants::new(d);

        // A bound on |lattice coordinate| from the feature ranges: |el_j| ≤ Σ_k (k+1)·|f_k·sf_k|,
        // rounding and wrapping add at most d+1, the simplex vertices and the blur
        // neighbours 2(d+1) more.
        let max_f = features
            .par_chunks(d * CHUNK)
            .map(|c| {
                let mut m = vec![0f64; d];
                for f in c.chunks_exact(d) {
                    for (m, &x) in m.iter_mut().zip(f) {
                        *m = m.max((x as f64).abs());
                    }
                }
                m
            })
            .reduce(
                || vec![0f64; d],
                |a, b| a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect(),
            );
        let bound = max_f
            .iter()
            .zip(&cst.scale)
            .enumerate()
            .map(|(k, (m, &sf))| (k + 1) as f64 * m * sf as f64)
            .sum::<f64>()
            + 4.0 * dp1 as f64
            + 2.0;
        if bound.is_nan() || bound > LIMIT as f64 {
            return Err(Error::param(
                "features",
                format!("lattice coordinates up to {bound:e} out of range: a standard deviation (sxy, srgb) is too small"),
            ));
        }
        let packing = if allow_packed {
            Packing::new(d, bound)
        } else {
            None
        };
        let mut table = KeyTable::new(d, packing);
        let mut offsets: Vec<u32> = Vec::with_capacity(n_points * dp1);
        let mut weights: Vec<f32> = Vec::with_capacity(n_points * dp1);
        // The zero feature vector, for densecrf's SSE padding (below).
        let mut zero = Located::new(d);
        zero.locate(&cst, &vec![0f32; d]);

        if let Some(pk) = packing {
            // Blocks of points go through two stages, pipelined: (1) locate every point
            // of the block and compute the codes of its d+1 vertices (parallel); (2) number
            // the vertices (sequential: numbering is insertion order) while the next block
            // is located.
            let block = BLOCK.min(n_points);
            let mut cur = (vec![0u64; block * dp1], vec![0f32; block * dp1]);
            let mut next = (vec![0u64; block * dp1], vec![0f32; block * dp1]);
            let locate = |first: usize, buf: &mut (Vec<u64>, Vec<f32>)| {
                let n = block.min(n_points - first);
                let f = &features[first * d..(first + n) * d];
                f.par_chunks(d * CHUNK)
                    .zip(buf.0[..n * dp1].par_chunks_mut(dp1 * CHUNK))
                    .zip(buf.1[..n * dp1].par_chunks_mut(dp1 * CHUNK))
                    .for_each(|((f, codes), bary)| locate_chunk(&cst, &pk, f, codes, bary));
            };
            locate(0, &mut cur);
            // Neighbouring points often share vertices: the previous point's codes are
            // checked before the hash table.
            let (mut prev_codes, mut prev_offs) = (vec![u64::MAX; dp1], vec![0u32; dp1]);
            let mut first = 0;
            while first < n_points {
                let n = block.min(n_points - first);
                let following = first + n;
                let mut number = |cur: &(Vec<u64>, Vec<f32>)| {
                    weights.extend_from_slice(&cur.1[..n * dp1]);
                    for codes in cur.0[..n * dp1].chunks_exact(dp1) {
                        for (r, &code) in codes.iter().enumerate() {
                            let o = match prev_codes.iter().position(|&c| c == code) {
                                Some(q) => prev_offs[q],
                                None => table.find_or_insert(code, &[]) as u32 + 1,
                            };
                            offsets.push(o);
                            prev_offs[r] = o;
                        }
                        prev_codes.copy_from_slice(codes);
                    }
                };
                if following < n_points {
                    rayon::join(|| number(&cur), || locate(following, &mut next));
                } else {
                    number(&cur);
                }
                if first == 0 && following < n_points {
                    // Size the table once from the first block's vertices per point
                    // (with a margin), rather than doubling it (and rehashing every key
                    // at random) as it fills.
                    let est = table.len() as f64 * n_points as f64 / following as f64 * 1.25;
                    table.reserve(est as usize);
                }
                std::mem::swap(&mut cur, &mut next);
                first = following;
            }
            drop((cur, next));
            // SSE-build quirk: the last block of 4 points is padded with zero feature
            // vectors, whose vertices join the lattice (docs/postprocessing.md §5.3 step 7).
            if !n_points.is_multiple_of(4) {
                let mut codes = vec![0u64; dp1];
                zero.codes(&pk, &mut codes);
                for code in codes {
                    table.find_or_insert(code, &[]);
                }
            }
        } else {
            // Same steps with explicit coordinates and hashed codes.
            let mut rem0 = vec![0i32; n_points * dp1];
            let mut rank = vec![0u32; n_points * dp1];
            weights.resize(n_points * dp1, 0.0);
            offsets.resize(n_points * dp1, 0);
            features
                .par_chunks(d * CHUNK)
                .zip(rem0.par_chunks_mut(dp1 * CHUNK))
                .zip(rank.par_chunks_mut(dp1 * CHUNK))
                .zip(weights.par_chunks_mut(dp1 * CHUNK))
                .for_each(|(((f, rem0), rank), bary)| {
                    let mut loc = Located::new(d);
                    for (((f, rem0), rank), bary) in f
                        .chunks_exact(d)
                        .zip(rem0.chunks_exact_mut(dp1))
                        .zip(rank.chunks_exact_mut(dp1))
                        .zip(bary.chunks_exact_mut(dp1))
                    {
                        loc.locate(&cst, f);
                        for i in 0..dp1 {
                            rem0[i] = loc.rem0[i] as i32;
                            rank[i] = loc.rank[i] as u32;
                        }
                        bary.copy_from_slice(&loc.bary[..dp1]);
                    }
                });
            let mut key = vec![0i32; d];
            for ((rem0, rank), offs) in rem0
                .chunks_exact(dp1)
                .zip(rank.chunks_exact(dp1))
                .zip(offsets.chunks_exact_mut(dp1))
            {
                for (r, o) in offs.iter_mut().enumerate() {
                    for (k, (&r0, &rk)) in key.iter_mut().zip(rem0.iter().zip(rank)) {
                        *k = r0 + canonical(d, r, rk as usize);
                    }
                    *o = table.find_or_insert(table.code(&key), &key) as u32 + 1;
                }
            }
            if !n_points.is_multiple_of(4) {
                for r in 0..dp1 {
                    for (k, (&r0, &rk)) in key.iter_mut().zip(zero.rem0.iter().zip(&zero.rank)) {
                        *k = r0 as i32 + canonical(d, r, rk as usize);
                    }
                    table.find_or_insert(table.code(&key), &key);
                }
            }
        }
        let n_vertices = table.len();
        if n_vertices >= u32::MAX as usize - 1 {
            return Err(Error::param(
                "image",
                format!("too many lattice vertices ({n_vertices})"),
            ));
        }

        // 3. Blur neighbours, axis-major. Along axis j the lattice step is
        //    e = (d+1)·e_j − 1 (for j = d: −1 in every stored coordinate); n1(v) = v + e is
        //    looked up (in parallel, read-only table) and n2 follows by symmetry:
        //    n2(n1(v)) = v.
        let mut neighbors = vec![[0u32; 2]; dp1 * n_vertices];
        neighbors
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                let mut n1 = vec![0i32; d];
                for (k, nb) in out.iter_mut().enumerate() {
                    let idx = c * CHUNK + k;
                    let (j, v) = (idx / n_vertices, idx % n_vertices);
                    let found = match &table.packing {
                        Some(pk) => {
                            let mut code = table.codes[v].wrapping_sub(pk.ones);
                            if j < d {
                                code = code.wrapping_add(pk.unit(j, dp1 as u64));
                            }
                            table.find(code, &[])
                        }
                        None => {
                            let key = table.key(v);
                            for i in 0..d {
                                n1[i] = key[i] - 1;
                            }
                            if j < d {
                                n1[j] = key[j] + d as i32;
                            }
                            table.find(table.code(&n1), &n1)
                        }
                    };
                    nb[0] = found.map_or(0, |u| u as u32 + 1);
                }
            });
        drop(table);
        for axis in neighbors.chunks_exact_mut(n_vertices) {
            for v in 0..n_vertices {
                let n1 = axis[v][0];
                if n1 != 0 {
                    axis[n1 as usize - 1][1] = v as u32 + 1;
                }
            }
        }

        let alpha = 1.0f32 / (1.0f32 + 2f32.powi(-(d as i32)));
        Ok(Lattice {
            d,
            n_points,
            n_vertices,
            offsets,
            weights,
            neighbors,
            alpha,
            packed: packing.is_some(),
        })
    }

    /// Number of points.
    pub(crate) fn n_points(&self) -> usize {
        self.n_points
    }

    /// Number of lattice vertices (with densecrf's padding vertices).
    pub(crate) fn n_vertices(&self) -> usize {
        self.n_vertices
    }

    /// Filters `input`, point-major `(n_points, vs)`, into `out` (same shape) with a
    /// per-point diagonal scaling on both sides: `out = s ∘ L(s ∘ input)` (densecrf's
    /// symmetric normalisation; all-ones `scale` is exact plain filtering). `L` is splat,
    /// blur along axes `0..=d`, slice. `vs ≤ 2` follows densecrf's scalar path (slice
    /// term `(w·v)·α`), `vs > 2` its SSE path (`(w·α)·v`).
    ///
    /// The components never mix, so they are filtered in groups of at most 8 (with
    /// compile-time group sizes, one pass over the lattice per group), which changes
    /// nothing in the result.
    pub(crate) fn filter(
        &self,
        input: &[f32],
        scale: &[f32],
        vs: usize,
        out: &mut [f32],
        scratch: &mut FilterScratch,
    ) {
        self.filter_into(input, scale, vs, out, scratch, |o, v| *o = v);
    }

    /// [`Lattice::filter`] with each output value `v` handed to `emit(&mut out[i], v)`
    /// instead of stored, so that a caller can fold it into a buffer it already holds
    /// (mean field subtracts the weighted message in place) without a separate output
    /// array and a second pass over it.
    pub(crate) fn filter_into<E>(
        &self,
        input: &[f32],
        scale: &[f32],
        vs: usize,
        out: &mut [f32],
        scratch: &mut FilterScratch,
        emit: E,
    ) where
        E: Fn(&mut f32, f32) + Sync + Copy,
    {
        assert!(vs > 0, "lattice filter: empty values");
        assert_eq!(input.len(), self.n_points * vs, "lattice filter input");
        assert_eq!(out.len(), self.n_points * vs, "lattice filter output");
        assert_eq!(scale.len(), self.n_points, "lattice filter scale");
        let seq_path = vs <= 2;
        let mut c0 = 0;
        while c0 < vs {
            let g = (vs - c0).min(8);
            let v = Values {
                input,
                scale,
                stride: vs,
                c0,
            };
            match (g, seq_path) {
                (1, true) => self.filter_group::<1, true, E>(&v, out, scratch, emit),
                (2, true) => self.filter_group::<2, true, E>(&v, out, scratch, emit),
                (1, false) => self.filter_group::<1, false, E>(&v, out, scratch, emit),
                (2, false) => self.filter_group::<2, false, E>(&v, out, scratch, emit),
                (3, _) => self.filter_group::<3, false, E>(&v, out, scratch, emit),
                (4, _) => self.filter_group::<4, false, E>(&v, out, scratch, emit),
                (5, _) => self.filter_group::<5, false, E>(&v, out, scratch, emit),
                (6, _) => self.filter_group::<6, false, E>(&v, out, scratch, emit),
                (7, _) => self.filter_group::<7, false, E>(&v, out, scratch, emit),
                _ => self.filter_group::<8, false, E>(&v, out, scratch, emit),
            }
            c0 += g;
        }
    }

    /// Filters components `c0..c0+G` of the values; `SEQ`: densecrf's scalar path.
    fn filter_group<const G: usize, const SEQ: bool, E>(
        &self,
        v: &Values,
        out: &mut [f32],
        scratch: &mut FilterScratch,
        emit: E,
    ) where
        E: Fn(&mut f32, f32) + Sync + Copy,
    {
        let Values {
            input,
            scale,
            stride,
            c0,
        } = *v;
        let dp1 = self.d + 1;
        let n_slots = self.n_vertices + 1;
        let (mut a, mut b) = scratch.buffers(n_slots * G);
        // Slot 0 stays zero: the splat never writes it, the blur skips it.
        b[..G].fill(0.0);

        // Splat, in densecrf's order: points in order, then remainders r = 0..=d;
        // vals[v] += w · (in[p] · s[p]). Sequential: the order of the additions into each
        // vertex is part of the result.
        a.fill(0.0);
        // Every offset and neighbour is a slot below n_slots (`Lattice::build`), so the
        // vertex rows below are read and written unchecked.
        debug_assert!(self.offsets.iter().all(|&o| (o as usize) < n_slots));
        debug_assert!(self
            .neighbors
            .iter()
            .all(|&[p, q]| (p as usize) < n_slots && (q as usize) < n_slots));
        for ((x, &sp), (offs, ws)) in input.chunks_exact(stride).zip(scale).zip(
            self.offsets
                .chunks_exact(dp1)
                .zip(self.weights.chunks_exact(dp1)),
        ) {
            let x: [f32; G] = std::array::from_fn(|i| x[c0 + i] * sp);
            for (&o, &w) in offs.iter().zip(ws) {
                // SAFETY: o < n_slots (above) and a.len() = n_slots·G.
                let val = unsafe { &mut *(a.as_mut_ptr().add(o as usize * G) as *mut [f32; G]) };
                for i in 0..G {
                    val[i] += w * x[i];
                }
            }
        }

        // Blur along each axis j = 0..=d, Jacobi style.
        for j in 0..dp1 {
            let nb = &self.neighbors[j * self.n_vertices..(j + 1) * self.n_vertices];
            let old: &[f32] = a;
            let olds = &old[G..];
            b[G..]
                .par_chunks_mut(G * CHUNK)
                .zip(olds.par_chunks(G * CHUNK))
                .zip(nb.par_chunks(CHUNK))
                .for_each(|((new, own), nb)| {
                    for ((nv, ov), &[n1, n2]) in
                        new.chunks_exact_mut(G).zip(own.chunks_exact(G)).zip(nb)
                    {
                        // SAFETY: n1, n2 < n_slots (above) and old.len() = n_slots·G.
                        let (x1, x2) = unsafe {
                            (
                                &*(old.as_ptr().add(n1 as usize * G) as *const [f32; G]),
                                &*(old.as_ptr().add(n2 as usize * G) as *const [f32; G]),
                            )
                        };
                        for i in 0..G {
                            let s = x1[i] + x2[i];
                            nv[i] = if SEQ {
                                // densecrf's scalar loop: `old + 0.5*(n1 + n2)` with a double 0.5.
                                (ov[i] as f64 + 0.5 * s as f64) as f32
                            } else {
                                ov[i] + 0.5f32 * s
                            };
                        }
                    }
                });
            std::mem::swap(&mut a, &mut b);
        }

        // Slice: out[p] = s[p] · Σ_r (w·v)·α  (scalar path) or Σ_r (w·α)·v (SSE path).
        let alpha = self.alpha;
        let vals: &[f32] = a;
        out.par_chunks_mut(stride * CHUNK)
            .zip(scale.par_chunks(CHUNK))
            .zip(
                self.offsets
                    .par_chunks(dp1 * CHUNK)
                    .zip(self.weights.par_chunks(dp1 * CHUNK)),
            )
            .for_each(|((out, scale), (offs, ws))| {
                for ((o, &sp), (offs, ws)) in out
                    .chunks_exact_mut(stride)
                    .zip(scale)
                    .zip(offs.chunks_exact(dp1).zip(ws.chunks_exact(dp1)))
                {
                    let mut acc = [0f32; G];
                    for (&off, &w) in offs.iter().zip(ws) {
                        // SAFETY: off < n_slots (above) and vals.len() = n_slots·G.
                        let val =
                            unsafe { &*(vals.as_ptr().add(off as usize * G) as *const [f32; G]) };
                        if SEQ {
                            for i in 0..G {
                                acc[i] += w * val[i] * alpha;
                            }
                        } else {
                            let wa = w * alpha;
                            for i in 0..G {
                                acc[i] += wa * val[i];
                            }
                        }
                    }
                    for i in 0..G {
                        emit(&mut o[c0 + i], acc[i] * sp);
                    }
                }
            });
    }
}

/// The values a filter call reads: `input` `(n_points, stride)`, the per-point scale,
/// and the first component of the group.
#[derive(Clone, Copy)]
struct Values<'a> {
    input: &'a [f32],
    scale: &'a [f32],
    stride: usize,
    c0: usize,
}

/// Two reusable vertex-value buffers for [`Lattice::filter`].
#[derive(Debug, Default)]
pub(crate) struct FilterScratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl FilterScratch {
    fn buffers(&mut self, len: usize) -> (&mut [f32], &mut [f32]) {
        self.a.resize(len, 0.0);
        self.b.resize(len, 0.0);
        (&mut self.a[..], &mut self.b[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical simplex: remainder r's vertex has d+1-r coordinates r and r
    /// coordinates r-(d+1), so its coordinates sum to zero.
    #[test]
    fn canonical_vertices_sum_to_zero() {
        for d in 1..8 {
            for r in 0..=d {
                let s: i32 = (0..=d).map(|j| canonical(d, r, j)).sum();
                assert_eq!(s, 0, "d={d} r={r}");
            }
        }
    }

    /// Barycentric weights of any point sum to 1 and are non-negative.
    #[test]
    fn barycentric_weights_partition_unity() {
        let d = 5;
        let cst = Constants::new(d);
        let (mut el, mut r0, mut rk, mut b) = (
            vec![0f32; d + 1],
            vec![0f32; d + 1],
            vec![0i32; d + 1],
            vec![0f32; d + 2],
        );
        let mut x = 0x1234_5678u32;
        for _ in 0..1000 {
            let f: Vec<f32> = (0..d)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x % 10_000) as f32 / 97.0
                })
                .collect();
            cst.simplex(&f, &mut el, &mut r0, &mut rk, &mut b);
            let s: f32 = b[..=d].iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{s}");
            assert!(b[..=d].iter().all(|&w| w >= -1e-6), "{b:?}");
            let mut ranks: Vec<i32> = rk.clone();
            ranks.sort();
            assert_eq!(ranks, (0..=d as i32).collect::<Vec<_>>());
        }
    }

    /// A constant signal stays nearly constant away from the borders, and filtering is
    /// linear: L(2x) = 2 L(x) exactly (scaling by 2 is exact in binary floating point).
    #[test]
    fn filter_is_linear_and_smooth() {
        let (h, w) = (20usize, 23usize);
        let feats: Vec<f32> = (0..h * w)
            .flat_map(|p| [(p % w) as f32 / 3.0, (p / w) as f32 / 3.0])
            .collect();
        let lat = Lattice::new(&feats, 2).unwrap();
        let ones = vec![1f32; h * w];
        let twos = vec![2f32; h * w];
        let mut s = FilterScratch::default();
        let (mut o1, mut o2) = (vec![0f32; h * w], vec![0f32; h * w]);
        lat.filter(&ones, &ones, 1, &mut o1, &mut s);
        lat.filter(&twos, &ones, 1, &mut o2, &mut s);
        assert!(o1.iter().zip(&o2).all(|(a, b)| 2.0 * a == *b));
        let c = o1[10 * w + 11];
        assert!(c > 1.0 && o1[0] < c, "{} {}", o1[0], c);
    }

    /// Packed and hashed keys give the same lattice, hence bit-identical filtering
    /// (vertex numbering may differ, results may not). d = 5 takes the fixed-size
    /// locate path, d = 9 with small features the packed run-time-d path.
    #[test]
    fn hashed_keys_match_packed_keys() {
        for (d, colour_scale) in [(5usize, 20.0f32), (9, 2000.0)] {
            hashed_matches_packed(d, colour_scale);
        }
    }

    fn hashed_matches_packed(d: usize, colour_scale: f32) {
        let (h, w) = (17usize, 19usize);
        let mut x = 7u32;
        let feats: Vec<f32> = (0..h * w)
            .flat_map(|p| {
                let mut f = vec![(p % w) as f32 / 80.0, (p / w) as f32 / 80.0];
                for _ in 0..d - 2 {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    f.push(((x >> 16) % 256) as f32 / colour_scale);
                }
                f
            })
            .collect();
        let packed = Lattice::build(&feats, d, true).unwrap();
        let hashed = Lattice::build(&feats, d, false).unwrap();
        assert!(packed.packed && !hashed.packed, "d={d}");
        assert_eq!(packed.n_vertices, hashed.n_vertices, "d={d}");
        let input: Vec<f32> = (0..h * w * 3).map(|i| (i % 7) as f32 / 7.0).collect();
        let scale: Vec<f32> = (0..h * w).map(|i| 1.0 / (1.0 + (i % 5) as f32)).collect();
        let (mut a, mut b) = (vec![0f32; h * w * 3], vec![0f32; h * w * 3]);
        let mut s = FilterScratch::default();
        packed.filter(&input, &scale, 3, &mut a, &mut s);
        hashed.filter(&input, &scale, 3, &mut b, &mut s);
        assert_eq!(a, b);
    }
}
