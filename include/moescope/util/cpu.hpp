#pragma once
// What the CPU runs, for the hand-vectorised kernels (metrics/gram_kernel, train/fused_kernels) and the choice of
// OpenBLAS's kernels (util/runtime).
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

}  // namespace moescope
