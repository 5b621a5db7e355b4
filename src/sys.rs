//! Every direct call into the C library, in one place: each `unsafe`
//! block here has a `// SAFETY:` comment, and the rest of the crate denies
//! `unsafe` code.
//!
//! What lives here is what no maintained crate wraps for us: the open-file
//! limit (raised, and read), a socket's kernel send-queue size (`SIOCOUTQ`), the two
//! `sysconf` values needed to read `/proc/PID/stat`, and `flock` (std's
//! `File::try_lock` is newer than our minimum Rust).
//!
//! Imports: nothing of tickcast's.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Raises the open-file limit to its hard maximum, so thousands of
/// subscribers do not hit the usual soft limit of 1024. Returns whether
/// the limit is now at its maximum.
pub fn raise_fd_limit() -> bool {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return false;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return true;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct we pass.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 }
}

/// The open-file limit, soft and hard (`getrlimit(RLIMIT_NOFILE)`): every
/// client is one descriptor, so the soft limit caps the connections the
/// server can hold, whatever `--max-connections` says. `None` if it cannot
/// be read; `u64::MAX` stands for "unlimited".
pub fn open_file_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some((limit.rlim_cur, limit.rlim_max))
}

/// Whether `error` is running out of file descriptors: `EMFILE` (this
/// process's limit) or `ENFILE` (the system's).
pub fn is_out_of_fds(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Bytes in a socket's kernel send queue, not yet acknowledged by the
/// peer (`SIOCOUTQ`). Read at scrape time, never per message.
pub fn kernel_queued_bytes(socket: &impl AsRawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: the fd is open for as long as `socket` is borrowed, and
    // TIOCOUTQ (== SIOCOUTQ on Linux) writes one c_int through the pointer,
    // which points at a live local of that type.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
    (rc == 0).then(|| queued.max(0) as usize)
}

/// Takes an exclusive advisory lock (`flock(LOCK_EX | LOCK_NB)`) on an
/// open file, without waiting: `Ok(true)` if this process now holds it,
/// `Ok(false)` if another open file description holds it. The lock lasts
/// until the file is closed (every descriptor of it), which the kernel
/// does when the process dies, however it dies.
pub fn try_lock_exclusive(file: &impl AsRawFd) -> std::io::Result<bool> {
    // SAFETY: flock takes a descriptor by value and touches no memory of
    // ours; the descriptor is open for as long as `file` is borrowed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Clock ticks per second, the unit of CPU times in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// The page size in bytes, the unit of RSS in `/proc/PID/stat`.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_and_units_are_read() {
        assert!(raise_fd_limit(), "the soft limit can always be raised to the hard one");
        let (soft, hard) = open_file_limit().unwrap();
        assert_eq!(soft, hard, "raised to the hard limit");
        assert!(is_out_of_fds(&std::io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_out_of_fds(&std::io::Error::from(std::io::ErrorKind::ConnectionAborted)));
        assert!(clock_ticks_per_second() >= 100);
        assert!(page_size() >= 4096);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(kernel_queued_bytes(&client), Some(0), "nothing sent, nothing queued");
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(kernel_queued_bytes(&file), None, "not a socket");
    }

    #[test]
    fn an_exclusive_lock_is_held_once() {
        let path = std::env::temp_dir().join(format!("tickcast-sys-lock-{}", std::process::id()));
        let first = std::fs::File::create(&path).unwrap();
        let second = std::fs::File::open(&path).unwrap();
        assert!(try_lock_exclusive(&first).unwrap());
        assert!(!try_lock_exclusive(&second).unwrap(), "a second open file description is refused");
        drop(first);
        assert!(try_lock_exclusive(&second).unwrap(), "closing the holder releases it");
        let _ = std::fs::remove_file(path);
    }
}
