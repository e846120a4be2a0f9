//! The permutohedral lattice (Adams, Baek & Davis, "Fast High-Dimensional Filtering
//! Using the Permutohedral Lattice", Eurographics 2010), built and applied the way
//! Krähenbühl's densecrf does it (spec §5.3), so that the filtered values match
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
//! Parallelism never changes the result: the splat is done as a gather (each vertex
//! sums its contributions in point order, exactly the order of densecrf's scatter
//! loop), the blur is Jacobi style, and the slice is per point.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Points (or vertices) per parallel work item.
const CHUNK: usize = 2048;

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
    /// Splat as a gather: vertex `v` receives `splat_entries[splat_start[v]..splat_start[v+1]]`,
    /// in increasing point order; each entry is `(point, weight)`.
    splat_start: Vec<u32>,
    splat_entries: Vec<(u32, f32)>,
    /// `(d+1, n_vertices)`: slots of the two blur neighbours of each vertex along each axis.
    neighbors: Vec<[u32; 2]>,
    /// `1 / (1 + 2^-d)` in f32.
    alpha: f32,
}

/// Per point: the nearest remainder-0 point, the ranks and the barycentric weights.
struct Simplex {
    rem0: Vec<i32>,
    rank: Vec<u32>,
    bary: Vec<f32>,
}

/// The lattice constants of dimension `d` (spec §5.3 "Constants").
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
        let scale = (0..d).map(|i| (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std as f64) as f32).collect();
        Constants { d, scale, inv_dp1: 1.0f32 / (d + 1) as f32, dp1: (d + 1) as f32 }
    }

    /// Locates one point (`f` has `d` features) in the lattice. `el` is scratch of
    /// length `d+1`; `rem0`, `rank` (length `d+1`) and `bary` (length `d+2`) are outputs.
    /// Returns the largest |remainder-0 coordinate|, to detect key overflow.
    fn simplex(&self, f: &[f32], el: &mut [f32], rem0: &mut [f32], rank: &mut [i32], bary: &mut [f32]) -> f32 {
        let d = self.d;
        // Elevate onto the hyperplane Σ x = 0.
        let mut sm = 0f32;
        for j in (1..=d).rev() {
            let cf = f[j - 1] * self.scale[j - 1];
            el[j] = sm - j as f32 * cf;
            sm += cf;
        }
        el[0] = sm;
        // Nearest remainder-0 point (SSE rounding: half to even).
        let mut sum = 0f32;
        for i in 0..=d {
            let v = (self.inv_dp1 * el[i]).round_ties_even();
            rem0[i] = v * self.dp1;
            sum += v;
        }
        // Out-of-range coordinates (absurdly small standard deviations): report them and
        // stop before the ranks are used as indices. The caller turns this into an error.
        if !(sum.abs() <= LIMIT && rem0.iter().all(|v| v.abs() <= LIMIT)) {
            return f32::INFINITY;
        }
        // Rank of each residual; a tie ranks the later coordinate higher.
        rank.fill(0);
        for i in 0..d {
            let di = el[i] - rem0[i];
            for j in i + 1..=d {
                if di < el[j] - rem0[j] {
                    rank[i] += 1;
                } else {
                    rank[j] += 1;
                }
            }
        }
        // Wrap the ranks into 0..=d, moving the remainder-0 point along.
        let sum = sum as i32;
        let dp1 = (d + 1) as i32;
        let mut max_abs = 0f32;
        for i in 0..=d {
            rank[i] += sum;
            if rank[i] < 0 {
                rank[i] += dp1;
                rem0[i] += self.dp1;
            } else if rank[i] > d as i32 {
                rank[i] -= dp1;
                rem0[i] -= self.dp1;
            }
            max_abs = max_abs.max(rem0[i].abs());
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
        max_abs
    }
}

/// Open-addressing hash table from lattice keys (the first `d` coordinates of a
/// vertex; the last is implied by Σ = 0) to vertex numbers in insertion order.
struct KeyTable {
    d: usize,
    keys: Vec<i32>,
    /// Vertex number + 1; 0 = empty.
    table: Vec<u32>,
    mask: usize,
}

impl KeyTable {
    fn with_capacity(d: usize, expected: usize) -> Self {
        let cap = (expected.max(16) * 2).next_power_of_two();
        KeyTable { d, keys: Vec::with_capacity(expected * d), table: vec![0; cap], mask: cap - 1 }
    }

    fn len(&self) -> usize {
        self.keys.len() / self.d.max(1)
    }

    #[inline]
    fn hash(key: &[i32]) -> usize {
        let mut h = 0x243f_6a88_85a3_08d3u64;
        for &k in key {
            h = (h ^ k as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
        }
        h as usize
    }

    #[inline]
    fn key(&self, v: usize) -> &[i32] {
        &self.keys[v * self.d..(v + 1) * self.d]
    }

    /// Element-wise comparison (short keys: cheaper than a `memcmp` call).
    #[inline]
    fn key_eq(&self, v: usize, key: &[i32]) -> bool {
        self.key(v).iter().zip(key).all(|(a, b)| a == b)
    }

    /// Vertex number of `key`, if present.
    #[inline]
    fn find(&self, key: &[i32]) -> Option<usize> {
        let mut h = Self::hash(key) & self.mask;
        loop {
            let e = self.table[h];
            if e == 0 {
                return None;
            }
            let v = e as usize - 1;
            if self.key_eq(v, key) {
                return Some(v);
            }
            h = (h + 1) & self.mask;
        }
    }

    /// Vertex number of `key`, inserting it if absent.
    fn find_or_insert(&mut self, key: &[i32]) -> usize {
        if (self.len() + 1) * 2 > self.table.len() {
            self.grow();
        }
        let mut h = Self::hash(key) & self.mask;
        loop {
            let e = self.table[h];
            if e == 0 {
                let v = self.len();
                self.keys.extend_from_slice(key);
                self.table[h] = v as u32 + 1;
                return v;
            }
            let v = e as usize - 1;
            if self.key_eq(v, key) {
                return v;
            }
            h = (h + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let cap = self.table.len() * 2;
        self.table = vec![0; cap];
        self.mask = cap - 1;
        for v in 0..self.len() {
            let mut h = Self::hash(self.key(v)) & self.mask;
            while self.table[h] != 0 {
                h = (h + 1) & self.mask;
            }
            self.table[h] = v as u32 + 1;
        }
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
        if d == 0 || features.len() % d != 0 {
            return Err(Error::Internal(format!("lattice: {} features not a multiple of d = {d}", features.len())));
        }
        let n_points = features.len() / d;
        let dp1 = d + 1;
        if n_points.checked_mul(dp1).is_none_or(|n| n >= u32::MAX as usize) {
            return Err(Error::param("image", format!("too many pixels ({n_points}) for {d} features")));
        }
        let cst = Constants::new(d);

        // 1. Locate every point (parallel; per point, so thread count does not matter).
        let mut simplex = Simplex { rem0: vec![0; n_points * dp1], rank: vec![0; n_points * dp1], bary: vec![0.0; n_points * dp1] };
        let max_abs = features
            .par_chunks(d * CHUNK)
            .zip(simplex.rem0.par_chunks_mut(dp1 * CHUNK))
            .zip(simplex.rank.par_chunks_mut(dp1 * CHUNK))
            .zip(simplex.bary.par_chunks_mut(dp1 * CHUNK))
            .map(|(((f, rem0), rank), bary)| {
                let mut el = vec![0f32; dp1];
                let mut r0 = vec![0f32; dp1];
                let mut rk = vec![0i32; dp1];
                let mut b = vec![0f32; dp1 + 1];
                let mut max_abs = 0f32;
                for (p, f) in f.chunks_exact(d).enumerate() {
                    max_abs = max_abs.max(cst.simplex(f, &mut el, &mut r0, &mut rk, &mut b));
                    let o = p * dp1;
                    for i in 0..dp1 {
                        rem0[o + i] = r0[i] as i32;
                        rank[o + i] = rk[i] as u32;
                        bary[o + i] = b[i];
                    }
                }
                max_abs
            })
            .reduce(|| 0f32, f32::max);
        if !(max_abs <= LIMIT) {
            return Err(Error::param(
                "features",
                format!("lattice coordinate {max_abs} out of range: a standard deviation (sxy, srgb) is too small"),
            ));
        }

        // 2. Insert the vertices (sequential: numbering is insertion order).
        let mut table = KeyTable::with_capacity(d, n_points * dp1 / 4 + 64);
        let mut offsets = vec![0u32; n_points * dp1];
        let mut key = vec![0i32; d];
        for p in 0..n_points {
            let o = p * dp1;
            let (rem0, rank) = (&simplex.rem0[o..o + dp1], &simplex.rank[o..o + dp1]);
            for r in 0..dp1 {
                for i in 0..d {
                    key[i] = rem0[i] + canonical(d, r, rank[i] as usize);
                }
                offsets[o + r] = table.find_or_insert(&key) as u32 + 1;
            }
        }
        // SSE-build quirk: the last block of 4 is padded with zero feature vectors,
        // whose vertices join the lattice (spec §5.3 step 7).
        if n_points % 4 != 0 {
            let zero = vec![0f32; d];
            let (mut el, mut r0, mut rk, mut b) = (vec![0f32; dp1], vec![0f32; dp1], vec![0i32; dp1], vec![0f32; dp1 + 1]);
            cst.simplex(&zero, &mut el, &mut r0, &mut rk, &mut b);
            for r in 0..dp1 {
                for i in 0..d {
                    key[i] = r0[i] as i32 + canonical(d, r, rk[i] as usize);
                }
                table.find_or_insert(&key);
            }
        }
        let n_vertices = table.len();
        if n_vertices >= u32::MAX as usize - 1 {
            return Err(Error::param("image", format!("too many lattice vertices ({n_vertices})")));
        }
        let weights = simplex.bary;
        drop(simplex.rem0);
        drop(simplex.rank);

        // 3. Blur neighbours, axis-major (parallel lookups in a read-only table).
        let mut neighbors = vec![[0u32; 2]; dp1 * n_vertices];
        neighbors.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
            let mut n1 = vec![0i32; d];
            let mut n2 = vec![0i32; d];
            for (k, nb) in out.iter_mut().enumerate() {
                let idx = c * CHUNK + k;
                let (j, v) = (idx / n_vertices, idx % n_vertices);
                let key = table.key(v);
                for i in 0..d {
                    n1[i] = key[i] - 1;
                    n2[i] = key[i] + 1;
                }
                if j < d {
                    n1[j] = key[j] + d as i32;
                    n2[j] = key[j] - d as i32;
                }
                let slot = |k: &[i32]| table.find(k).map_or(0, |v| v as u32 + 1);
                *nb = [slot(&n1), slot(&n2)];
            }
        });
        drop(table);

        // 4. Splat as a gather: per vertex, its (point, weight) entries in point order.
        let mut splat_start = vec![0u32; n_vertices + 1];
        for &s in &offsets {
            splat_start[s as usize - 1] += 1;
        }
        let mut acc = 0u32;
        for c in splat_start.iter_mut() {
            let n = *c;
            *c = acc;
            acc += n;
        }
        let mut cursor = splat_start.clone();
        let mut splat_entries = vec![(0u32, 0f32); n_points * dp1];
        for (e, (&s, &w)) in offsets.iter().zip(&weights).enumerate() {
            let pos = &mut cursor[s as usize - 1];
            splat_entries[*pos as usize] = ((e / dp1) as u32, w);
            *pos += 1;
        }
        drop(cursor);

        let alpha = 1.0f32 / (1.0f32 + 2f32.powi(-(d as i32)));
        Ok(Lattice { d, n_points, n_vertices, offsets, weights, splat_start, splat_entries, neighbors, alpha })
    }

    /// Number of points.
    pub(crate) fn n_points(&self) -> usize {
        self.n_points
    }

    /// Number of lattice vertices (including the zero-point relays).
    #[allow(dead_code)]
    pub(crate) fn n_vertices(&self) -> usize {
        self.n_vertices
    }

    /// Filters `input`, point-major `(n_points, vs)`, into `out` (same shape) with a
    /// per-point diagonal scaling on both sides: `out = s ∘ L(s ∘ input)` (densecrf's
    /// symmetric normalisation; all-ones `scale` is exact plain filtering). `L` is splat,
    /// blur along axes `0..=d`, slice. `vs ≤ 2` follows densecrf's scalar path (slice
    /// term `(w·v)·α`), `vs > 2` its SSE path (`(w·α)·v`).
    pub(crate) fn filter(&self, input: &[f32], scale: &[f32], vs: usize, out: &mut [f32], scratch: &mut FilterScratch) {
        assert_eq!(input.len(), self.n_points * vs, "lattice filter input");
        assert_eq!(out.len(), self.n_points * vs, "lattice filter output");
        assert_eq!(scale.len(), self.n_points, "lattice filter scale");
        match vs {
            1 => self.filter_impl::<1>(input, scale, 1, out, scratch),
            2 => self.filter_impl::<2>(input, scale, 2, out, scratch),
            3 => self.filter_impl::<3>(input, scale, 3, out, scratch),
            4 => self.filter_impl::<4>(input, scale, 4, out, scratch),
            _ => self.filter_impl::<0>(input, scale, vs, out, scratch),
        }
    }

    /// `VS` is the value size when known at compile time, 0 for "use `vs`".
    fn filter_impl<const VS: usize>(&self, input: &[f32], scale: &[f32], vs: usize, out: &mut [f32], scratch: &mut FilterScratch) {
        let vs = if VS == 0 { vs } else { VS };
        let n_slots = self.n_vertices + 1;
        let (mut a, mut b) = scratch.buffers(n_slots * vs);
        // Slot 0 stays zero: it is never written.
        a[..vs].fill(0.0);
        b[..vs].fill(0.0);

        // Splat: vals[v] = Σ_(p in order) w · (in[p] · s[p]), from 0.
        a[vs..].par_chunks_mut(vs * CHUNK).enumerate().for_each(|(c, vals)| {
            let v0 = c * CHUNK;
            for (k, val) in vals.chunks_exact_mut(vs).enumerate() {
                let v = v0 + k;
                let (s, e) = (self.splat_start[v] as usize, self.splat_start[v + 1] as usize);
                val.fill(0.0);
                for &(p, w) in &self.splat_entries[s..e] {
                    let p = p as usize;
                    let (x, sp) = (&input[p * vs..p * vs + vs], scale[p]);
                    for i in 0..vs {
                        val[i] += w * (x[i] * sp);
                    }
                }
            }
        });

        // Blur along each axis j = 0..=d, Jacobi style.
        let seq_path = vs <= 2;
        for j in 0..=self.d {
            let nb = &self.neighbors[j * self.n_vertices..(j + 1) * self.n_vertices];
            let old: &[f32] = a;
            b[vs..].par_chunks_mut(vs * CHUNK).zip(nb.par_chunks(CHUNK)).enumerate().for_each(|(c, (new, nb))| {
                let v0 = c * CHUNK;
                for (k, (nv, &[n1, n2])) in new.chunks_exact_mut(vs).zip(nb).enumerate() {
                    let o = (v0 + k + 1) * vs;
                    let (o1, o2) = (n1 as usize * vs, n2 as usize * vs);
                    for i in 0..vs {
                        let s = old[o1 + i] + old[o2 + i];
                        nv[i] = if seq_path {
                            // densecrf's scalar loop: `old + 0.5*(n1 + n2)` with a double 0.5.
                            (old[o + i] as f64 + 0.5 * s as f64) as f32
                        } else {
                            old[o + i] + 0.5f32 * s
                        };
                    }
                }
            });
            std::mem::swap(&mut a, &mut b);
        }

        // Slice.
        let dp1 = self.d + 1;
        let alpha = self.alpha;
        out.par_chunks_mut(vs * CHUNK).zip(scale.par_chunks(CHUNK)).enumerate().for_each(|(c, (out, scale))| {
            let p0 = c * CHUNK;
            let mut acc = [0f32; 8];
            let mut acc_dyn = Vec::new();
            let acc: &mut [f32] = if vs <= acc.len() {
                &mut acc[..vs]
            } else {
                acc_dyn.resize(vs, 0f32);
                &mut acc_dyn
            };
            for (k, (o, &sp)) in out.chunks_exact_mut(vs).zip(scale).enumerate() {
                let e0 = (p0 + k) * dp1;
                acc.fill(0.0);
                for r in 0..dp1 {
                    let w = self.weights[e0 + r];
                    let s = self.offsets[e0 + r] as usize * vs;
                    let val = &a[s..s + vs];
                    if seq_path {
                        for i in 0..vs {
                            acc[i] += w * val[i] * alpha;
                        }
                    } else {
                        let wa = w * alpha;
                        for i in 0..vs {
                            acc[i] += wa * val[i];
                        }
                    }
                }
                for (o, a) in o.iter_mut().zip(acc.iter()) {
                    *o = a * sp;
                }
            }
        });
    }
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
        let (mut el, mut r0, mut rk, mut b) = (vec![0f32; d + 1], vec![0f32; d + 1], vec![0i32; d + 1], vec![0f32; d + 2]);
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
        let feats: Vec<f32> = (0..h * w).flat_map(|p| [(p % w) as f32 / 3.0, (p / w) as f32 / 3.0]).collect();
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
}
