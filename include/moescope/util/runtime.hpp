#pragma once
// Process-wide settings made at the start of main, before LibTorch does any work. Both were measured on the 2-core
// development machine with Debian's LibTorch 1.13 (OpenMP from libgomp) and OpenBLAS (its own pthreads).
#include <string>

namespace moescope {

/// Keeps freed tensor memory in the process for reuse.
///
/// glibc's malloc hands allocations above a threshold (128 KiB at start, adapting up to 32 MiB) to mmap and gives
/// them back with munmap on free, and trims the heap top whenever 128 KiB are free there. LibTorch on CPU
/// allocates and frees activation-sized buffers at every forward and backward, so each one is page-faulted in
/// again, zeroed by the kernel and unmapped: on the default CNN (250 images, 2 cores) a Hessian-vector product took
/// 0.55-0.74 s with glibc's defaults and 0.24-0.29 s with these settings (most of the difference was system time).
///
/// Makes glibc's malloc keep freed memory: no mmap for large blocks (M_MMAP_MAX 0: they come from the heap and
/// return to it) and the heap top trimmed only when 1 GiB is free there (M_TRIM_THRESHOLD). Memory is therefore
/// held at the peak of the process, which suits a command-line tool. Does nothing when the allocator is not
/// glibc's, or when the user set any of MALLOC_MMAP_MAX_, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or
/// MALLOC_TOP_PAD_ (their choice stands). Returns what it did, for logs.
std::string keep_freed_memory();

/// Makes idle OpenMP threads sleep instead of spinning, by running the program again with OMP_WAIT_POLICY=PASSIVE.
///
/// LibTorch's intra-op threads (OpenMP) spin for a while after each parallel region, and OpenBLAS's own threads
/// then compete with them for the cores during every matrix product: with 2 threads on 2 cores, training the MLP
/// classifier on the clustered task ran at 15,100 samples/s with libgomp's default policy and 28,700 with
/// PASSIVE, and an HVP of the 674k-parameter gated MLP took 0.23-0.39 s against 0.078 s (one thread: 0.093 s).
/// libgomp reads the variable once, when it is loaded, before main; hence the re-execution (which costs one more
/// process start, about 0.6 s with LibTorch). Returns (and changes nothing) when OMP_WAIT_POLICY is already set,
/// so the user's choice stands and the second start does not loop; on systems without /proc/self/exe, or if
/// execv fails, the process goes on unchanged. Call it before any OpenMP thread exists (moescope calls it at the
/// start of each subcommand whose work is LibTorch's: cli::start_torch_work).
void reexec_with_passive_openmp(char** argv);

/// Ignores SIGXFSZ, so that a write past the file size limit (`ulimit -f`) fails with EFBIG, which the writers
/// report as an error naming the file, instead of the signal's default action killing the process with a core
/// dump and no word. The disposition is inherited by the processes moescope starts (it starts itself again).
void ignore_file_size_signal();

}  // namespace moescope
