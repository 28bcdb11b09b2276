#pragma once
// What the CPU runs, for the hand-vectorised kernels (metrics/gram_kernel, train/fused_kernels) and the choice of
// OpenBLAS's kernels (util/runtime); the calling thread's handling of denormal floats.
#include <string_view>

namespace moescope {

/// Code paths of the hand-vectorised kernels. Auto picks the widest the CPU runs: Avx512 (AVX-512F with the AVX2
/// set), Avx2 (AVX2 + FMA + F16C), else Portable (plain C++).
enum class VectorIsa { Auto, Portable, Avx2, Avx512 };

/// True when this build and this CPU can run `isa` (Auto and Portable always).
bool vector_isa_available(VectorIsa isa);
/// What Auto resolves to on this CPU.
VectorIsa vector_isa_auto();
/// "auto", "portable", "avx2", "avx512".
std::string_view vector_isa_name(VectorIsa isa);
/// AVX2 and FMA (what OpenBLAS's Haswell kernels need).
bool cpu_has_avx2_fma();
/// The AVX-512 subsets of Skylake-X: F, CD, BW, DQ and VL (what OpenBLAS's SkylakeX kernels need).
bool cpu_has_avx512_skylake();

/// Denormal (subnormal) floats treated as zero on the calling thread while alive: results that would be denormal
/// are flushed to zero and denormal operands read as zero (x86's MXCSR FTZ and DAZ bits, for float and double, SSE
/// and AVX alike). Arithmetic that makes or reads a denormal otherwise takes a microcode assist of about a hundred
/// cycles per element on x86. The destructor restores the thread's previous mode. Where the CPU has no such mode
/// (or `enable` is false) nothing changes and active() is false.
class ScopedFlushDenormals {
 public:
  explicit ScopedFlushDenormals(bool enable = true);
  ~ScopedFlushDenormals();
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;
  bool active() const { return active_; }

 private:
  bool active_ = false, previous_ = false;
};

/// Whether the calling thread flushes denormals (both FTZ and DAZ set).
bool flushing_denormals();
/// Sets (or clears) both bits on the calling thread and returns whether they were set; false and no change where
/// the CPU has no such mode.
bool set_flushing_denormals(bool on);

}  // namespace moescope
