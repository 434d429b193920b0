// SPDX-License-Identifier: MIT
/* half -- see half.h: the array form, with the CPU's own conversion where it has one
 * (x86 F16C, 8 per instruction; aarch64 FCVTL, 4), the scalar one for the rest. */
#include "lib/half.h"

#include <stdatomic.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Converts the first n - n % 8 halves; returns how many. */
__attribute__((target("avx,f16c"))) static size_t to_float_f16c(const uint16_t *h, float *f,
                                                                size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
	return i;
}
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

/* The halves the CPU's instructions convert (a prefix of h); the caller does the rest. */
static size_t to_float_simd(const uint16_t *h, float *f, size_t n)
{
	size_t i = 0;
#if defined(__x86_64__) || defined(__i386__)
	static atomic_int f16c = -1; /* every thread computes the same value */
	int have = atomic_load_explicit(&f16c, memory_order_relaxed);

	if (have < 0) {
		have = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
		atomic_store_explicit(&f16c, have, memory_order_relaxed);
	}
	if (have)
		i = to_float_f16c(h, f, n);
#elif defined(__aarch64__)
	for (; i + 4 <= n; i += 4)
		vst1q_f32(f + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
#else
	(void)h;
	(void)f;
	(void)n;
#endif
	return i;
}

void mime_half_to_float_n(const uint16_t *h, float *f, size_t n)
{
	for (size_t i = to_float_simd(h, f, n); i < n; i++)
		f[i] = mime_half_to_float(h[i]);
}
