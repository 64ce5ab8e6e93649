// Runs lstm_bank.cu's kernels on the CPU, so that a machine without a GPU (CI) tests
// the kernel's arithmetic and layouts: every GPU thread of a block is an OS thread,
// __syncthreads a std::barrier, shared memory one static buffer (blocks run one after
// another). The test (src/model/bank/tests.rs) pastes the kernel source where the
// marker line below stands, compiles this with `c++ -std=c++20 -pthread`, and runs it:
//
//   host f32|f64 IN OUT
//
// IN, all little-endian f64: K d h w huber delta adam b1 b2 c1 c2 eps waves; the 18
// stacks (parameters, then AdamW's m, then v; each in the order wih whh bih bhh hw hb,
// the bank's layouts for K keys); then per wave: kind (0 predict, 1 update), n, the
// n key ids, the n windows (n·w·d), and for an update the n targets, learning rates
// and the two bias scales (n each). OUT, f64: per wave its n results (forecasts or
// losses), then the 18 stacks as they end.
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <type_traits>
#include <thread>
#include <vector>

using std::exp;
using std::fabs;
using std::fmax;
using std::fmin;
using std::sqrt;
using std::tanh;

struct Dim3 {
  unsigned x = 0, y = 1, z = 1;
};
thread_local Dim3 threadIdx;
Dim3 blockIdx, blockDim;
static std::barrier<>* block_barrier = nullptr;
static void sync_block() { block_barrier->arrive_and_wait(); }
double smem_raw[1 << 16];

#define __syncthreads() sync_block()
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__

// @KERNEL@

template <typename F>
static void launch(unsigned blocks, unsigned threads, F kernel) {
  blockDim.x = threads;
  for (unsigned b = 0; b < blocks; ++b) {
    blockIdx.x = b;
    std::barrier<> bar(threads);
    block_barrier = &bar;
    std::vector<std::thread> ts;
    for (unsigned j = 0; j < threads; ++j)
      ts.emplace_back([&, j] {
        threadIdx.x = j;
        kernel();
      });
    for (auto& t : ts) t.join();
  }
}

struct In {
  std::ifstream f;
  double next() {
    double v;
    if (!f.read(reinterpret_cast<char*>(&v), sizeof v)) {
      std::fprintf(stderr, "input ends early\n");
      std::exit(2);
    }
    return v;
  }
  template <typename T> std::vector<T> many(size_t n) {
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(next());
    return v;
  }
};

template <typename T> static void put(std::ofstream& o, const std::vector<T>& v) {
  for (T x : v) {
    const double d = static_cast<double>(x);
    o.write(reinterpret_cast<const char*>(&d), sizeof d);
  }
}

template <typename T> static int run(const char* in_path, const char* out_path) {
  constexpr bool f64 = std::is_same_v<T, double>;
  In in{std::ifstream(in_path, std::ios::binary)};
  const size_t K = (size_t)in.next(), d = (size_t)in.next(), h = (size_t)in.next(), w = (size_t)in.next();
  const int huber = (int)in.next();
  const T delta = (T)in.next();
  const int adam = (int)in.next();
  const T b1 = (T)in.next(), b2 = (T)in.next(), c1 = (T)in.next(), c2 = (T)in.next(), eps = (T)in.next();
  const size_t waves = (size_t)in.next();
  const size_t g = 4 * h;
  const size_t sizes[6] = {K * d * g, K * h * g, K * g, K * g, K * h, K};
  std::vector<std::vector<T>> st;
  for (int s = 0; s < 18; ++s) st.push_back(in.template many<T>(sizes[s % 6]));
  std::ofstream out(out_path, std::ios::binary);
  auto P = [&](int s) { return st[s].data(); };
  for (size_t wv = 0; wv < waves; ++wv) {
    const int kind = (int)in.next();
    const size_t n = (size_t)in.next();
    std::vector<unsigned> ids = in.template many<unsigned>(n);
    std::vector<T> x = in.template many<T>(n * w * d);
    std::vector<T> res(n);
    if (kind == 0) {
      launch((unsigned)n, (unsigned)g, [&] {
        if constexpr (f64)
          lstm_bank_predict_f64(ids.data(), x.data(), res.data(), P(0), P(1), P(2), P(3), P(4), P(5), (int)d, (int)h, (int)w);
        else
          lstm_bank_predict_f32(ids.data(), x.data(), res.data(), P(0), P(1), P(2), P(3), P(4), P(5), (int)d, (int)h, (int)w);
      });
    } else {
      std::vector<T> y = in.template many<T>(n), lr = in.template many<T>(n), sm = in.template many<T>(n),
                     sv = in.template many<T>(n);
      launch((unsigned)n, (unsigned)g, [&] {
        if constexpr (f64)
          lstm_bank_update_f64(ids.data(), x.data(), y.data(), lr.data(), sm.data(), sv.data(), res.data(), P(0), P(1), P(2),
                               P(3), P(4), P(5), P(6), P(7), P(8), P(9), P(10), P(11), P(12), P(13), P(14), P(15), P(16),
                               P(17), (int)d, (int)h, (int)w, huber, delta, adam, b1, b2, c1, c2, eps);
        else
          lstm_bank_update_f32(ids.data(), x.data(), y.data(), lr.data(), sm.data(), sv.data(), res.data(), P(0), P(1), P(2),
                               P(3), P(4), P(5), P(6), P(7), P(8), P(9), P(10), P(11), P(12), P(13), P(14), P(15), P(16),
                               P(17), (int)d, (int)h, (int)w, huber, delta, adam, b1, b2, c1, c2, eps);
      });
    }
    put(out, res);
  }
  for (auto& s : st) put(out, s);
  return out.good() ? 0 : 3;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: host f32|f64 IN OUT\n");
    return 2;
  }
  return std::string(argv[1]) == "f64" ? run<double>(argv[2], argv[3]) : run<float>(argv[2], argv[3]);
}
