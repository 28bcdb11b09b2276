#pragma once
// MOESCOPE_MULTIVERSION before a hot function compiles it for AVX2 as well as the baseline, the loader picking
// one at run time (GCC/Clang on x86-64 with ifunc support); elsewhere it expands to nothing.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(MOESCOPE_NO_MULTIVERSION)
#define MOESCOPE_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MOESCOPE_MULTIVERSION
#endif
