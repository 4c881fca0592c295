//! Allocator settings for a process that holds a large in-memory ledger (mimalloc).

/// `mi_option_allow_large_os_pages` in mimalloc's `mi_option_e` (v3).
const MI_OPTION_LARGE_OS_PAGES: libmimalloc_sys::mi_option_t = 6;
/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays mapped before it goes back to the OS, in milliseconds (mimalloc's
/// default is 10). The request tables and the WAL queue grow and shrink all the time; returned
/// after 10 ms, their pages came back from the kernel freshly zeroed at the next growth, which
/// took a fifth of the CPU of a durable write load (measured: 0.54M -> 0.60-0.78M durable
/// writes/s with 1,024 in flight).
const PURGE_DELAY_MS: i64 = 1_000;

/// Transparent huge pages for the heap: the ledger is read at random, and 2 MiB pages cut the TLB
/// misses of each lookup (measured: random ATP query on `retail` 720 ns -> 450 ns). Freed memory
/// is kept a second before it is returned (see `PURGE_DELAY_MS`). The server stops taking new
/// huge pages once it has loaded (see [`HugePages`]).
pub fn tune_allocator() {
    // SAFETY: sets process-wide allocator options; mimalloc allows it at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_LARGE_OS_PAGES, 1);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _);
    }
}

/// Runs a bulk load with page purging off, then gives the transient memory back to the OS.
/// Loading frees and reallocates growing vectors by the million; with purging on, the kernel
/// zeroes the same pages again and again (measured: `retail` load 2.3 s -> 1.2 s, `peak` 40 s ->
/// 26 s).
pub fn bulk_load<T>(load: impl FnOnce() -> T) -> T {
    // SAFETY: as above; -1 means "never purge" until reset.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let out = load();
    // SAFETY: as above; then ask every heap to return what it can.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _);
        libmimalloc_sys::mi_collect(true);
    }
    out
}

/// When the server's heap may take transparent huge pages (config `server.huge_pages`).
///
/// A huge page is zeroed whole by the fault that first touches it: on the 2-core VM that is
/// milliseconds, and every request in flight waits behind it. With huge pages while serving,
/// 1-line holds at 41.6k/s had p99 4-9 ms, stalls of 2-4 ms a few times a second, all
/// connections at once; without, p99 1.1-1.2 ms. What is loaded at start (the ledger, read at
/// random) keeps its huge pages either way: the switch only stops new ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HugePages {
    /// Huge pages for what recovery and the demo load allocate, none once serving starts.
    #[default]
    Load,
    /// Huge pages always (throughput over tail latency).
    Always,
    /// Never, not even for the load.
    Never,
}

impl HugePages {
    pub fn name(self) -> &'static str {
        match self {
            HugePages::Load => "load",
            HugePages::Always => "always",
            HugePages::Never => "never",
        }
    }

    /// Called before recovery and again once loading is done.
    pub fn apply(self, loaded: bool) {
        let stop = match self {
            HugePages::Load => loaded,
            HugePages::Always => false,
            HugePages::Never => true,
        };
        if stop {
            stop_huge_pages();
        }
    }
}

/// Faults in this process take ordinary pages from now on; huge pages already mapped stay.
pub fn stop_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only; it sets a flag on this process.
        let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if r != 0 {
            tracing::warn!(
                "could not turn off transparent huge pages: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn huge_pages_off() -> bool {
        // SAFETY: prctl with integer arguments only; it reads a flag of this process.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
    }

    /// The only test that touches the process-wide flag (tests share the process).
    #[test]
    fn load_mode_stops_huge_pages_once_loaded() {
        assert!(!huge_pages_off(), "a test process starts with huge pages allowed");
        HugePages::Always.apply(true);
        HugePages::Load.apply(false);
        assert!(!huge_pages_off(), "before and during the load they stay allowed");
        HugePages::Load.apply(true);
        assert!(huge_pages_off(), "serving takes ordinary pages");
    }
}
