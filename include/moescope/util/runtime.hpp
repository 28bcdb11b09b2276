#pragma once
// Process-wide settings made at the start of main, before LibTorch does any work. All were measured on the 2-core
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

/// The environment a LibTorch process should start with, set where the user has not set it:
///
/// - OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning. LibTorch's intra-op threads (OpenMP)
///   spin for a while after each parallel region, and OpenBLAS's own threads then compete with them for the cores
///   during every matrix product: with 2 threads on 2 cores, training the MLP classifier on the clustered task ran
///   at 15,100 samples/s with libgomp's default policy and 28,700 with PASSIVE, and an HVP of the 674k-parameter
///   gated MLP took 0.23-0.39 s against 0.078 s (one thread: 0.093 s).
/// - OPENBLAS_CORETYPE, only where OpenBLAS took the CPU for an older one (openblas_core_for says when): OpenBLAS
///   0.3.21 (Debian 12's) does not know the development machine's Xeon (family 6, model 207) and falls back to its
///   SSE3 "Prescott" kernels; its AVX-512 "SkylakeX" kernels run the same float32 products 4-5x faster (128 x 784 x
///   512: 38 against 180-200 GFLOP/s on 2 cores), the vision study's training step 2x faster.
///
/// Both are read once, when the libraries are loaded, before main. With `load_blas` the OpenBLAS that LibTorch
/// links is loaded to ask it (about 3 ms: the torch-free front end, before it starts moescope-torch); otherwise
/// only an OpenBLAS already in the process is asked. Returns whether anything was set.
bool set_torch_environment(bool load_blas);

/// Runs the program again (same arguments, /proc/self/exe) when set_torch_environment(false) set anything, so that
/// the libraries see it; returns otherwise, and when the user set both variables, so that their choice stands and
/// the second start does not loop. A re-execution costs one more process start (about 0.6 s with LibTorch): the
/// front end sets the environment before it starts moescope-torch, so that the commands start once. On systems
/// without /proc/self/exe, or if execv fails, the process goes on unchanged. Call it before any OpenMP thread
/// exists (moescope-torch calls it at the start of each subcommand whose work is LibTorch's: cli::start_torch_work).
void reexec_with_torch_environment(char** argv);

/// The kernel set OPENBLAS_CORETYPE should name, or "" to keep OpenBLAS's own choice `detected` (what
/// openblas_get_corename() says): "SkylakeX" on a CPU with the AVX-512 of Skylake-X (F, CD, BW, DQ, VL) and
/// "Haswell" on one with AVX2 and FMA, when OpenBLAS chose kernels older than those (Prescott, Core2, Nehalem,
/// Sandybridge, ...: a fallback for a CPU it does not know); "" when it chose Haswell, Zen, SkylakeX, Cooperlake or
/// SapphireRapids itself, when `detected` is empty (no OpenBLAS), or when the CPU has neither.
std::string openblas_core_for(const std::string& detected, bool avx2_fma, bool avx512_skx);

/// The OpenBLAS kernel set this process runs (openblas_get_corename; "" when it has no OpenBLAS). With `load`, an
/// OpenBLAS not yet in the process is loaded to ask it (the one LibTorch links: libopenblas.so.0 or libblas.so.3).
std::string openblas_core(bool load);

/// The OpenBLAS kernel set this process runs ("no OpenBLAS" when it has none), with OpenBLAS's configuration, for logs:
/// e.g. "SkylakeX (OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64)".
std::string openblas_description();

/// OpenBLAS's own thread count in this process (openblas_get_num_threads), 0 when it has no OpenBLAS.
int openblas_threads();
/// Sets OpenBLAS's thread count (openblas_set_num_threads; its threads are its own pool, apart from LibTorch's
/// intra-op threads, and it starts one per core whatever at::set_num_threads says). False when the process has no
/// OpenBLAS.
bool set_openblas_threads(int n);

/// Ignores SIGXFSZ, so that a write past the file size limit (`ulimit -f`) fails with EFBIG, which the writers
/// report as an error naming the file, instead of the signal's default action killing the process with a core
/// dump and no word. The disposition is inherited by the processes moescope starts (it starts itself again).
void ignore_file_size_signal();

}  // namespace moescope
