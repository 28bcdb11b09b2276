#include "moescope/util/cpu.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(MOESCOPE_NO_MULTIVERSION)
#define MOESCOPE_CPU_X86 1
#include <cpuid.h>
#else
#define MOESCOPE_CPU_X86 0
#endif
#if defined(__x86_64__)
#define MOESCOPE_HAS_MXCSR 1
#include <xmmintrin.h>
#else
#define MOESCOPE_HAS_MXCSR 0
#endif

namespace moescope {
namespace {

struct Features {
  bool avx2_fma = false, f16c = false, avx512f = false, avx512_skylake = false;
};

const Features& features() {
  static const Features f = [] {
    Features r;
#if MOESCOPE_CPU_X86
    __builtin_cpu_init();
#if defined(__clang__) && __clang_major__ < 16  // clang before 16 has no "f16c" for __builtin_cpu_supports
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    r.f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
#else
    r.f16c = __builtin_cpu_supports("f16c");
#endif
    r.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    r.avx512f = r.avx2_fma && __builtin_cpu_supports("avx512f");
    r.avx512_skylake = r.avx512f && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
    return r;
  }();
  return f;
}

}  // namespace

bool vector_isa_available(VectorIsa isa) {
  const Features& f = features();
  switch (isa) {
    case VectorIsa::Auto:
    case VectorIsa::Portable: return true;
    case VectorIsa::Avx2: return f.avx2_fma && f.f16c;
    case VectorIsa::Avx512: return f.avx2_fma && f.f16c && f.avx512f;
  }
  return false;
}

VectorIsa vector_isa_auto() {
  static const VectorIsa best = vector_isa_available(VectorIsa::Avx512) ? VectorIsa::Avx512
                                : vector_isa_available(VectorIsa::Avx2) ? VectorIsa::Avx2
                                                                        : VectorIsa::Portable;
  return best;
}

std::string_view vector_isa_name(VectorIsa isa) {
  switch (isa) {
    case VectorIsa::Auto: return "auto";
    case VectorIsa::Portable: return "portable";
    case VectorIsa::Avx2: return "avx2";
    case VectorIsa::Avx512: return "avx512";
  }
  return "?";
}

bool cpu_has_avx2_fma() { return features().avx2_fma; }
bool cpu_has_avx512_skylake() { return features().avx512_skylake; }

namespace {
#if MOESCOPE_HAS_MXCSR
constexpr unsigned kFlushModes = 0x8000 | 0x0040;  // MXCSR: flush to zero (bit 15), denormals are zero (bit 6)
#endif
}  // namespace

bool flushing_denormals() {
#if MOESCOPE_HAS_MXCSR
  return (_mm_getcsr() & kFlushModes) == kFlushModes;
#else
  return false;
#endif
}

bool set_flushing_denormals(bool on) {
#if MOESCOPE_HAS_MXCSR
  const unsigned csr = _mm_getcsr();
  // Only the two mode bits: the exception flags and rounding mode stay as they are.
  _mm_setcsr(on ? csr | kFlushModes : csr & ~kFlushModes);
  return (csr & kFlushModes) == kFlushModes;
#else
  (void)on;
  return false;
#endif
}

ScopedFlushDenormals::ScopedFlushDenormals(bool enable) {
  if (!enable) return;
  previous_ = set_flushing_denormals(true);
  active_ = flushing_denormals();  // false where the CPU has no such mode
}

ScopedFlushDenormals::~ScopedFlushDenormals() {
  if (active_) set_flushing_denormals(previous_);
}

}  // namespace moescope
