//! A permutohedral lattice on the device: its buffers (made once per [`Plan`] and value
//! size, reused by later builds of the same size), its construction from features on
//! the device, and filtering (splat, blur along each axis, slice). The kernels and why
//! the result does not depend on the thread schedule: kernels/crf_lattice.cu.

use super::kernels::{self, LatticeView, Vertices, RADIX_BUCKETS, RADIX_TILE};
use super::plan::Plan;
use crate::backend::cuda::api::{Dev, DevBuf, View, ViewMut};
use crate::error::Result;

/// Launches of one [`DeviceLattice::build`] (the features kernel not included).
pub(crate) fn build_launches(plan: &Plan) -> u64 {
    // locate, reset, insert, (verify, hashed keys only), owner flags, scan, number,
    // entry vertex, starts, neighbours; histogram + scan + scatter per radix pass.
    9 + u64::from(plan.bits == 0) + 3 * u64::from(plan.radix_passes())
}

/// Launches of one [`DeviceLattice::filter`]: splat, d+1 blurs, slice.
pub(crate) fn filter_launches(plan: &Plan) -> u64 {
    plan.d as u64 + 3
}

#[derive(Debug)]
pub(crate) struct DeviceLattice {
    pub plan: Plan,
    /// Largest value size a filter may use.
    pub max_vs: usize,
    /// Features `(n, d)`, written by the caller before [`DeviceLattice::build`].
    pub feats: DevBuf<f32>,
    codes: DevBuf<u64>,
    bary: DevBuf<f32>,
    keys: DevBuf<u64>,
    first: DevBuf<u32>,
    slot_of: DevBuf<u32>,
    flags: DevBuf<u32>,
    number: DevBuf<u32>,
    n_vertices: DevBuf<u32>,
    vertex_of_slot: DevBuf<u32>,
    vertex_code: DevBuf<u64>,
    vertex_entry: DevBuf<u32>,
    vertex: DevBuf<u32>,
    entry: DevBuf<u32>,
    sort: [(DevBuf<u32>, DevBuf<u32>); 2],
    hist: DevBuf<u32>,
    hist_offset: DevBuf<u32>,
    hist_total: DevBuf<u32>,
    start: DevBuf<u32>,
    nb: DevBuf<u32>,
    values: [DevBuf<f32>; 2],
    /// Set on the device when two hashed keys collide (read with the labels).
    pub fault: DevBuf<u32>,
}

impl DeviceLattice {
    /// Allocates every buffer for `plan` and values of up to `max_vs` components.
    pub(crate) fn new(dev: &Dev, plan: Plan, max_vs: usize) -> Result<Self> {
        let (n, d, e, s) = (plan.n, plan.d, plan.entries, plan.slots());
        let tiles = e.div_ceil(RADIX_TILE).max(1);
        let u32s = |len| DevBuf::<u32>::zeros(dev, len);
        Ok(DeviceLattice {
            plan,
            max_vs,
            feats: DevBuf::zeros(dev, n * d)?,
            codes: DevBuf::zeros(dev, e)?,
            bary: DevBuf::zeros(dev, n * (d + 1))?,
            keys: DevBuf::zeros(dev, s)?,
            first: u32s(s)?,
            slot_of: u32s(e)?,
            flags: u32s(e)?,
            number: u32s(e)?,
            n_vertices: u32s(1)?,
            vertex_of_slot: u32s(s)?,
            vertex_code: DevBuf::zeros(dev, e)?,
            vertex_entry: u32s(e)?,
            vertex: u32s(e)?,
            entry: u32s(e)?,
            sort: [(u32s(e)?, u32s(e)?), (u32s(e)?, u32s(e)?)],
            hist: u32s(tiles * RADIX_BUCKETS)?,
            hist_offset: u32s(tiles * RADIX_BUCKETS)?,
            hist_total: u32s(1)?,
            start: u32s(e + 1)?,
            nb: u32s((d + 1) * e * 2)?,
            values: [
                DevBuf::zeros(dev, (e + 1) * max_vs)?,
                DevBuf::zeros(dev, (e + 1) * max_vs)?,
            ],
            fault: u32s(1)?,
        })
    }

    /// Builds the lattice of the features in [`DeviceLattice::feats`].
    pub(crate) fn build(&mut self, dev: &Dev) -> Result<()> {
        let g = &**dev;
        let p = self.plan;
        let (e, s) = (p.entries, p.slots());
        kernels::locate(
            g,
            &self.feats.as_view(),
            p.n,
            p.d,
            p.bits,
            p.pad,
            &mut self.codes.as_view_mut(),
            &mut self.bary.as_view_mut(),
        )?;
        kernels::reset(
            g,
            &mut self.keys.as_view_mut(),
            &mut self.first.as_view_mut(),
            s,
            &mut self.fault.as_view_mut(),
        )?;
        kernels::insert(
            g,
            &self.codes.as_view(),
            e,
            p.shift_bits,
            &mut self.keys.as_view_mut(),
            &mut self.first.as_view_mut(),
            &mut self.slot_of.as_view_mut(),
        )?;
        if p.bits == 0 {
            kernels::verify(
                g,
                &self.feats.as_view(),
                p.n,
                p.d,
                &self.slot_of.as_view(),
                &self.first.as_view(),
                s,
                e,
                &mut self.fault.as_view_mut(),
            )?;
        }
        kernels::owner_flags(
            g,
            &self.slot_of.as_view(),
            &self.first.as_view(),
            s,
            e,
            &mut self.flags.as_view_mut(),
        )?;
        // Vertex v = the v-th key in order of first use: the CPU's numbering.
        kernels::scan(
            g,
            &self.flags.as_view(),
            e,
            &mut self.number.as_view_mut(),
            &mut self.n_vertices.as_view_mut(),
        )?;
        kernels::number(
            g,
            &self.codes.as_view(),
            &self.slot_of.as_view(),
            &self.flags.as_view(),
            &self.number.as_view(),
            e,
            s,
            &mut self.vertex_of_slot.as_view_mut(),
            &mut self.vertex_code.as_view_mut(),
            &mut self.vertex_entry.as_view_mut(),
        )?;
        kernels::entry_vertex(
            g,
            &self.slot_of.as_view(),
            &self.vertex_of_slot.as_view(),
            e,
            s,
            &mut self.vertex.as_view_mut(),
            &mut self.entry.as_view_mut(),
        )?;
        let sorted = self.sort_entries(dev)?;
        let (sorted_vertex, _) = &self.sort[sorted];
        kernels::starts(
            g,
            &sorted_vertex.as_view(),
            e,
            &mut self.start.as_view_mut(),
        )?;
        let vertices = Vertices {
            code: self.vertex_code.as_view(),
            entry: self.vertex_entry.as_view(),
            count: self.n_vertices.as_view(),
            feats: self.feats.as_view(),
            n: p.n,
        };
        kernels::neighbors(
            g,
            &vertices,
            &self.keys.as_view(),
            &self.vertex_of_slot.as_view(),
            p.d,
            p.bits,
            p.shift_bits,
            e,
            &mut self.nb.as_view_mut(),
        )
    }

    /// Stable radix sort of (vertex, entry) by vertex, 8 bits per pass: pass 0 reads
    /// (vertex, entry) and writes `sort[0]`, pass k reads `sort[(k−1) % 2]` and writes
    /// `sort[k % 2]`. Returns the pair that holds the result.
    fn sort_entries(&mut self, dev: &Dev) -> Result<usize> {
        let g = &**dev;
        let e = self.plan.entries;
        let tiles = e.div_ceil(RADIX_TILE).max(1);
        let passes = self.plan.radix_passes() as usize;
        for pass in 0..passes {
            let [s0, s1] = &mut self.sort;
            let (src, dst) = match pass {
                0 => ((&self.vertex, &self.entry), s0),
                _ if pass % 2 == 1 => ((&s0.0, &s0.1), s1),
                _ => ((&s1.0, &s1.1), s0),
            };
            let shift = 8 * pass as u32;
            kernels::radix_histogram(g, &src.0.as_view(), e, shift, &mut self.hist.as_view_mut())?;
            kernels::scan(
                g,
                &self.hist.as_view(),
                tiles * RADIX_BUCKETS,
                &mut self.hist_offset.as_view_mut(),
                &mut self.hist_total.as_view_mut(),
            )?;
            kernels::radix_scatter(
                g,
                &src.0.as_view(),
                &src.1.as_view(),
                e,
                shift,
                &self.hist_offset.as_view(),
                &mut dst.0.as_view_mut(),
                &mut dst.1.as_view_mut(),
            )?;
        }
        Ok(self.sorted_pair())
    }

    /// Which `sort` pair the last build left the sorted entries in.
    fn sorted_pair(&self) -> usize {
        (self.plan.radix_passes() as usize - 1) % 2
    }

    /// `out = s ∘ L(s ∘ input)` for `input`, `out` point-major `(n, vs)`, `scale` `(n)`.
    pub(crate) fn filter(
        &mut self,
        dev: &Dev,
        input: &View<f32>,
        scale: &View<f32>,
        vs: usize,
        out: &mut ViewMut<f32>,
    ) -> Result<()> {
        let g = &**dev;
        assert!(
            vs > 0 && vs <= self.max_vs,
            "filter value size {vs} of at most {}",
            self.max_vs
        );
        let seq = vs <= 2;
        let sorted = self.sorted_pair();
        let len = (self.plan.entries + 1) * vs;
        let [a, b] = &mut self.values;
        // Borrow the lattice arrays apart from the value buffers.
        let l = LatticeView {
            start: self.start.as_view(),
            sorted_entry: self.sort[sorted].1.as_view(),
            vertex: self.vertex.as_view(),
            bary: self.bary.as_view(),
            n_vertices: self.n_vertices.as_view(),
            n: self.plan.n,
            d: self.plan.d,
            entries: self.plan.entries,
        };
        kernels::splat(g, &l, input, scale, vs, &mut a.slice_mut(..len))?;
        let stride = self.plan.entries;
        let (mut cur, mut next) = (a, b);
        for j in 0..=self.plan.d {
            let nb = self.nb.slice(j * stride * 2..(j + 1) * stride * 2);
            kernels::blur(
                g,
                &l,
                &cur.slice(..len),
                &nb,
                vs,
                seq,
                &mut next.slice_mut(..len),
            )?;
            std::mem::swap(&mut cur, &mut next);
        }
        kernels::slice(
            g,
            &l,
            &cur.slice(..len),
            scale,
            vs,
            self.plan.alpha(),
            seq,
            out,
        )
    }

    /// The vertex count and the fault flag (downloads: for tests).
    pub(crate) fn n_vertices_and_fault(&self) -> Result<(u32, u32)> {
        Ok((self.n_vertices.download()?[0], self.fault.download()?[0]))
    }
}
