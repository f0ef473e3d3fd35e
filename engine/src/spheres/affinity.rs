//! Pinning the calling thread to one CPU, and its kernel thread id.

/// The most CPUs a mask may name here: as far as `topology::allowed_cpus` reads the kernel's mask
/// (2^16 words of 64 bits). Linux itself stops at 8192 (`CONFIG_NR_CPUS`).
#[cfg(target_os = "linux")]
const MAX_CPUS: usize = 1 << 22;

/// Restricts the calling thread to logical CPU `cpu`. The error is a message for a warning.
#[cfg(target_os = "linux")]
pub(crate) fn pin_current_thread(cpu: usize) -> Result<(), String> {
    // A mask for CPU 2^60 would be an allocation of exabytes, which aborts the process.
    if cpu >= MAX_CPUS {
        return Err(format!(
            "CPU {cpu} is beyond the {MAX_CPUS} CPUs an affinity mask can name"
        ));
    }
    // A mask as long as `cpu` needs (the fixed cpu_set_t stops at 1024 CPUs).
    let bits = libc::c_ulong::BITS as usize;
    let mut mask: Vec<libc::c_ulong> = vec![0; cpu / bits + 1];
    mask[cpu / bits] |= 1 << (cpu % bits);
    // SAFETY: pid 0 names the calling thread; the pointer and byte length describe `mask`, a
    // live, initialised buffer that the kernel only reads (it accepts any multiple of the word
    // size and ignores bits beyond the CPUs it knows).
    let rc = unsafe {
        libc::sched_setaffinity(
            0,
            std::mem::size_of_val(mask.as_slice()),
            mask.as_ptr().cast::<libc::cpu_set_t>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn pin_current_thread(_cpu: usize) -> Result<(), String> {
    Err("pinning threads is only implemented on Linux".to_string())
}

/// The calling thread's kernel id (as `ps -L`, `top -H` and /proc/self/task show it).
#[cfg(target_os = "linux")]
pub(crate) fn current_tid() -> Option<u32> {
    // SAFETY: gettid takes no arguments, cannot fail and touches no memory.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).ok()
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn current_tid() -> Option<u32> {
    None
}
