//! One typed wrapper per DenseCRF kernel (`kernels/crf_*.cu`); nothing else launches
//! them. Each wrapper checks that its buffers hold what the launch touches for the
//! sizes it passes (vertex-sized buffers are sized for the entry count, an upper bound
//! of the vertex count the kernels read on the device), so an unsafe launch never
//! reads or writes out of bounds.

use crate::backend::cuda::api::{DeviceApi, KArg, View, ViewMut};
use crate::backend::cuda::modules::KernelFile;
use crate::error::{Error, Result};

/// Threads per block of the grid-stride kernels.
const BLOCK: u32 = 256;
/// Threads of the one-block scan (`ES_SCAN_THREADS`).
const SCAN_THREADS: u32 = 1024;
/// Keys per radix tile (`ES_RADIX_TILE`) and buckets per pass.
pub(crate) const RADIX_TILE: usize = 256;
pub(crate) const RADIX_BUCKETS: usize = 256;

/// A grid-stride launch over `n` items: at most one block per 256, at most 8192 blocks.
fn elems(n: usize) -> (u32, u32) {
    (n.div_ceil(BLOCK as usize).clamp(1, 8192) as u32, BLOCK)
}

/// A size as the kernels' `int`.
pub(crate) fn int(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::param(what, format!("{v} exceeds the kernels' 32-bit sizes")))
}

fn need(what: &str, len: usize, need: usize) -> Result<()> {
    if len < need {
        return Err(Error::Internal(format!(
            "CUDA launch: buffer `{what}` holds {len} values, the launch touches {need}"
        )));
    }
    Ok(())
}

fn launch(
    dev: &dyn DeviceApi,
    file: KernelFile,
    name: &'static str,
    (grid, block): (u32, u32),
    args: &[KArg],
) -> Result<()> {
    // SAFETY: every wrapper below passes the arguments of its kernel's signature in
    // kernels/crf_*.cu, in order, and has checked with `need` that each buffer covers
    // what the kernel touches for the sizes passed.
    unsafe { dev.launch(file, name, grid, block, args) }
}

fn p<T>(v: &View<T>) -> KArg {
    KArg::Ptr(v.ptr())
}
fn pm<T>(v: &ViewMut<T>) -> KArg {
    KArg::Ptr(v.ptr())
}

// --- crf_lattice.cu ---------------------------------------------------------------

/// Features `(n, d)` of an `(h·w = n)` image of `d − 2` channels (`d = 2`: positional).
#[allow(clippy::too_many_arguments)]
pub(crate) fn features(
    dev: &dyn DeviceApi,
    image: &View<u8>,
    n: usize,
    w: usize,
    d: usize,
    sxy: f32,
    srgb: f32,
    feats: &mut ViewMut<f32>,
) -> Result<()> {
    need("features.image", image.len(), n * (d - 2))?;
    need("features.feats", feats.len(), n * d)?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "crf_features_f32",
        elems(n),
        &[
            p(image),
            KArg::I32(int("pixels", n)?),
            KArg::I32(int("width", w)?),
            KArg::I32(int("d", d)?),
            KArg::F32(sxy),
            KArg::F32(srgb),
            pm(feats),
        ],
    )
}

/// Keys `(n + pad, d+1)` and weights `(n, d+1)` of the located points.
#[allow(clippy::too_many_arguments)]
pub(crate) fn locate(
    dev: &dyn DeviceApi,
    feats: &View<f32>,
    n: usize,
    d: usize,
    bits: u32,
    pad: bool,
    codes: &mut ViewMut<u64>,
    bary: &mut ViewMut<f32>,
) -> Result<()> {
    let points = n + usize::from(pad);
    need("locate.feats", feats.len(), n * d)?;
    need("locate.codes", codes.len(), points * (d + 1))?;
    need("locate.bary", bary.len(), n * (d + 1))?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_locate_f32",
        elems(points),
        &[
            p(feats),
            KArg::I32(int("points", n)?),
            KArg::I32(int("d", d)?),
            KArg::I32(bits as i32),
            KArg::I32(i32::from(pad)),
            pm(codes),
            pm(bary),
        ],
    )
}

pub(crate) fn reset(
    dev: &dyn DeviceApi,
    keys: &mut ViewMut<u64>,
    first: &mut ViewMut<u32>,
    slots: usize,
    fault: &mut ViewMut<u32>,
) -> Result<()> {
    need("reset.keys", keys.len(), slots)?;
    need("reset.first", first.len(), slots)?;
    need("reset.fault", fault.len(), 1)?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_reset",
        elems(slots),
        &[
            pm(keys),
            pm(first),
            KArg::I32(int("slots", slots)?),
            pm(fault),
        ],
    )
}

/// Hashed keys: sets `fault` when two keys share a code.
#[allow(clippy::too_many_arguments)]
pub(crate) fn verify(
    dev: &dyn DeviceApi,
    feats: &View<f32>,
    n: usize,
    d: usize,
    slot_of: &View<u32>,
    first: &View<u32>,
    slots: usize,
    entries: usize,
    fault: &mut ViewMut<u32>,
) -> Result<()> {
    need("verify.feats", feats.len(), n * d)?;
    need("verify.slot_of", slot_of.len(), entries)?;
    need("verify.first", first.len(), slots)?;
    need("verify.fault", fault.len(), 1)?;
    if entries > (n + 1) * (d + 1) {
        return Err(Error::Internal("verify: more entries than points".into()));
    }
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_verify",
        elems(entries),
        &[
            p(feats),
            KArg::I32(int("points", n)?),
            KArg::I32(int("d", d)?),
            p(slot_of),
            p(first),
            KArg::I32(int("entries", entries)?),
            pm(fault),
        ],
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn insert(
    dev: &dyn DeviceApi,
    codes: &View<u64>,
    entries: usize,
    shift_bits: u32,
    keys: &mut ViewMut<u64>,
    first: &mut ViewMut<u32>,
    slot_of: &mut ViewMut<u32>,
) -> Result<()> {
    let slots = 1usize << shift_bits;
    need("insert.codes", codes.len(), entries)?;
    need("insert.keys", keys.len(), slots)?;
    need("insert.first", first.len(), slots)?;
    need("insert.slot_of", slot_of.len(), entries)?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_insert",
        elems(entries),
        &[
            p(codes),
            KArg::I32(int("entries", entries)?),
            KArg::I32(shift_bits as i32),
            pm(keys),
            pm(first),
            pm(slot_of),
        ],
    )
}

pub(crate) fn owner_flags(
    dev: &dyn DeviceApi,
    slot_of: &View<u32>,
    first: &View<u32>,
    slots: usize,
    entries: usize,
    flags: &mut ViewMut<u32>,
) -> Result<()> {
    need("owner_flags.slot_of", slot_of.len(), entries)?;
    need("owner_flags.first", first.len(), slots)?;
    need("owner_flags.flags", flags.len(), entries)?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_owner_flags",
        elems(entries),
        &[
            p(slot_of),
            p(first),
            KArg::I32(int("entries", entries)?),
            pm(flags),
        ],
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn number(
    dev: &dyn DeviceApi,
    codes: &View<u64>,
    slot_of: &View<u32>,
    flags: &View<u32>,
    number: &View<u32>,
    entries: usize,
    slots: usize,
    vertex_of_slot: &mut ViewMut<u32>,
    vertex_code: &mut ViewMut<u64>,
    vertex_entry: &mut ViewMut<u32>,
) -> Result<()> {
    for (what, len) in [
        ("number.codes", codes.len()),
        ("number.slot_of", slot_of.len()),
        ("number.flags", flags.len()),
        ("number.number", number.len()),
        ("number.vertex_code", vertex_code.len()),
        ("number.vertex_entry", vertex_entry.len()),
    ] {
        need(what, len, entries)?;
    }
    need("number.vertex_of_slot", vertex_of_slot.len(), slots)?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_number",
        elems(entries),
        &[
            p(codes),
            p(slot_of),
            p(flags),
            p(number),
            KArg::I32(int("entries", entries)?),
            pm(vertex_of_slot),
            pm(vertex_code),
            pm(vertex_entry),
        ],
    )
}

pub(crate) fn entry_vertex(
    dev: &dyn DeviceApi,
    slot_of: &View<u32>,
    vertex_of_slot: &View<u32>,
    entries: usize,
    slots: usize,
    vertex: &mut ViewMut<u32>,
    entry: &mut ViewMut<u32>,
) -> Result<()> {
    need("entry_vertex.slot_of", slot_of.len(), entries)?;
    need("entry_vertex.vertex_of_slot", vertex_of_slot.len(), slots)?;
    need("entry_vertex.vertex", vertex.len(), entries)?;
    need("entry_vertex.entry", entry.len(), entries)?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_entry_vertex",
        elems(entries),
        &[
            p(slot_of),
            p(vertex_of_slot),
            KArg::I32(int("entries", entries)?),
            pm(vertex),
            pm(entry),
        ],
    )
}

pub(crate) fn starts(
    dev: &dyn DeviceApi,
    sorted_vertex: &View<u32>,
    entries: usize,
    start: &mut ViewMut<u32>,
) -> Result<()> {
    need("starts.sorted_vertex", sorted_vertex.len(), entries)?;
    // Vertex numbers are below the entry count, so start has at most entries + 1 slots.
    need("starts.start", start.len(), entries + 1)?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_starts",
        elems(entries),
        &[
            p(sorted_vertex),
            KArg::I32(int("entries", entries)?),
            pm(start),
        ],
    )
}

/// The arrays a neighbour lookup reads besides the table.
pub(crate) struct Vertices<'a> {
    pub code: View<'a, u64>,
    pub entry: View<'a, u32>,
    pub count: View<'a, u32>,
    pub feats: View<'a, f32>,
    pub n: usize,
}

/// Neighbour slots `(d+1, stride, 2)`; `stride` ≥ the vertex count (the entry count).
#[allow(clippy::too_many_arguments)]
pub(crate) fn neighbors(
    dev: &dyn DeviceApi,
    vertices: &Vertices,
    keys: &View<u64>,
    vertex_of_slot: &View<u32>,
    d: usize,
    bits: u32,
    shift_bits: u32,
    stride: usize,
    nb: &mut ViewMut<u32>,
) -> Result<()> {
    let slots = 1usize << shift_bits;
    let Vertices {
        code: vertex_code,
        entry: vertex_entry,
        count: n_vertices,
        feats,
        n,
    } = vertices;
    need("neighbors.vertex_entry", vertex_entry.len(), stride)?;
    need("neighbors.feats", feats.len(), n * d)?;
    if stride > (n + 1) * (d + 1) {
        return Err(Error::Internal(
            "neighbors: more entries than points".into(),
        ));
    }
    need("neighbors.vertex_code", vertex_code.len(), stride)?;
    need("neighbors.n_vertices", n_vertices.len(), 1)?;
    need("neighbors.keys", keys.len(), slots)?;
    need("neighbors.vertex_of_slot", vertex_of_slot.len(), slots)?;
    need("neighbors.nb", nb.len(), (d + 1) * stride * 2)?;
    launch(
        dev,
        KernelFile::CrfLattice,
        "lattice_neighbors",
        elems(stride * (d + 1)),
        &[
            p(vertex_code),
            p(n_vertices),
            p(keys),
            p(vertex_of_slot),
            p(feats),
            KArg::I32(int("points", *n)?),
            p(vertex_entry),
            KArg::I32(int("d", d)?),
            KArg::I32(bits as i32),
            KArg::I32(shift_bits as i32),
            KArg::I32(int("stride", stride)?),
            pm(nb),
        ],
    )
}

// --- crf_sort.cu ------------------------------------------------------------------

/// Exclusive prefix sum of `n` values; the sum of all lands in `total[0]`.
pub(crate) fn scan(
    dev: &dyn DeviceApi,
    input: &View<u32>,
    n: usize,
    out: &mut ViewMut<u32>,
    total: &mut ViewMut<u32>,
) -> Result<()> {
    need("scan.in", input.len(), n)?;
    need("scan.out", out.len(), n)?;
    need("scan.total", total.len(), 1)?;
    launch(
        dev,
        KernelFile::CrfSort,
        "scan_exclusive_u32",
        (1, SCAN_THREADS),
        &[p(input), KArg::I32(int("n", n)?), pm(out), pm(total)],
    )
}

/// Per-tile digit counts, digit-major `(RADIX_BUCKETS, tiles)`.
pub(crate) fn radix_histogram(
    dev: &dyn DeviceApi,
    key: &View<u32>,
    n: usize,
    shift: u32,
    hist: &mut ViewMut<u32>,
) -> Result<()> {
    let tiles = n.div_ceil(RADIX_TILE).max(1);
    need("radix_histogram.key", key.len(), n)?;
    need("radix_histogram.hist", hist.len(), tiles * RADIX_BUCKETS)?;
    launch(
        dev,
        KernelFile::CrfSort,
        "radix_histogram_u32",
        (int("tiles", tiles)? as u32, RADIX_TILE as u32),
        &[
            p(key),
            KArg::I32(int("n", n)?),
            KArg::I32(shift as i32),
            pm(hist),
        ],
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn radix_scatter(
    dev: &dyn DeviceApi,
    key_in: &View<u32>,
    val_in: &View<u32>,
    n: usize,
    shift: u32,
    offset: &View<u32>,
    key_out: &mut ViewMut<u32>,
    val_out: &mut ViewMut<u32>,
) -> Result<()> {
    let tiles = n.div_ceil(RADIX_TILE).max(1);
    for (what, len) in [
        ("radix_scatter.key_in", key_in.len()),
        ("radix_scatter.val_in", val_in.len()),
        ("radix_scatter.key_out", key_out.len()),
        ("radix_scatter.val_out", val_out.len()),
    ] {
        need(what, len, n)?;
    }
    need("radix_scatter.offset", offset.len(), tiles * RADIX_BUCKETS)?;
    launch(
        dev,
        KernelFile::CrfSort,
        "radix_scatter_u32",
        (int("tiles", tiles)? as u32, RADIX_TILE as u32),
        &[
            p(key_in),
            p(val_in),
            KArg::I32(int("n", n)?),
            KArg::I32(shift as i32),
            p(offset),
            pm(key_out),
            pm(val_out),
        ],
    )
}

// --- crf_filter.cu ----------------------------------------------------------------

/// The lattice's device arrays a filter reads, with the sizes they were made for.
pub(crate) struct LatticeView<'a> {
    pub start: View<'a, u32>,
    pub sorted_entry: View<'a, u32>,
    pub vertex: View<'a, u32>,
    pub bary: View<'a, f32>,
    pub n_vertices: View<'a, u32>,
    pub n: usize,
    pub d: usize,
    /// Entries (with the padding): the bound on the vertex count.
    pub entries: usize,
}

impl LatticeView<'_> {
    fn check(&self) -> Result<()> {
        need("lattice.start", self.start.len(), self.entries + 1)?;
        need(
            "lattice.sorted_entry",
            self.sorted_entry.len(),
            self.entries,
        )?;
        need("lattice.vertex", self.vertex.len(), self.n * (self.d + 1))?;
        need("lattice.bary", self.bary.len(), self.n * (self.d + 1))?;
        need("lattice.n_vertices", self.n_vertices.len(), 1)
    }
}

pub(crate) fn splat(
    dev: &dyn DeviceApi,
    l: &LatticeView,
    input: &View<f32>,
    scale: &View<f32>,
    vs: usize,
    val: &mut ViewMut<f32>,
) -> Result<()> {
    l.check()?;
    need("splat.in", input.len(), l.n * vs)?;
    need("splat.scale", scale.len(), l.n)?;
    need("splat.val", val.len(), (l.entries + 1) * vs)?;
    launch(
        dev,
        KernelFile::CrfFilter,
        "lattice_splat_f32",
        elems((l.entries + 1) * vs),
        &[
            p(&l.start),
            p(&l.sorted_entry),
            p(&l.bary),
            p(input),
            p(scale),
            KArg::I32(int("vs", vs)?),
            KArg::I32(int("d", l.d)?),
            KArg::I32(int("entries", l.n * (l.d + 1))?),
            p(&l.n_vertices),
            pm(val),
        ],
    )
}

/// One blur pass; `nb` is this axis's `(stride, 2)` neighbour slots, `stride = entries`.
pub(crate) fn blur(
    dev: &dyn DeviceApi,
    l: &LatticeView,
    old: &View<f32>,
    nb: &View<u32>,
    vs: usize,
    seq: bool,
    out: &mut ViewMut<f32>,
) -> Result<()> {
    l.check()?;
    need("blur.old", old.len(), (l.entries + 1) * vs)?;
    need("blur.out", out.len(), (l.entries + 1) * vs)?;
    need("blur.nb", nb.len(), l.entries * 2)?;
    launch(
        dev,
        KernelFile::CrfFilter,
        "lattice_blur_f32",
        elems((l.entries + 1) * vs),
        &[
            p(old),
            p(nb),
            KArg::I32(int("vs", vs)?),
            p(&l.n_vertices),
            KArg::I32(i32::from(seq)),
            pm(out),
        ],
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn slice(
    dev: &dyn DeviceApi,
    l: &LatticeView,
    val: &View<f32>,
    scale: &View<f32>,
    vs: usize,
    alpha: f32,
    seq: bool,
    out: &mut ViewMut<f32>,
) -> Result<()> {
    l.check()?;
    need("slice.val", val.len(), (l.entries + 1) * vs)?;
    need("slice.scale", scale.len(), l.n)?;
    need("slice.out", out.len(), l.n * vs)?;
    launch(
        dev,
        KernelFile::CrfFilter,
        "lattice_slice_f32",
        elems(l.n * vs),
        &[
            p(val),
            p(&l.vertex),
            p(&l.bary),
            p(scale),
            KArg::I32(int("points", l.n)?),
            KArg::I32(int("d", l.d)?),
            KArg::I32(int("vs", vs)?),
            KArg::F32(alpha),
            KArg::I32(i32::from(seq)),
            pm(out),
        ],
    )
}

pub(crate) fn fill(dev: &dyn DeviceApi, x: &mut ViewMut<f32>, n: usize, v: f32) -> Result<()> {
    need("fill.x", x.len(), n)?;
    launch(
        dev,
        KernelFile::CrfFilter,
        "crf_fill_f32",
        elems(n),
        &[pm(x), KArg::I32(int("n", n)?), KArg::F32(v)],
    )
}

pub(crate) fn norm(
    dev: &dyn DeviceApi,
    filtered_ones: &View<f32>,
    n: usize,
    out: &mut ViewMut<f32>,
) -> Result<()> {
    need("norm.filtered", filtered_ones.len(), n)?;
    need("norm.out", out.len(), n)?;
    launch(
        dev,
        KernelFile::CrfFilter,
        "crf_norm_f32",
        elems(n),
        &[p(filtered_ones), KArg::I32(int("n", n)?), pm(out)],
    )
}

pub(crate) fn softmax_init(
    dev: &dyn DeviceApi,
    unary: &View<f32>,
    n: usize,
    m: usize,
    q: &mut ViewMut<f32>,
) -> Result<()> {
    need("softmax_init.unary", unary.len(), n * m)?;
    need("softmax_init.q", q.len(), n * m)?;
    launch(
        dev,
        KernelFile::CrfFilter,
        "crf_softmax_init_f32",
        elems(n),
        &[
            p(unary),
            KArg::I32(int("n", n)?),
            KArg::I32(int("labels", m)?),
            pm(q),
        ],
    )
}

/// One mean-field update with up to two filtered messages `(K_k(Q), w_k)`.
pub(crate) fn update(
    dev: &dyn DeviceApi,
    unary: &View<f32>,
    messages: &[(View<f32>, f32)],
    n: usize,
    m: usize,
    q: &mut ViewMut<f32>,
) -> Result<()> {
    if messages.len() > 2 {
        return Err(Error::Internal(
            "crf_update takes at most two kernels".into(),
        ));
    }
    need("update.unary", unary.len(), n * m)?;
    need("update.q", q.len(), n * m)?;
    for (f, _) in messages {
        need("update.message", f.len(), n * m)?;
    }
    // An unused message slot repeats the unary pointer; the kernel does not read it.
    let msg = |k: usize| {
        messages
            .get(k)
            .map_or((KArg::Ptr(unary.ptr()), KArg::F32(0.0)), |(f, w)| {
                (KArg::Ptr(f.ptr()), KArg::F32(*w))
            })
    };
    let ((f0, w0), (f1, w1)) = (msg(0), msg(1));
    launch(
        dev,
        KernelFile::CrfFilter,
        "crf_update_f32",
        elems(n),
        &[
            p(unary),
            f0,
            w0,
            f1,
            w1,
            KArg::I32(messages.len() as i32),
            KArg::I32(int("n", n)?),
            KArg::I32(int("labels", m)?),
            pm(q),
        ],
    )
}

/// What [`labels`] writes per pixel, and the kernel that writes it.
pub(crate) trait LabelOutput {
    const KERNEL: &'static str;
}

impl LabelOutput for i32 {
    const KERNEL: &'static str = "crf_labels";
}

impl LabelOutput for u8 {
    const KERNEL: &'static str = "crf_foreground_u8";
}

/// The MAP labels of the marginals `q` `(n, m)` into `out[..n]` and, in `out[n]`, the
/// two lattices' fault flags or'ed: as `i32` labels (`crf_labels`) or as the foreground
/// byte mask, label 1 (`crf_foreground_u8`, a quarter of the download).
pub(crate) fn labels<T: LabelOutput>(
    dev: &dyn DeviceApi,
    q: &View<f32>,
    n: usize,
    m: usize,
    faults: [&View<u32>; 2],
    out: &mut ViewMut<T>,
) -> Result<()> {
    need("labels.q", q.len(), n * m)?;
    need("labels.out", out.len(), n + 1)?;
    need("labels.fault0", faults[0].len(), 1)?;
    need("labels.fault1", faults[1].len(), 1)?;
    launch(
        dev,
        KernelFile::CrfFilter,
        T::KERNEL,
        elems(n),
        &[
            p(q),
            KArg::I32(int("n", n)?),
            KArg::I32(int("labels", m)?),
            p(faults[0]),
            p(faults[1]),
            pm(out),
        ],
    )
}
