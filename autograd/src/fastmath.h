// float32 erf, exp and tanh as straight-line arithmetic the compiler vectorises (libm's calls do
// not vectorise, and cost 10 to 40 ns an element). float64 keeps libm: gradient checks run there.
//   erf:  the 13/8-degree rational interpolant Eigen uses for float (a couple of ulp on [-4, 4],
//         +-1 beyond).
//   exp:  Cody-Waite range reduction x = n ln2 + r, a degree-6 polynomial for e^r (about 1 ulp),
//         2^n written into the exponent bits; 0 below -87 (no denormal results).
//   tanh: the 13/6-degree rational interpolant Eigen uses for float (a couple of ulp), x itself
//         below 4e-4.
// Clamps are comparisons, not fmin/fmax (which are calls under IEEE NaN rules).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace edgetune::ops::detail {

inline float clamp_to(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

inline float fast_erf(float x) {
  x = clamp_to(x, -4.0f, 4.0f);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  // Never past +-1, so 1 + erf(x) stays >= 0 where it cancels.
  return clamp_to(x * p / q, -1.0f, 1.0f);
}

inline float fast_exp(float a) {
  const float x = clamp_to(a, -87.0f, 88.0f);
  // n = round(x / ln2) by the 1.5 * 2^23 trick (exact for |n| < 2^22, round to nearest even).
  const float shift = 12582912.0f;
  const float n = (x * 1.44269504088896341f + shift) - shift;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  // Below -87 the result is 0, as libm's rounds e^-104 and less: a masked attention score
  // (-10000 or -inf) must give an exact 0, not a denormal that slows every later product.
  return a < -87.0f ? 0.0f : p * std::bit_cast<float>(bits);
}

inline float fast_tanh(float a) {
  const float x = clamp_to(a, -7.90531110763549805f, 7.90531110763549805f);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const float t = p / q;
  return (a < 4e-4f && a > -4e-4f) ? a : t;
}

template <class T>
inline T erf_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return fast_erf(x);
  } else {
    return std::erf(x);
  }
}

template <class T>
inline T exp_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return fast_exp(x);
  } else {
    return std::exp(x);
  }
}

template <class T>
inline T tanh_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return fast_tanh(x);
  } else {
    return std::tanh(x);
  }
}

}  // namespace edgetune::ops::detail
