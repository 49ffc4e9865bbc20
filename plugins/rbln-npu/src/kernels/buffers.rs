//! Large f32 buffers backed by transparent huge pages where the kernel offers them.
//!
//! Loading a model writes hundreds of MB of weights into fresh memory, and a run streams its
//! arena: with 4 KiB pages that is one page fault (and one TLB entry) per 4 KiB. On Linux with
//! transparent huge pages in `madvise` mode, advising the buffer `MADV_HUGEPAGE` before it is
//! first touched lets the kernel back it with 2 MiB pages instead. Elsewhere, or if the advice
//! is refused, the buffers are ordinary allocations.

/// Buffers smaller than this are left alone (the allocator may not place them in their own
/// mapping, and a huge page would be mostly waste).
const MIN_BYTES: usize = 4 << 20;

/// A zeroed buffer of `n` floats.
pub fn zeroed(n: usize) -> Vec<f32> {
    let mut v = Vec::<f32>::with_capacity(n);
    advise(&mut v);
    v.resize(n, 0.0);
    v
}

/// The floats stored little-endian in `b` (a multiple of 4 bytes long), copied once.
pub fn floats_from_le(b: &[u8]) -> Vec<f32> {
    let n = b.len() / 4;
    let mut v = Vec::<f32>::with_capacity(n);
    advise(&mut v);
    #[cfg(target_endian = "little")]
    // SAFETY: the destination has capacity for n floats = 4n bytes of `b`, the regions do not
    // overlap, any bit pattern is a valid f32, and the host's byte order is the file's.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr().cast::<u8>(), n * 4);
        v.set_len(n);
    }
    #[cfg(not(target_endian = "little"))]
    v.extend(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
    );
    v
}

/// Returns freed heap memory to the operating system. glibc keeps freed blocks below its
/// (adaptive) mmap threshold in the heap, so the weights of a dropped executable would
/// otherwise stay in the process's resident memory.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Advises the 2 MiB-aligned part of `v`'s (untouched) capacity for huge pages.
fn advise(v: &mut Vec<f32>) {
    let bytes = v.capacity() * 4;
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_mut_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if hi > lo {
            // SAFETY: [lo, hi) lies inside the allocation `v` owns; MADV_HUGEPAGE only changes
            // how the kernel backs those pages, never their contents or validity. A failure
            // (e.g. THP disabled) is harmless and ignored.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_hold_what_they_should() {
        let big = zeroed(3 << 20);
        assert_eq!(big.len(), 3 << 20);
        assert!(big.iter().all(|&x| x == 0.0));
        let floats: Vec<f32> = (0..(2 << 20)).map(|i| i as f32 * 0.5 - 7.0).collect();
        let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        assert_eq!(floats_from_le(&bytes), floats);
        assert_eq!(floats_from_le(&bytes[..12]), floats[..3]);
    }
}
