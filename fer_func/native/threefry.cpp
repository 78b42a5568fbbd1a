// Threefry-2x32, 20 rounds (fer_func/prng.py's cipher), over counters (0, offset[b] + i), as plain C++.
//
// Words are uint32, so the compiler vectorises the rounds in 32-bit lanes with a native rotate
// (AVX-512: vprold), where inductor's code for the same torch ops holds each word in an int64 and
// rotates with shift, mask and or. Output is the torch version's layout: (B, n, 2) int64 in [0, 2**32).
#include <cstdint>
#include <thread>
#include <vector>

namespace {

inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

constexpr int ROT[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};

// Elements [i0, i1) of row b.
void row_range(uint32_t k0, uint32_t k1, uint64_t offset, int64_t i0, int64_t i1, int64_t* out) {
    const uint32_t ks[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDAu};
    for (int64_t i = i0; i < i1; ++i) {
        uint32_t x0 = ks[0];                                      // counter word 0 is 0
        uint32_t x1 = static_cast<uint32_t>(offset + static_cast<uint64_t>(i)) + ks[1];
        for (int g = 0; g < 5; ++g) {
            for (int j = 0; j < 4; ++j) {
                x0 += x1;
                x1 = rotl(x1, ROT[g % 2][j]) ^ x0;
            }
            x0 += ks[(g + 1) % 3];
            x1 += ks[(g + 2) % 3] + static_cast<uint32_t>(g + 1);
        }
        out[2 * i] = x0;
        out[2 * i + 1] = x1;
    }
}

void span(const int64_t* keys, const int64_t* offsets, int64_t n, int64_t start, int64_t stop, int64_t* out) {
    for (int64_t idx = start; idx < stop;) {
        const int64_t b = idx / n, i0 = idx % n;
        const int64_t i1 = (stop - b * n < n) ? stop - b * n : n;
        row_range(static_cast<uint32_t>(keys[2 * b]), static_cast<uint32_t>(keys[2 * b + 1]),
                  static_cast<uint64_t>(offsets[b]), i0, i1, out + 2 * b * n);
        idx = b * n + i1;
    }
}

}  // namespace

extern "C" void fer_threefry_blocks(const int64_t* keys, const int64_t* offsets, int64_t rows, int64_t n,
                                    int64_t* out, int64_t threads) {
    const int64_t total = rows * n;
    if (threads < 2 || total < 8192) {  // below ~0.1 ms a thread costs more than it saves
        span(keys, offsets, n, 0, total, out);
        return;
    }
    std::vector<std::thread> pool;
    const int64_t per = (total + threads - 1) / threads;
    for (int64_t t = 1; t < threads; ++t) {
        const int64_t s = t * per, e = (s + per < total) ? s + per : total;
        if (s < e) pool.emplace_back(span, keys, offsets, n, s, e, out);
    }
    span(keys, offsets, n, 0, per < total ? per : total, out);
    for (auto& th : pool) th.join();
}
