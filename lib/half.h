/* SPDX-License-Identifier: MIT */
/* half -- IEEE 754 binary16 ("F16" in safetensors) to and from binary32, portable C.
 *
 * mime_half_to_float() is exact for every one of the 65,536 encodings (subnormals, infinities,
 * NaNs keep their sign and payload's top bits). mime_float_to_half() rounds to nearest, ties to
 * even, as IEEE 754 and F16C's _cvtss_sh(x, 0) do: values beyond the largest half (65504)
 * become infinity, tiny ones subnormal or zero, NaN stays NaN (quiet).
 * Used for task tensors stored as F16 (thresholds and heads: half the bytes per task). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline float mime_half_to_float(uint16_t h)
{
	const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	const uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t mant = h & 0x3ffu, bits;
	float f;

	if (exp == 0x1fu) {
		bits = sign | 0x7f800000u | (mant << 13); /* inf or NaN */
	} else if (exp != 0) {
		bits = sign | ((exp + 112u) << 23) | (mant << 13); /* 127 - 15 = 112 */
	} else if (mant == 0) {
		bits = sign; /* signed zero */
	} else {
		/* subnormal: normalise; value = mant * 2^-24 */
		int e = -1;

		do {
			e++;
			mant <<= 1;
		} while (!(mant & 0x400u));
		bits = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ffu) << 13);
	}
	memcpy(&f, &bits, sizeof(f));
	return f;
}

static inline uint16_t mime_float_to_half(float f)
{
	uint32_t bits, sign, exp, mant;

	memcpy(&bits, &f, sizeof(bits));
	sign = (bits >> 16) & 0x8000u;
	exp = (bits >> 23) & 0xffu;
	mant = bits & 0x7fffffu;
	if (exp == 0xffu) /* inf, or NaN made quiet */
		return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
	if (exp > 142u) /* >= 2^16: beyond every half */
		return (uint16_t)(sign | 0x7c00u);
	if (exp >= 113u) {
		/* normal half: exponent exp - 112; round the 13 dropped bits to nearest even */
		uint32_t h = ((exp - 112u) << 10) | (mant >> 13);
		const uint32_t rest = mant & 0x1fffu;

		if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
			h++; /* may carry into the exponent, up to infinity: correct */
		return (uint16_t)(sign | h);
	}
	if (exp >= 102u) {
		/* subnormal half: value = m * 2^-24 with m = (1.mant) * 2^(exp - 127 + 24) */
		const uint32_t full = mant | 0x800000u;
		const uint32_t shift = 126u - exp; /* 14..24 */
		uint32_t h = full >> shift;
		const uint32_t rest = full & ((1u << shift) - 1u), half = 1u << (shift - 1u);

		if (rest > half || (rest == half && (h & 1u)))
			h++; /* may become the smallest normal: correct */
		return (uint16_t)(sign | h);
	}
	return (uint16_t)sign; /* below half the smallest subnormal: zero */
}

/* f[i] = mime_half_to_float(h[i]) for i < n, with the CPU's conversion instructions where
 * they exist: the same floats for every half but signalling NaNs, which come out quiet. */
void mime_half_to_float_n(const uint16_t *h, float *f, size_t n);
