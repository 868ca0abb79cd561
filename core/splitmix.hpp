// SplitMix64's output function (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number
// generators", OOPSLA; the finaliser of Java's SplittableRandom): a bijective 64-bit mix, used to
// derive independent seeds from (seed, step) keys, never as a stream generator for results.
#pragma once

#include <cstdint>

namespace diffode {

constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace diffode
