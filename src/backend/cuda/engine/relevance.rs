//! [`RelevanceDevice`] for the CUDA engine: one image from upload to relevance map
//! with a single wait for the device. The clean image's forward leaves its logits on
//! the device, a kernel picks the explained class from them, IG + NoiseTunnel reads
//! that class from device memory, and the attribution is reduced, blurred and scaled
//! where it lies; only the map and the logits come back, in one synchronisation.

use super::{CudaEngine, Forward};
use crate::backend::cuda::api::download_together;
use crate::backend::cuda::launch as k;
use crate::backend::cuda::workspace::Sizer;
use crate::backend::relevance::{
    argmax, DeviceRelevance, RelevanceDevice, RelevanceJob, TapRequest,
};
use crate::error::{Error, Result};

impl RelevanceDevice for CudaEngine<'_> {
    fn explain_relevance(&self, job: &RelevanceJob<'_>) -> Result<DeviceRelevance> {
        let geo = self.check_explanation(job.x, job.baseline, job.ig)?;
        self.vit.require_head()?;
        if let Some(t) = job.target {
            self.check_targets(1, &[t])?;
        }
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let gpu = &*self.gpu;
        let (batch, samples) = self.ig_plan(geo, job.ig, job.nt)?;
        // Every block is kept only when the taps of one are asked for.
        let save = job.taps.is_some();
        let plane = geo.height * geo.width;
        let mut extra = Sizer::default();
        extra.f32s(plane).f32s(plane).f32s(2);
        let bytes = self.ig_bytes(geo, batch, samples, job.ig.n_steps)
            + self.pass_bytes(geo, save, false)
            + extra.0;
        let mut arena = self.workspace(bytes)?;
        let mut ws = arena.carver();
        let (x_dev, base_dev) = self.upload_pair(&mut ws, job.x, job.baseline)?;
        let fwd = self.forward(&mut ws, &x_dev.as_view(), geo, save)?;
        let (logits, classes) = (&fwd.logits, fwd.classes);
        let mut targets = ws.take::<i32>(batch)?;
        k::select_target_i32(
            gpu,
            &logits.as_view(),
            classes,
            job.target,
            &mut targets.as_view_mut(),
            batch,
        )?;
        let ig = self.nt_ig(
            &mut ws,
            &x_dev,
            job.x,
            base_dev,
            geo,
            targets,
            job.ig,
            job.nt,
            job.progress,
        )?;
        let (h, w) = (geo.height, geo.width);
        let mut map = ws.take(plane)?;
        k::reduce_channels_f32(
            gpu,
            &ig.aggregated.as_view(),
            &mut map.as_view_mut(),
            plane,
            job.reduction,
        )?;
        if !job.blur_taps.is_empty() {
            // Along the rows, then along the columns, as attr::smooth.
            let taps = self.upload(job.blur_taps)?;
            let mut half = ws.take(plane)?;
            k::blur_axis_f32(
                gpu,
                &map.as_view(),
                &mut half.as_view_mut(),
                &taps.as_view(),
                (h, w),
                0,
            )?;
            k::blur_axis_f32(
                gpu,
                &half.as_view(),
                &mut map.as_view_mut(),
                &taps.as_view(),
                (h, w),
                1,
            )?;
        }
        if job.min_max {
            let mut lohi = ws.take(2)?;
            k::min_max_f32(gpu, &mut map.as_view_mut(), &mut lohi.as_view_mut(), plane)?;
        }
        let probs = match job.taps {
            Some(TapRequest {
                layer,
                attention: true,
            }) => Some(self.tap_probs(&tapped(&fwd, layer)?.qkv, 1, fwd.tokens)?),
            _ => None,
        };
        let mut wanted = vec![&map, logits];
        if let Some(t) = job.taps {
            wanted.push(&tapped(&fwd, t.layer)?.qkv);
        }
        wanted.extend(probs.as_ref());
        // One wait for everything the host reads.
        let mut got = download_together(&wanted)?.into_iter();
        let mut next = || {
            got.next()
                .ok_or_else(|| Error::Internal("fewer downloads than asked".into()))
        };
        let (map_host, logits_host) = (next()?, next()?);
        let taps = match job.taps {
            Some(t) => {
                let qkv = next()?;
                let probs = if t.attention { Some(next()?) } else { None };
                Some(self.block_taps_of(geo, qkv, probs))
            }
            None => None,
        };
        let logits_host = logits_host[..classes].to_vec();
        let deltas = if job.ig.return_delta {
            let target = job.target.unwrap_or_else(|| argmax(&logits_host));
            self.convergence_deltas(
                &mut ws,
                &ig.per_sample,
                &ig.call.noisy,
                &ig.call.base,
                geo,
                samples,
                target,
                batch,
            )?
        } else {
            Vec::new()
        };
        Ok(DeviceRelevance {
            map: ndarray::Array2::from_shape_vec((h, w), map_host[..plane].to_vec())
                .map_err(|e| Error::Internal(e.to_string()))?,
            logits: logits_host,
            deltas,
            taps,
        })
    }
}

/// The saved activations of block `layer` in a forward that kept every block.
fn tapped(fwd: &Forward, layer: usize) -> Result<&super::Saved> {
    fwd.blocks.get(layer).ok_or_else(|| {
        Error::param(
            "layer",
            format!(
                "block {layer} does not exist (the model has {})",
                fwd.blocks.len()
            ),
        )
    })
}
