//! Progress and abort callbacks of long calls, and the worker-thread setting.

use std::ffi::c_void;

use crate::error::{Error, Result};

/// Called after each batch of IG passes with the passes `done` of `total`.
pub type EsProgressFn = Option<unsafe extern "C" fn(done: u32, total: u32, user_data: *mut c_void)>;

/// Asked before the work starts and after each batch of IG passes; return true
/// to stop the call, which then returns `ES_STATUS_ABORTED`.
pub type EsAbortFn = Option<unsafe extern "C" fn(user_data: *mut c_void) -> bool>;

/// Callbacks of a long call; pass NULL for none. They are called one at a time,
/// possibly from a worker thread of the library, and must not throw or unwind.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EsCallbacks {
    /// Progress report, or NULL.
    pub progress: EsProgressFn,
    /// Abort request, or NULL.
    pub abort: EsAbortFn,
    /// Passed unchanged to both callbacks.
    pub user_data: *mut c_void,
}

/// The caller's callbacks, shareable with the worker thread that reports progress.
#[derive(Clone, Copy)]
pub(crate) struct Hooks(Option<EsCallbacks>);

// SAFETY: the pipeline calls the progress closure one call at a time (a sequential
// loop over IG batches), and the header tells callers that their callbacks may run
// on a library thread; `user_data` is only passed back to those callbacks.
unsafe impl Sync for Hooks {}
// SAFETY: as for Sync.
unsafe impl Send for Hooks {}

impl Hooks {
    /// # Safety
    /// `callbacks` must be NULL or point to a readable `EsCallbacks`.
    pub(crate) unsafe fn new(callbacks: *const EsCallbacks) -> Hooks {
        // SAFETY: readable or NULL (caller's duty); function pointers are Option,
        // so NULL entries are valid values.
        Hooks(unsafe { callbacks.as_ref() }.copied())
    }

    /// Err(Aborted) when the abort callback asks to stop.
    pub(crate) fn check_abort(&self) -> Result<()> {
        if let Some(EsCallbacks {
            abort: Some(abort),
            user_data,
            ..
        }) = self.0
        {
            // SAFETY: a C function pointer the caller supplied for exactly this call.
            if unsafe { abort(user_data) } {
                return Err(Error::Aborted);
            }
        }
        Ok(())
    }

    /// The pipeline's progress callback: reports, then asks whether to go on.
    pub(crate) fn progress(&self, done: usize, total: usize) -> bool {
        if let Some(EsCallbacks {
            progress: Some(progress),
            user_data,
            ..
        }) = self.0
        {
            let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            // SAFETY: a C function pointer the caller supplied for exactly this call.
            unsafe { progress(clamp(done), clamp(total), user_data) };
        }
        self.check_abort().is_ok()
    }
}

/// Runs `work` on `threads` worker threads (0: the shared pool, one per core).
pub(crate) fn with_threads<T: Send>(
    threads: u32,
    work: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    if threads == 0 {
        return work();
    }
    crate::limits::check("threads", u64::from(threads))?;
    pool_with(threads as usize)?.install(work)
}

/// One pool per thread count, built once and kept for the life of the process
/// (a call does not start threads of its own); at most a few counts are kept.
fn pool_with(threads: usize) -> Result<std::sync::Arc<rayon::ThreadPool>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    static POOLS: Mutex<Option<HashMap<usize, Arc<rayon::ThreadPool>>>> = Mutex::new(None);
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    let pools = pools.get_or_insert_with(HashMap::new);
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    if pools.len() >= 8 {
        return Err(Error::param(
            "threads",
            format!("{threads}: at most 8 distinct thread counts are used per process; reuse one of {:?}", {
                let mut k: Vec<_> = pools.keys().copied().collect();
                k.sort_unstable();
                k
            }),
        ));
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("explainseg-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start {threads} worker threads: {e}")))?,
    );
    pools.insert(threads, pool.clone());
    Ok(pool)
}
