// The LSTM bank's wave as one CUDA kernel launch (see cuda.rs): one thread block per
// key of the wave, 4h threads (thread j owns gate column j of every weight matrix).
// Compiled at run time by NVRTC. The same arithmetic as the plain-code LstmModel
// (src/model/lstm/mod.rs): candle-nn's cell (gates i, f, g, o), the last hidden state
// through a linear head, backpropagation through time, then AdamW or SGD in place.
//
// Parameter layouts, per key (the bank's stacks, contiguous [K, rows, cols]):
//   wih: W_ihᵀ [d, 4h]   whh: W_hhᵀ [h, 4h]   bih, bhh: [4h]   hw: [h]   hb: [1]
// Moments m, v alike. Shared memory per block (elements of T):
//   xs[w·d] acts[w·4h] cells[w·h] tanhc[w·h] hid[w·h] dpre[w·4h] dh[h] dc[h] scal[2]

// Parameters stepped together in the update's optimizer step (see update_impl): 1
// unless NVRTC is given another by TICKFLARE_BANK_STEP_CHUNK.
#ifndef TF_STEP_CHUNK
#define TF_STEP_CHUNK 1
#endif

template <typename T> __device__ __forceinline__ T sigm(T x) { return T(1) / (T(1) + exp(-x)); }

template <typename T> struct Stack {
  T *wih, *whh, *bih, *bhh, *hw, *hb;
};

template <typename T>
__device__ __forceinline__ Stack<T> key_rows(T* wih, T* whh, T* bih, T* bhh, T* hw, T* hb, size_t k, int d, int h) {
  const size_t g = 4 * (size_t)h;
  Stack<T> s;
  s.wih = wih + k * d * g;
  s.whh = whh + k * h * g;
  s.bih = bih + k * g;
  s.bhh = bhh + k * g;
  s.hw = hw + k * h;
  s.hb = hb + k;
  return s;
}

// Element `at` of one of a key's column-owned stacks: 0 bih, 1 bhh, 2 wih, 3 whh.
template <typename T> __device__ __forceinline__ T* column_cell(const Stack<T>& s, int which, size_t at) {
  return (which == 0 ? s.bih : which == 1 ? s.bhh : which == 2 ? s.wih : s.whh) + at;
}

// Column j's weight gradients, summed over the window from the gate gradients dpre:
// a bias (both biases have this one), row i of W_ihᵀ, row kk of W_hhᵀ.
template <typename T> __device__ __forceinline__ T bias_grad(const T* dpre, int g, int w, int j) {
  T gb = T(0);
  for (int t = 0; t < w; ++t) gb += dpre[t * g + j];
  return gb;
}
template <typename T> __device__ __forceinline__ T wih_grad(const T* xs, const T* dpre, int d, int g, int w, int j, int i) {
  T gw = T(0);
  for (int t = 0; t < w; ++t) gw += xs[t * d + i] * dpre[t * g + j];
  return gw;
}
template <typename T> __device__ __forceinline__ T whh_grad(const T* hid, const T* dpre, int h, int g, int w, int j, int kk) {
  T gw = T(0);
  for (int t = 1; t < w; ++t) gw += hid[(t - 1) * h + kk] * dpre[t * g + j];
  return gw;
}

// The block's shared memory, cut as the header says.
template <typename T> struct Smem {
  T *xs, *acts, *cells, *tanhc, *hid, *dpre, *dh, *dc, *scal;
};

// Cuts the block's shared memory and copies the key's window `x` into it.
template <typename T> __device__ Smem<T> carve(int d, int h, int w, const T* x) {
  extern __shared__ double smem_raw[];
  const int g = 4 * h;
  Smem<T> s;
  s.xs = reinterpret_cast<T*>(smem_raw);
  s.acts = s.xs + w * d;
  s.cells = s.acts + w * g;
  s.tanhc = s.cells + w * h;
  s.hid = s.tanhc + w * h;
  s.dpre = s.hid + w * h;
  s.dh = s.dpre + w * g;
  s.dc = s.dh + h;
  s.scal = s.dc + h;
  for (int i = threadIdx.x; i < w * d; i += blockDim.x) s.xs[i] = x[i];
  __syncthreads();
  return s;
}

// Forward over the window (already in xs); returns the forecast in every thread.
template <typename T>
__device__ T forward(const Stack<T>& p, int d, int h, int w, const T* xs, T* acts, T* cells, T* tanhc, T* hid, T* scal) {
  const int g = 4 * h;
  const int j = threadIdx.x;
  for (int t = 0; t < w; ++t) {
    if (j < g) {
      T a = p.bih[j];
      for (int i = 0; i < d; ++i) a += xs[t * d + i] * p.wih[i * g + j];
      T b = p.bhh[j];
      if (t > 0)
        for (int k = 0; k < h; ++k) b += hid[(t - 1) * h + k] * p.whh[k * g + j];
      const T pre = a + b;
      acts[t * g + j] = (j >= 2 * h && j < 3 * h) ? tanh(pre) : sigm(pre);
    }
    __syncthreads();
    if (j < h) {
      const T prev = t > 0 ? cells[(t - 1) * h + j] : T(0);
      const T c = acts[t * g + h + j] * prev + acts[t * g + j] * acts[t * g + 2 * h + j];
      cells[t * h + j] = c;
      const T tc = tanh(c);
      tanhc[t * h + j] = tc;
      hid[t * h + j] = acts[t * g + 3 * h + j] * tc;
    }
    __syncthreads();
  }
  if (j == 0) {
    T s = T(0);
    for (int k = 0; k < h; ++k) s += hid[(w - 1) * h + k] * p.hw[k];
    scal[0] = s + p.hb[0];
  }
  __syncthreads();
  return scal[0];
}

template <typename T>
__device__ __forceinline__ void step(T* th, T* m, T* v, T gr, int adam, T lr, T b1, T b2, T c1, T c2, T eps, T sm, T sv) {
  if (adam) {
    const T mm = m[0] * b1 + gr * c1;
    const T vv = v[0] * b2 + gr * gr * c2;
    m[0] = mm;
    v[0] = vv;
    th[0] -= mm * sm / (sqrt(vv * sv) + eps) * lr;
  } else {
    th[0] -= gr * lr;
  }
}

template <typename T>
__device__ void predict_impl(const unsigned* ids, const T* x, T* out, T* wih, T* whh, T* bih, T* bhh, T* hw, T* hb,
                             int d, int h, int w) {
  const size_t n = blockIdx.x;
  const Smem<T> s = carve<T>(d, h, w, x + n * w * d);
  const Stack<T> p = key_rows(wih, whh, bih, bhh, hw, hb, ids[n], d, h);
  const T pred = forward(p, d, h, w, s.xs, s.acts, s.cells, s.tanhc, s.hid, s.scal);
  if (threadIdx.x == 0) out[n] = pred;
}

template <typename T>
__device__ void update_impl(const unsigned* ids, const T* x, const T* y, const T* lrs, const T* scale_m, const T* scale_v,
                            T* loss_out, T* wih, T* whh, T* bih, T* bhh, T* hw, T* hb, T* mwih, T* mwhh, T* mbih,
                            T* mbhh, T* mhw, T* mhb, T* vwih, T* vwhh, T* vbih, T* vbhh, T* vhw, T* vhb, int d, int h,
                            int w, int huber, T delta, int adam, T b1, T b2, T c1, T c2, T eps) {
  const int g = 4 * h;
  const int j = threadIdx.x;
  const size_t n = blockIdx.x;
  const size_t k = ids[n];
  const Smem<T> s = carve<T>(d, h, w, x + n * w * d);
  T *xs = s.xs, *acts = s.acts, *cells = s.cells, *tanhc = s.tanhc, *hid = s.hid, *dpre = s.dpre, *dh = s.dh, *dc = s.dc,
    *scal = s.scal;
  const Stack<T> p = key_rows(wih, whh, bih, bhh, hw, hb, k, d, h);
  const T pred = forward(p, d, h, w, xs, acts, cells, tanhc, hid, scal);
  // The loss and its derivative in the forecast (as LstmModel::loss_grad).
  const T e = pred - y[n];
  T dpred;
  if (huber) {
    const T a = fabs(e);
    const T q = fmin(a, delta);
    if (j == 0) loss_out[n] = T(0.5) * q * q + delta * (a - q);
    dpred = fmin(fmax(e, -delta), delta);
  } else {
    if (j == 0) loss_out[n] = e * e;
    dpred = T(2) * e;
  }
  const T* last = hid + (w - 1) * h;
  if (j < h) {
    dh[j] = p.hw[j] * dpred;
    dc[j] = T(0);
  }
  __syncthreads();
  for (int t = w - 1; t >= 0; --t) {
    if (j < h) {
      const T i_ = acts[t * g + j], f = acts[t * g + h + j], gg = acts[t * g + 2 * h + j], o = acts[t * g + 3 * h + j];
      const T tc = tanhc[t * h + j];
      const T c_prev = t > 0 ? cells[(t - 1) * h + j] : T(0);
      const T dck = dc[j] + dh[j] * o * (T(1) - tc * tc);
      dpre[t * g + j] = dck * gg * i_ * (T(1) - i_);
      dpre[t * g + h + j] = dck * c_prev * f * (T(1) - f);
      dpre[t * g + 2 * h + j] = dck * i_ * (T(1) - gg * gg);
      dpre[t * g + 3 * h + j] = dh[j] * tc * o * (T(1) - o);
      dc[j] = dck * f;
    }
    __syncthreads();
    if (t > 0) {
      T acc = T(0);
      if (j < h)
        for (int jj = 0; jj < g; ++jj) acc += p.whh[j * g + jj] * dpre[t * g + jj];
      __syncthreads();
      if (j < h) dh[j] = acc;
      __syncthreads();
    }
  }
  // Every read of the old weights is done: each thread steps its own column.
  const T lr = lrs[n], sm = scale_m[n], sv = scale_v[n];
  const Stack<T> m = key_rows(mwih, mwhh, mbih, mbhh, mhw, mhb, k, d, h);
  const Stack<T> v = key_rows(vwih, vwhh, vbih, vbhh, vhw, vhb, k, d, h);
  // Thread j steps its parameters of column j one at a time (TF_STEP_CHUNK 1, the
  // default), or TF_STEP_CHUNK at a time: the chunk's gradients (from shared memory),
  // then all its loads of θ, m and v, then its steps and stores, so a chunk's loads
  // wait on memory together rather than each after the previous parameter's stores
  // (the pointers may alias, as far as the compiler knows) — at the cost of registers
  // (sm_90, f64: 56 a thread at 1, 128 at 4, 165 at 8), so fewer blocks per SM. An
  // experiment for a GPU run (TICKFLARE_BANK_STEP_CHUNK); either form computes each
  // parameter as `step` does, to the bit (tested on the CPU).
#if TF_STEP_CHUNK <= 1
  if (j < g) {
    const T gb = bias_grad(dpre, g, w, j);
    step(p.bih + j, m.bih + j, v.bih + j, gb, adam, lr, b1, b2, c1, c2, eps, sm, sv);
    step(p.bhh + j, m.bhh + j, v.bhh + j, gb, adam, lr, b1, b2, c1, c2, eps, sm, sv);
    for (int i = 0; i < d; ++i) {
      const T gw = wih_grad(xs, dpre, d, g, w, j, i);
      step(p.wih + i * g + j, m.wih + i * g + j, v.wih + i * g + j, gw, adam, lr, b1, b2, c1, c2, eps, sm, sv);
    }
    for (int kk = 0; kk < h; ++kk) {
      const T gw = whh_grad(hid, dpre, h, g, w, j, kk);
      step(p.whh + kk * g + j, m.whh + kk * g + j, v.whh + kk * g + j, gw, adam, lr, b1, b2, c1, c2, eps, sm, sv);
    }
  }
#else
  // Parameter q of the thread: 0, 1 the biases, 2 … 2+d−1 the rows of W_ihᵀ, then
  // the rows of W_hhᵀ.
  if (j < g) {
    const int np = 2 + d + h;
    for (int q0 = 0; q0 < np; q0 += TF_STEP_CHUNK) {
      T gr[TF_STEP_CHUNK], th[TF_STEP_CHUNK], mo[TF_STEP_CHUNK], ve[TF_STEP_CHUNK];
      size_t at[TF_STEP_CHUNK];
      int which[TF_STEP_CHUNK];
#pragma unroll
      for (int c = 0; c < TF_STEP_CHUNK; ++c) {
        const int q = q0 + c;
        if (q < np) {
          if (q < 2) {
            gr[c] = bias_grad(dpre, g, w, j);
            which[c] = q;
            at[c] = j;
          } else if (q < 2 + d) {
            const int i = q - 2;
            gr[c] = wih_grad(xs, dpre, d, g, w, j, i);
            which[c] = 2;
            at[c] = (size_t)i * g + j;
          } else {
            const int kk = q - 2 - d;
            gr[c] = whh_grad(hid, dpre, h, g, w, j, kk);
            which[c] = 3;
            at[c] = (size_t)kk * g + j;
          }
        }
      }
#pragma unroll
      for (int c = 0; c < TF_STEP_CHUNK; ++c) {
        if (q0 + c < np) {
          th[c] = *column_cell(p, which[c], at[c]);
          if (adam) {
            mo[c] = *column_cell(m, which[c], at[c]);
            ve[c] = *column_cell(v, which[c], at[c]);
          }
        }
      }
#pragma unroll
      for (int c = 0; c < TF_STEP_CHUNK; ++c) {
        if (q0 + c < np) {
          // `step` on the loaded values (registers), then the stores.
          step(&th[c], &mo[c], &ve[c], gr[c], adam, lr, b1, b2, c1, c2, eps, sm, sv);
          if (adam) {
            *column_cell(m, which[c], at[c]) = mo[c];
            *column_cell(v, which[c], at[c]) = ve[c];
          }
          *column_cell(p, which[c], at[c]) = th[c];
        }
      }
    }
  }
#endif
  if (j < h) step(p.hw + j, m.hw + j, v.hw + j, last[j] * dpred, adam, lr, b1, b2, c1, c2, eps, sm, sv);
  if (j == 0) step(p.hb, m.hb, v.hb, dpred, adam, lr, b1, b2, c1, c2, eps, sm, sv);
}

#define BANK_KERNELS(T, S)                                                                                            \
  extern "C" __global__ void lstm_bank_predict_##S(const unsigned* ids, const T* x, T* out, T* wih, T* whh, T* bih,   \
                                                   T* bhh, T* hw, T* hb, int d, int h, int w) {                       \
    predict_impl<T>(ids, x, out, wih, whh, bih, bhh, hw, hb, d, h, w);                                               \
  }                                                                                                                   \
  extern "C" __global__ void lstm_bank_update_##S(                                                                   \
      const unsigned* ids, const T* x, const T* y, const T* lrs, const T* scale_m, const T* scale_v, T* loss_out,     \
      T* wih, T* whh, T* bih, T* bhh, T* hw, T* hb, T* mwih, T* mwhh, T* mbih, T* mbhh, T* mhw, T* mhb, T* vwih,       \
      T* vwhh, T* vbih, T* vbhh, T* vhw, T* vhb, int d, int h, int w, int huber, T delta, int adam, T b1, T b2, T c1, \
      T c2, T eps) {                                                                                                  \
    update_impl<T>(ids, x, y, lrs, scale_m, scale_v, loss_out, wih, whh, bih, bhh, hw, hb, mwih, mwhh, mbih, mbhh,    \
                   mhw, mhb, vwih, vwhh, vbih, vbhh, vhw, vhb, d, h, w, huber, delta, adam, b1, b2, c1, c2, eps);     \
  }

BANK_KERNELS(float, f32)
BANK_KERNELS(double, f64)
