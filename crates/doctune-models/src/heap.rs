//! Keeping freed tensor buffers in the process during a training run.
//!
//! A training step allocates and frees the same large buffers (activations, gradients: one to
//! hundreds of MB each) every step. glibc's malloc gets blocks that large from the kernel
//! (`mmap`) and gives them back on free, so each step faults every page in again and the kernel
//! zeroes it: on the benchmark's models that was a quarter to a half of the step. [`HeapGuard`]
//! serves every block from the heap (no mmap threshold) and stops the heap from being trimmed
//! while any guard lives, then restores the defaults and returns the free memory to the system
//! (`malloc_trim`), so a window that ran a training job does not keep its peak afterwards.
//! Elsewhere than glibc it does nothing (other allocators reuse memory on their own terms).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::sync::Mutex;

    /// Guards alive; the settings change when it goes 0 → 1 and back.
    static LIVE: Mutex<usize> = Mutex::new(0);
    /// Every block from the heap; glibc versions that cap the threshold at HEAP_MAX_SIZE / 2
    /// refuse this, and get that cap.
    const MMAP_THRESHOLD: libc::c_int = libc::c_int::MAX;
    const MMAP_THRESHOLD_CAP: libc::c_int = 32 << 20;
    /// glibc's default mmap and trim thresholds.
    const DEFAULT_MMAP: libc::c_int = 128 << 10;
    const DEFAULT_TRIM: libc::c_int = 128 << 10;

    #[allow(unsafe_code)]
    pub fn acquire() {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        if *live == 0 {
            // SAFETY: mallopt only changes malloc's tuning parameters; it is thread-safe.
            unsafe {
                if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 0 {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_CAP);
                }
                libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            }
        }
        *live += 1;
    }

    #[allow(unsafe_code)]
    pub fn release() {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        if *live == 0 {
            // SAFETY: as above; malloc_trim only returns free memory to the kernel. (mallopt
            // cannot re-enable glibc's dynamic mmap threshold; its starting value is restored.)
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, DEFAULT_MMAP);
                libc::mallopt(libc::M_TRIM_THRESHOLD, DEFAULT_TRIM);
                libc::malloc_trim(0);
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn acquire() {}
    pub fn release() {}
}

/// While alive, freed buffers stay in the process for reuse (see the module docs).
#[derive(Debug)]
#[must_use = "the setting lasts as long as the guard"]
pub struct HeapGuard(());

impl HeapGuard {
    pub fn keep_freed_memory() -> Self {
        imp::acquire();
        HeapGuard(())
    }
}

impl Drop for HeapGuard {
    fn drop(&mut self) {
        imp::release();
    }
}

#[cfg(test)]
mod tests {
    use super::HeapGuard;

    #[test]
    fn guards_nest() {
        let a = HeapGuard::keep_freed_memory();
        let b = HeapGuard::keep_freed_memory();
        drop(a);
        // Still inside b: a large allocation is served and freed without trouble.
        let v = vec![1u8; 64 << 20];
        assert_eq!(v[v.len() - 1], 1);
        drop(v);
        drop(b);
    }
}
