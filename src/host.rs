//! This machine's host name (a container's is its short id): the default
//! name of a fleet member and of a demo backend, and part of the registry's
//! checks-leader name.

/// The host name, if the kernel gives one.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}
