//! What differs between the systems fovea runs on (Linux, Windows, macOS; x86-64 and ARM), in
//! one place: where per-user data and caches live, how much memory the system can give, and the
//! process's peak memory. Everything else in fovea is written once for all of them.
//!
//! | what | Linux (and other Unix) | Windows | macOS |
//! |---|---|---|---|
//! | data (app sessions) | `$XDG_DATA_HOME`, else `~/.local/share` | `%APPDATA%` | `~/Library/Application Support` |
//! | caches (weight cache) | `$XDG_CACHE_HOME`, else `~/.cache` | `%LOCALAPPDATA%` | `~/Library/Caches` |
//! | available memory | `MemAvailable` in `/proc/meminfo` | `GlobalMemoryStatusEx` | not read (no check) |
//! | peak memory | `VmHWM` in `/proc/self/status` | `PeakWorkingSetSize` | not read |
//!
//! `XDG_DATA_HOME` and `XDG_CACHE_HOME` are honoured on every system when set, so a test or a
//! portable install can point them anywhere. This module sits at the bottom of the house, beside
//! `io`: it knows nothing of fovea.

use std::path::PathBuf;

/// The per-user folder for data fovea keeps (app sessions live in `<this>/fovea/sessions`).
pub fn data_dir() -> Option<PathBuf> {
    user_dir(
        "XDG_DATA_HOME",
        "APPDATA",
        "Library/Application Support",
        ".local/share",
    )
}

/// The per-user folder for caches (the weight cache lives in `<this>/fovea`).
pub fn cache_dir() -> Option<PathBuf> {
    user_dir("XDG_CACHE_HOME", "LOCALAPPDATA", "Library/Caches", ".cache")
}

/// `$xdg` when set; else Windows' `%windows%`, macOS' `~/<macos>`, other systems' `~/<unix>`.
fn user_dir(xdg: &str, windows: &str, macos: &str, unix: &str) -> Option<PathBuf> {
    if let Some(dir) = env_dir(xdg) {
        return Some(dir);
    }
    if cfg!(windows) {
        env_dir(windows)
    } else if cfg!(target_os = "macos") {
        home().map(|h| h.join(macos))
    } else {
        home().map(|h| h.join(unix))
    }
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> Option<PathBuf> {
    env_dir("HOME").or_else(|| cfg!(windows).then(|| env_dir("USERPROFILE")).flatten())
}

/// A relative or absolute path written with '/' in a file (a checkpoint's config, a cases
/// list), in this system's separators: the same folder, named as the system's own tools name
/// it (`vit\clip` on Windows, where `dir.join("vit/clip")` would give `dir\vit/clip`).
pub fn native_path(written: &str) -> PathBuf {
    std::path::Path::new(written).components().collect()
}

/// Memory the system can give this process without swapping, in bytes (`None` where fovea
/// cannot read it).
pub fn available_memory_bytes() -> Option<u64> {
    #[cfg(windows)]
    {
        windows::memory_status().map(|status| status.ull_avail_phys)
    }
    #[cfg(not(windows))]
    {
        proc_field("/proc/meminfo", "MemAvailable:")
    }
}

/// Physical memory in all, in bytes (`None` where fovea cannot read it).
pub fn total_memory_bytes() -> Option<u64> {
    #[cfg(windows)]
    {
        windows::memory_status().map(|status| status.ull_total_phys)
    }
    #[cfg(not(windows))]
    {
        proc_field("/proc/meminfo", "MemTotal:")
    }
}

/// The most memory this process has had resident so far, in bytes.
pub fn peak_resident_bytes() -> Option<u64> {
    #[cfg(windows)]
    {
        windows::peak_working_set()
    }
    #[cfg(not(windows))]
    {
        proc_field("/proc/self/status", "VmHWM:")
    }
}

/// Windows: when fovea.exe was started by a double-click, Windows made a console window for
/// it alone (fovea is a console program, so that the command line prints where it was typed);
/// the app lets that console go, and its window closes. Started from a terminal, the console
/// is the terminal's and stays. Elsewhere: nothing.
pub fn release_own_console() {
    #[cfg(windows)]
    windows::release_own_console();
}

/// A "Name:   1234 kB" line of a /proc file, in bytes.
#[cfg(not(windows))]
fn proc_field(file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(windows)]
mod windows {
    //! The kernel32 calls fovea needs, declared by hand (kernel32 is linked into every
    //! Windows program; `K32GetProcessMemoryInfo` is psapi's call as kernel32 exports it since
    //! Windows 7).

    #[repr(C)]
    pub struct MemoryStatusEx {
        pub dw_length: u32,
        pub dw_memory_load: u32,
        pub ull_total_phys: u64,
        pub ull_avail_phys: u64,
        pub ull_total_page_file: u64,
        pub ull_avail_page_file: u64,
        pub ull_total_virtual: u64,
        pub ull_avail_virtual: u64,
        pub ull_avail_extended_virtual: u64,
    }

    #[repr(C)]
    struct ProcessMemoryCounters {
        cb: u32,
        page_fault_count: u32,
        peak_working_set_size: usize,
        working_set_size: usize,
        quota_peak_paged_pool_usage: usize,
        quota_paged_pool_usage: usize,
        quota_peak_non_paged_pool_usage: usize,
        quota_non_paged_pool_usage: usize,
        pagefile_usage: usize,
        peak_pagefile_usage: usize,
    }

    #[link(name = "kernel32")]
    extern "system" {
        fn GlobalMemoryStatusEx(buffer: *mut MemoryStatusEx) -> i32;
        fn GetCurrentProcess() -> *mut std::ffi::c_void;
        fn K32GetProcessMemoryInfo(
            process: *mut std::ffi::c_void,
            counters: *mut ProcessMemoryCounters,
            size: u32,
        ) -> i32;
    }

    #[link(name = "kernel32")]
    extern "system" {
        fn GetConsoleProcessList(list: *mut u32, count: u32) -> u32;
        fn FreeConsole() -> i32;
    }

    /// Free the console when this process is the only one attached to it.
    pub fn release_own_console() {
        let mut ids = [0u32; 4];
        // SAFETY: a buffer of 4 process ids, its length given.
        let attached = unsafe { GetConsoleProcessList(ids.as_mut_ptr(), ids.len() as u32) };
        if attached == 1 {
            // SAFETY: detaching from a console has no preconditions.
            unsafe { FreeConsole() };
        }
    }

    pub fn memory_status() -> Option<MemoryStatusEx> {
        let mut status = MemoryStatusEx {
            dw_length: std::mem::size_of::<MemoryStatusEx>() as u32,
            dw_memory_load: 0,
            ull_total_phys: 0,
            ull_avail_phys: 0,
            ull_total_page_file: 0,
            ull_avail_page_file: 0,
            ull_total_virtual: 0,
            ull_avail_virtual: 0,
            ull_avail_extended_virtual: 0,
        };
        // SAFETY: the buffer is a MEMORYSTATUSEX with its length set, as the call requires.
        let ok = unsafe { GlobalMemoryStatusEx(&mut status) };
        (ok != 0).then_some(status)
    }

    pub fn peak_working_set() -> Option<u64> {
        let size = std::mem::size_of::<ProcessMemoryCounters>() as u32;
        let mut counters = ProcessMemoryCounters {
            cb: size,
            page_fault_count: 0,
            peak_working_set_size: 0,
            working_set_size: 0,
            quota_peak_paged_pool_usage: 0,
            quota_paged_pool_usage: 0,
            quota_peak_non_paged_pool_usage: 0,
            quota_non_paged_pool_usage: 0,
            pagefile_usage: 0,
            peak_pagefile_usage: 0,
        };
        // SAFETY: the pseudo-handle of this process and a PROCESS_MEMORY_COUNTERS of `size`.
        let ok = unsafe { K32GetProcessMemoryInfo(GetCurrentProcess(), &mut counters, size) };
        (ok != 0).then_some(counters.peak_working_set_size as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux and Windows read the system's memory; what is available is positive and no more
    /// than the physical memory.
    #[cfg(any(target_os = "linux", windows))]
    #[test]
    fn the_system_memory_is_read() {
        let total = total_memory_bytes().expect("total memory");
        let available = available_memory_bytes().expect("available memory");
        assert!(
            available > 0 && available <= total,
            "{available} of {total}"
        );
    }

    /// Touching 64 MiB raises the peak by at least that much less a page's slack.
    #[cfg(any(target_os = "linux", windows))]
    #[test]
    fn the_peak_follows_what_was_touched() {
        let before = peak_resident_bytes().expect("peak memory");
        let block = vec![1u8; 64 << 20];
        let sum: u64 = block.iter().step_by(4096).map(|&b| b as u64).sum();
        assert_eq!(sum, (64 << 20) / 4096);
        let after = peak_resident_bytes().expect("peak memory");
        assert!(after >= (64 << 20), "peak {after} after touching 64 MiB");
        assert!(after >= before);
    }

    /// '/' becomes the system's separator; the folder named stays the same.
    #[test]
    fn written_paths_use_the_systems_separator() {
        let sep = std::path::MAIN_SEPARATOR;
        let path = native_path("vit/clip-tiny/config.json");
        assert_eq!(
            path.to_str(),
            Some(format!("vit{sep}clip-tiny{sep}config.json").as_str())
        );
        assert_eq!(native_path("clip").to_str(), Some("clip"));
    }

    /// The folders follow the XDG variables when set, on every system.
    #[test]
    fn folders_are_per_user() {
        let data = data_dir().expect("a data folder");
        let cache = cache_dir().expect("a cache folder");
        assert!(data.is_absolute() || std::env::var_os("XDG_DATA_HOME").is_some());
        assert_ne!(data, cache);
    }
}
