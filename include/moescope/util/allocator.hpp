#pragma once
// Keeps freed tensor memory in the process for reuse.
//
// glibc's malloc hands allocations above a threshold (128 KiB at start, adapting up to 32 MiB) to mmap and gives
// them back with munmap on free, and trims the heap top whenever 128 KiB are free there. LibTorch on CPU allocates
// and frees activation-sized buffers at every forward and backward, so each one is page-faulted in again, zeroed
// by the kernel, and unmapped: measured on the default CNN (250 images, 2 cores) a Hessian-vector product took
// 0.55-0.74 s with glibc's defaults and 0.24-0.29 s with these settings (most of the difference was system time).
#include <string>

namespace moescope {

/// Makes glibc's malloc keep freed memory: no mmap for large blocks (M_MMAP_MAX 0: they come from the heap and
/// return to it) and the heap top trimmed only when 1 GiB is free there (M_TRIM_THRESHOLD). Memory is therefore held at the peak of the
/// process, which suits a command-line tool. Does nothing when the allocator is not glibc's, or when the user set
/// any of MALLOC_MMAP_MAX_, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or MALLOC_TOP_PAD_ (their choice
/// stands). Call it at the start of main, before large allocations. Returns what it did, for logs.
std::string keep_freed_memory();

}  // namespace moescope
