// The gemm path of gaussian_mixture::evaluate: the host API (path choice, options, empirical mixtures) and the CPU
// executor, which runs the two matrix products of each block of points and chunk of components through a BLAS
// (sgemm) when one was found at build time, or through the library's own loops otherwise, and the per-point work of
// kernels/mixture_gemm.cuh around them, on the CPU thread pool.
//
// BLAS threading: the pool's threads call sgemm on disjoint blocks, each call single-threaded (a threaded OpenBLAS's
// thread count is set to 1 once), so the CPU executor uses cpu_threads() threads in all. The calls run concurrently
// under OpenBLAS's pthreads build (libopenblas-pthread-dev, which scripts/install-deps.sh installs) and one at a time
// under any other BLAS (a lock: Debian's serial OpenBLAS gave wrong values under concurrent calls); see
// blas_calls_serialised().
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/mixture_gemm.cuh"
#include "src/cpu/pool.hpp"
#include "src/mixture_gemm.hpp"
#include "src/mixture_storage.hpp"
#include "src/mixture_unchecked.hpp"
#include "src/operator_gemm.hpp"
#include "src/option_readers.hpp"
#include "src/validate.hpp"
#include "src/limits.hpp"
#include <diffsample/error.hpp>
#include <diffsample/mixture.hpp>

#if defined(DIFFSAMPLE_HAVE_BLAS)
extern "C" {
// The reference BLAS interface (column-major), as every BLAS exports it.
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
#if defined(DIFFSAMPLE_HAVE_OPENBLAS)
int openblas_get_parallel(void);
void openblas_set_num_threads(int);
char* openblas_get_config(void);
#endif
}
#endif

namespace diffsample {

gemm_crossover_rule gemm_crossover(executor where) noexcept {
  // Measured by `bench_mixture_gemm crossover` (README, "Large mixtures: the GEMM path") on the CPU executor, twice:
  // the direct path packs points into SIMD lanes and stays ahead up to d = 128 (ratios 0.03 to 0.9 at K <= 4096);
  // at d = 256 the gemm path is ahead from K x d = 2^14 (1.04 to 3.8), and far ahead once the means no longer fit
  // in cache (21x at K = 50,000, d = 3,072).
  // On the CUDA executor (`bench_mixture_gemm cuda crossover` on an H200, 65536 points a call, README): at d = 2 the
  // direct path is 18 to 20x ahead at every K; at d = 16 the gemm path is ahead from K = 256 (1.24 to 1.43), at
  // d = 64 from K = 64 (2.7 to 9.3), at d = 256 (4 to 34) and d = 1024 (4.4 at K = 64): the rule {16, 4096} sends
  // none of the 25 cells measured to the slower path.
  if (where == executor::cuda) return {16, 1 << 12};
  return {256, 1 << 14};
}

bool cpu_blas_available() noexcept {
#if defined(DIFFSAMPLE_HAVE_BLAS)
  return true;
#else
  return false;
#endif
}

std::string cpu_blas_name() {
#if defined(DIFFSAMPLE_HAVE_OPENBLAS)
  std::string s = openblas_get_config();
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
#elif defined(DIFFSAMPLE_HAVE_BLAS)
  return "BLAS (sgemm_)";
#else
  return "none";
#endif
}

namespace detail {

namespace {

#if defined(DIFFSAMPLE_HAVE_BLAS)
// Concurrent BLAS calls from the pool's threads. OpenBLAS's pthreads build (openblas_get_parallel() == 1; Debian's
// libopenblas-pthread-dev, which scripts/install-deps.sh installs) guards its buffers and is called from every
// thread at once, each call single-threaded (configure_blas_threads). Its serial build is not safe for concurrent
// callers unless built with USE_LOCKING, which it does not report (Debian's libopenblas0-serial: GemmPath.
// ChunkingInvariance gave wrong values in 2 runs of 6 with the pool's two threads calling it at once; 10 of 10 right
// with the calls serialised), so there, under an OpenMP build (not verified here) and with any other BLAS, every
// call goes through one lock and the products run on one thread at a time while the per-point work around them uses
// every thread.
std::mutex& blas_mutex() {
  static std::mutex m;
  return m;
}

#if defined(DIFFSAMPLE_HAVE_OPENBLAS)
// OpenBLAS's version from its configuration string ("OpenBLAS 0.3.21 DYNAMIC_ARCH ..."), as major * 10000 + minor *
// 100 + patch; 0 when it does not parse.
int openblas_version() {
  int major = 0, minor = 0, patch = 0;
  const char* config = openblas_get_config();
  if (config == nullptr || std::sscanf(config, "OpenBLAS %d.%d.%d", &major, &minor, &patch) != 3) return 0;
  return major * 10000 + minor * 100 + patch;
}
#endif

bool blas_calls_serialised() {
#if defined(DIFFSAMPLE_HAVE_OPENBLAS)
  // Pthreads builds before 0.3.7 still raced in their buffer allocation under concurrent callers.
  static const bool serialised = openblas_get_parallel() != 1 || openblas_version() < 307;
  return serialised;
#else
  return true;
#endif
}

void configure_blas_threads() {
#if defined(DIFFSAMPLE_HAVE_OPENBLAS)
  static std::once_flag once;
  std::call_once(once, [] {
    if (openblas_get_parallel() != 0) openblas_set_num_threads(1);  // the pool parallelises; the BLAS must not
  });
#endif
}

// What every BLAS call goes through: the BLAS's threads configured (once), then the lock of the call, held where
// blas_calls_serialised(), empty elsewhere.
std::unique_lock<std::mutex> blas_call_lock() {
  configure_blas_threads();
  return blas_calls_serialised() ? std::unique_lock<std::mutex>(blas_mutex()) : std::unique_lock<std::mutex>();
}
#endif

// G (rows x cols, row-major) = X (rows x d) M^T, M cols x d row-major.
void product_logits(int rows, int cols, int d, const float* X, const float* M, float* G) {
#if defined(DIFFSAMPLE_HAVE_BLAS)
  const char ta = 'T', tb = 'N';
  const float one = 1.f, zero = 0.f;
  const std::unique_lock<std::mutex> lock = blas_call_lock();
  sgemm_(&ta, &tb, &cols, &rows, &d, &one, M, &d, X, &d, &zero, G, &cols);
#else
  for (int i = 0; i < rows; ++i)
    for (int k = 0; k < cols; ++k) {
      const float* x = X + std::int64_t(i) * d;
      const float* m = M + std::int64_t(k) * d;
      float acc = 0.f;
      for (int j = 0; j < d; ++j) acc += x[j] * m[j];
      G[std::int64_t(i) * cols + k] = acc;
    }
#endif
}

// A (rows x d, row-major) += W (rows x cols) M, M cols x d row-major.
void product_means(int rows, int cols, int d, const float* W, const float* M, float* A) {
#if defined(DIFFSAMPLE_HAVE_BLAS)
  const char ta = 'N', tb = 'N';
  const float one = 1.f;
  const std::unique_lock<std::mutex> lock = blas_call_lock();
  sgemm_(&ta, &tb, &d, &rows, &cols, &one, M, &d, W, &cols, &one, A, &d);
#else
  for (int i = 0; i < rows; ++i) {
    float* a = A + std::int64_t(i) * d;
    for (int k = 0; k < cols; ++k) {
      const float w = W[std::int64_t(i) * cols + k];
      if (w == 0.f) continue;
      const float* m = M + std::int64_t(k) * d;
      for (int j = 0; j < d; ++j) a[j] += w * m[j];
    }
  }
#endif
}

#if !defined(DIFFSAMPLE_HAVE_BLAS)
// C = alpha op(A) op(B) + beta C, column-major, on the library's own loops (builds without a BLAS).
template <class T>
void loops_gemm(char transa, char transb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb,
                T beta, T* C, int ldc) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      T acc = 0;
      for (int l = 0; l < k; ++l) {
        const T a = transa == 'N' ? A[i + std::int64_t(l) * lda] : A[l + std::int64_t(i) * lda];
        const T b = transb == 'N' ? B[l + std::int64_t(j) * ldb] : B[j + std::int64_t(l) * ldb];
        acc += a * b;
      }
      T& c = C[i + std::int64_t(j) * ldc];
      c = alpha * acc + (beta == T(0) ? T(0) : beta * c);
    }
}
#endif

// C = alpha op(A) op(B) + beta C through the BLAS's sgemm / dgemm (under blas_call_lock), or the library's own loops.
template <class T>
void blas_gemm(char transa, char transb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb, T beta,
               T* C, int ldc) {
#if defined(DIFFSAMPLE_HAVE_BLAS)
  const std::unique_lock<std::mutex> lock = blas_call_lock();
  if constexpr (std::is_same_v<T, float>)
    sgemm_(&transa, &transb, &m, &n, &k, &alpha, A, &lda, B, &ldb, &beta, C, &ldc);
  else
    dgemm_(&transa, &transb, &m, &n, &k, &alpha, A, &lda, B, &ldb, &beta, C, &ldc);
#else
  loops_gemm(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

}  // namespace

void cpu_sgemm(char transa, char transb, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
               int ldb, float beta, float* C, int ldc) {
  blas_gemm(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cpu_dgemm(char transa, char transb, int m, int n, int k, double alpha, const double* A, int lda,
               const double* B, int ldb, double beta, double* C, int ldc) {
  blas_gemm(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

namespace {

constexpr std::int64_t cpu_default_block = 128;
constexpr std::int64_t default_chunk = 512;
// Tasks per call the CPU executor aims at (blocks of points x splits of the components). A constant, not the thread
// count, so that results do not depend on the number of threads.
constexpr std::int64_t cpu_target_tasks = 16;

struct cpu_call {
  const gemm_tables* t;
  const kernels::gemm_component* comp;
  const kernels::gemm_chunk_bound* bounds;  // per chunk of `chunk` components (chunk starts are multiples of it)
  const float* x;
  float* out;
  std::int64_t n, K, d, block, chunk, blocks, splits, per_split;
  float a, s2, gamma;
  float inv_scale;                                     // 1 / gemm_weight_scale of the channel
  double a64;                                          // the channel's a, for the JVP's last factor
  int what;                                            // 0 log-density, 1 score, 2 denoiser, 3 denoiser JVP
  const float* v;                                      // JVP: the directions, n x d
  std::vector<kernels::gemm_point_state>* part_state;  // splits x n, when splits > 1
  std::vector<float>* part_acc;                        // splits x n x d, when splits > 1 and what != 0
};

// x' = x - a m for `rows` points; |x'| and |x'|^2 (accumulated in FP64).
void centre_rows(const cpu_call& c, std::int64_t first, std::int64_t rows, float* xc, float* xn, float* xx) {
  const std::int64_t d = c.d;
  const float* m = c.t->centre32.data();
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xi = c.x + (first + r) * d;
    float* o = xc + r * d;
    double q = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      o[j] = xi[j] - c.a * m[j];
      q += double(o[j]) * o[j];
    }
    xx[r] = float(q);
    xn[r] = float(std::sqrt(q));
  }
}

void cpu_task(void* context, std::int64_t begin, std::int64_t end) {
  const cpu_call& c = *static_cast<const cpu_call*>(context);
  thread_local std::vector<float> xc, G, acc, xn, xx, H, acc2;
  thread_local std::vector<kernels::gemm_point_state> st;
  thread_local std::vector<kernels::gemm_jvp_state> js;
  const std::int64_t d = c.d;
  for (std::int64_t task = begin; task < end; ++task) {
    const std::int64_t b = task / c.splits, sp = task % c.splits;
    const std::int64_t first = b * c.block, rows = std::min(c.block, c.n - first);
    xc.resize(std::size_t(rows * d));
    xn.resize(std::size_t(rows));
    xx.resize(std::size_t(rows));
    G.resize(std::size_t(rows * c.chunk));
    st.assign(std::size_t(rows), kernels::gemm_point_state{-INFINITY, 0.f, 0.f, 0.f});
    const bool with_acc = c.what == 1 || c.what == 2;
    if (with_acc) acc.assign(std::size_t(rows * d), 0.f);
    centre_rows(c, first, rows, xc.data(), xn.data(), xx.data());
    const bool jvp = c.what == 3;
    const std::int64_t k_begin = sp * c.per_split, k_end = std::min(c.K, k_begin + c.per_split);
    const float* means = c.t->means32.data();
    if (jvp) {
      // Two passes over the components (kernels/mixture_gemm.cuh): softmax statistics and pbar, then
      // sum_k (B_k / c_k) mu'_k and sum_k B_k e_k.
      H.resize(std::size_t(rows * c.chunk));
      acc2.assign(std::size_t(rows * d), 0.f);
      js.assign(std::size_t(rows), kernels::gemm_jvp_state{0.f, 0.f, 0.f, 0.f, 0.f, -INFINITY, 0});
      for (std::int64_t r = 0; r < rows; ++r) {
        double q = 0;
        for (std::int64_t j = 0; j < d; ++j) q += double(xc[r * d + j]) * c.v[(first + r) * d + j];
        js[r].xv = float(q);
      }
      for (std::int64_t k0 = k_begin; k0 < k_end; k0 += c.chunk) {
        const int count = int(std::min(c.chunk, k_end - k0));
        product_logits(int(rows), count, int(d), xc.data(), means + k0 * d, G.data());
        product_logits(int(rows), count, int(d), c.v + first * d, means + k0 * d, H.data());
        for (std::int64_t r = 0; r < rows; ++r)
          kernels::gemm_chunk_row(G.data() + r * count, count, int(k0), c.comp, xc.data() + r * d, xn[r], xx[r],
                                  means, int(d), c.a, c.gamma, st[r], nullptr, {H.data() + r * count, &js[r]},
                                  c.bounds + k0 / c.chunk);
      }
      for (std::int64_t k0 = k_begin; k0 < k_end; k0 += c.chunk) {
        const int count = int(std::min(c.chunk, k_end - k0));
        product_logits(int(rows), count, int(d), xc.data(), means + k0 * d, G.data());
        product_logits(int(rows), count, int(d), c.v + first * d, means + k0 * d, H.data());
        for (std::int64_t r = 0; r < rows; ++r)
          kernels::gemm_jvp_second_row(G.data() + r * count, H.data() + r * count, js[r], count, int(k0), c.comp,
                                       xc.data() + r * d, xn[r], xx[r], means, int(d), c.a, c.gamma, st[r].max,
                                       js[r].p_sum / st[r].sum, c.bounds + k0 / c.chunk);
        product_means(int(rows), count, int(d), H.data(), means + k0 * d, acc2.data());
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = first + r;
        kernels::gemm_finish_jvp_row(st[r], js[r], acc2.data() + r * d, xc.data() + r * d, c.v + i * d,
                                     means + std::int64_t(js[r].top) * d, c.comp[js[r].top], int(d), c.a64, c.s2, c.inv_scale,
                                     c.out + i * d);
      }
      continue;
    }
    for (std::int64_t k0 = k_begin; k0 < k_end; k0 += c.chunk) {
      const int count = int(std::min(c.chunk, k_end - k0));
      product_logits(int(rows), count, int(d), xc.data(), means + k0 * d, G.data());
      for (std::int64_t r = 0; r < rows; ++r)
        kernels::gemm_chunk_row(G.data() + r * count, count, int(k0), c.comp, xc.data() + r * d, xn[r], xx[r], means,
                                int(d), c.a, c.gamma, st[r], with_acc ? acc.data() + r * d : nullptr,
                                {nullptr, nullptr}, c.bounds + k0 / c.chunk);
      if (with_acc) product_means(int(rows), count, int(d), G.data(), means + k0 * d, acc.data());
    }
    if (c.splits == 1) {
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = first + r;
        kernels::gemm_finish_row(c.what, st[r], with_acc ? acc.data() + r * d : nullptr, xc.data() + r * d,
                                 c.x + i * d, c.t->centre32.data(), int(d), c.a, c.s2, c.inv_scale,
                                 c.what == 0 ? c.out + i : c.out + i * d);
      }
    } else {
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = first + r;
        (*c.part_state)[std::size_t(sp * c.n + i)] = st[r];
        if (with_acc) std::memcpy(c.part_acc->data() + (sp * c.n + i) * d, acc.data() + r * d, sizeof(float) * d);
      }
    }
  }
}

// Splits > 1: merges each point's partial states in split order (a fixed order: deterministic) and finishes it.
void cpu_merge(void* context, std::int64_t begin, std::int64_t end) {
  const cpu_call& c = *static_cast<const cpu_call*>(context);
  const std::int64_t d = c.d;
  thread_local std::vector<float> xc, acc;
  xc.resize(std::size_t(d));
  acc.resize(std::size_t(d));
  for (std::int64_t i = begin; i < end; ++i) {
    kernels::gemm_point_state s{-INFINITY, 0.f, 0.f, 0.f};
    const bool with_acc = c.what != 0;
    if (with_acc) std::fill(acc.begin(), acc.end(), 0.f);
    for (std::int64_t sp = 0; sp < c.splits; ++sp)
      kernels::gemm_merge(s, with_acc ? acc.data() : nullptr, (*c.part_state)[std::size_t(sp * c.n + i)],
                          with_acc ? c.part_acc->data() + (sp * c.n + i) * d : nullptr, int(d));
    float xn, xx;
    centre_rows(c, i, 1, xc.data(), &xn, &xx);
    kernels::gemm_finish_row(c.what, s, with_acc ? acc.data() : nullptr, xc.data(), c.x + i * d,
                             c.t->centre32.data(), int(d), c.a, c.s2, c.inv_scale, c.what == 0 ? c.out + i : c.out + i * d);
  }
}

void gemm_evaluate_cpu(const mixture_storage& st, const gemm_tables& t, int what, const float* x, const float* v,
                       std::int64_t n, channel ch, float* out, const evaluate_options& o) {
  const std::int64_t K = st.components, d = st.dim;
  std::vector<kernels::gemm_component> comp(static_cast<std::size_t>(K));
  const double scale = kernels::gemm_weight_scale(t.smallest_variance, ch.a, ch.s);
  const kernels::gemm_component_functor fill{st.log_weights32.data(), st.variances32.data(), t.norms2.data(),
                                             comp.data(), int(d), ch.a, ch.s, scale};
  for (std::int64_t k = 0; k < K; ++k) fill(k);
  cpu_call c{};
  c.t = &t;
  c.comp = comp.data();
  const std::int64_t chunk = gemm_chunk(o, K);
  std::vector<kernels::gemm_chunk_bound> bounds(std::size_t((K + chunk - 1) / chunk), {0.f, 0.f, 0.f});
  for (std::int64_t k = 0; k < K; ++k) {
    kernels::gemm_chunk_bound& b = bounds[std::size_t(k / chunk)];
    b.inv_c = std::max(b.inv_c, comp[k].inv_c);
    b.norm = std::max(b.norm, comp[k].norm);
    b.log_norm = std::max(b.log_norm, std::abs(comp[k].log_norm));
  }
  c.bounds = bounds.data();
  c.x = x;
  c.out = out;
  c.n = n;
  c.K = K;
  c.d = d;
  c.block = o.point_block > 0 ? o.point_block : cpu_default_block;
  c.chunk = gemm_chunk(o, K);
  c.blocks = (n + c.block - 1) / c.block;
  const std::int64_t chunks = (K + c.chunk - 1) / c.chunk;
  c.splits = std::min(chunks, std::max<std::int64_t>(1, (cpu_target_tasks + c.blocks - 1) / c.blocks));
  c.per_split = (chunks + c.splits - 1) / c.splits * c.chunk;
  c.splits = (K + c.per_split - 1) / c.per_split;  // no empty split
  if (what == 3) {  // the JVP keeps every block's components in one task (no partial states to merge)
    c.splits = 1;
    c.per_split = K;
  }
  c.a = float(ch.a);
  c.a64 = ch.a;
  c.s2 = float(ch.s * ch.s);
  c.inv_scale = float(1.0 / scale);
  const double u = std::ldexp(1.0, -24);
  c.gamma = float(double(d) * u / (1 - double(d) * u));
  c.what = what;
  c.v = v;
  std::vector<kernels::gemm_point_state> part_state;
  std::vector<float> part_acc;
  if (c.splits > 1) {
    part_state.resize(std::size_t(c.splits * n));
    if (c.what != 0) part_acc.resize(std::size_t(c.splits * n * d));
  }
  c.part_state = &part_state;
  c.part_acc = &part_acc;
  cpu::parallel_for(c.blocks * c.splits, 1, cpu_task, &c);
  if (c.splits > 1) cpu::parallel_for(n, std::max<std::int64_t>(1, n / 64), cpu_merge, &c);
}

}  // namespace

gemm_tables::~gemm_tables() { gemm_release_device(*this); }

const gemm_tables& gemm_tables_for(const mixture_storage& st, executor where) {
  std::lock_guard<std::mutex> lock(st.gemm_mutex);
  if (!st.gemm) {
    auto t = std::make_shared<gemm_tables>();
    const std::int64_t K = st.components, d = st.dim;
    t->centre.assign(std::size_t(d), 0.0);
    for (std::int64_t k = 0; k < K; ++k)
      for (std::int64_t j = 0; j < d; ++j) t->centre[j] += st.means[k * d + j];
    for (double& v : t->centre) v /= double(K);
    t->centre32.assign(t->centre.begin(), t->centre.end());
    t->means32.resize(std::size_t(K * d));
    t->norms2.assign(std::size_t(K), 0.0);
    for (std::int64_t k = 0; k < K; ++k) {
      double q = 0;
      for (std::int64_t j = 0; j < d; ++j) {
        // The centred mean is rounded once; its norm is that of the rounded value, so that bias and product agree.
        const float m = float(st.means[k * d + j] - t->centre[j]);
        t->means32[k * d + j] = m;
        q += double(m) * m;
      }
      t->norms2[k] = q;
    }
    t->smallest_variance = double(*std::min_element(st.variances32.begin(), st.variances32.end()));
    st.gemm = std::move(t);
  }
  if (where == executor::cuda && !st.gemm_device_ready) {
    gemm_prepare_device(st, *st.gemm);
    st.gemm_device_ready = true;
  }
  return *st.gemm;
}

namespace {

// The first gemm-path call of a mixture on the CUDA executor builds its device tables and cuBLAS handle
// (gemm_prepare_device: cudaMalloc, uploads that synchronise the legacy stream, cublasCreate), none of which a stream
// capture can record: cudaMalloc and the synchronisation are prohibited under capture (or join and break a blocking
// stream's), and cublasCreate allocates outside any stream. Under capture that call is refused before anything runs,
// naming the remedy, instead of failing inside the CUDA runtime or cuBLAS; once the tables exist every call is
// capturable (with a caller workspace: cuBLAS works in the workspace given to cublasSetWorkspace).
void check_gemm_capture(const mixture_storage& st, cudaStream_t stream) {
  bool ready;
  {
    std::lock_guard<std::mutex> lock(st.gemm_mutex);
    ready = st.gemm_device_ready;
  }
  DIFFSAMPLE_EXPECTS(ready || !stream_capturing(stream),
                     "exec.stream: is being captured into a CUDA graph, and this first gemm-path call of the mixture "
                     "on the CUDA executor would build its device tables and cuBLAS handle (cudaMalloc, synchronised "
                     "uploads, cublasCreate), which a capture cannot record: call prepare_gemm(executor::cuda) on the "
                     "mixture before the capture begins");
}

}  // namespace

std::int64_t gemm_chunk(const evaluate_options& o, std::int64_t K) {
  const std::int64_t c = o.component_chunk > 0 ? o.component_chunk : default_chunk;
  return std::min(c, K);
}

void check_evaluate_options(const evaluate_options& o) {
  // The gemm path's sizes whatever the path (a negative chunk passed on the direct path), and on the direct path,
  // which reads none of the gemm path's settings, each at its default (README: "Options a method does not read").
  limits::check("options.component_chunk", o.component_chunk, 0, limits::max_gemm_tile);
  limits::check("options.point_block", o.point_block, 0, limits::max_gemm_tile);
  // Each field's row in src/option_readers.hpp.
  const evaluate_options d;
  const std::string method = std::string("path ") + to_string(o.path);
#define DIFFSAMPLE_EVALUATE_CHECK_(F, R, W, V)                                                         \
  static_assert(read_when::W == read_when::always, "a path reads a field or not");                     \
  check_unread_row("options." #F, o.F, d.F, V, (evaluate_readers::R & methods(o.path)) != 0 ? std::string() : method);
  DIFFSAMPLE_EVALUATE_OPTION_READERS(DIFFSAMPLE_EVALUATE_CHECK_)
#undef DIFFSAMPLE_EVALUATE_CHECK_
}

mixture_path choose_path(const mixture_storage& st, quantity, std::int64_t, executor where,
                         const evaluate_options& o) {
  check_evaluate_options(o);
  if (o.path == mixture_path::direct) return mixture_path::direct;
  if (o.path == mixture_path::gemm) {
    DIFFSAMPLE_EXPECTS(st.isotropic, "options.path: gemm needs an isotropic mixture (variances given as K values); "
                                     "this one has diagonal variances");
    return mixture_path::gemm;
  }
  DIFFSAMPLE_EXPECTS(o.path == mixture_path::automatic,
                     "options.path: invalid value " << static_cast<int>(o.path));
  if (!st.isotropic) return mixture_path::direct;
  if (where == executor::cpu && !cpu_blas_available()) return mixture_path::direct;
  const gemm_crossover_rule rule = gemm_crossover(where);
  return st.dim >= rule.min_dim && st.components * st.dim >= rule.min_kd ? mixture_path::gemm : mixture_path::direct;
}

evaluate_report gemm_evaluate(const mixture_storage& st, quantity what, const float* x, std::int64_t n, channel ch,
                              float* out, const evaluate_options& o, executor where, cudaStream_t stream,
                              void* workspace, std::size_t workspace_bytes) {
  limits::check("options.component_chunk", o.component_chunk, 0, limits::max_gemm_tile);
  limits::check("options.point_block", o.point_block, 0, limits::max_gemm_tile);
  if (n == 0) return {where, mixture_path::gemm};
  if (where == executor::cuda) check_gemm_capture(st, stream);
  const gemm_tables& t = gemm_tables_for(st, where);
  if (where == executor::cuda) {
    gemm_evaluate_cuda(st, t, what, x, n, ch, out, o, stream, workspace, workspace_bytes);
  } else {
    gemm_evaluate_cpu(st, t, what == quantity::log_density ? 0 : what == quantity::score ? 1 : 2, x, nullptr, n, ch,
                      out, o);
  }
  return {where, mixture_path::gemm};
}

evaluate_report gemm_denoiser_jvp(const mixture_storage& st, const float* x, const float* v, std::int64_t n,
                                  channel ch, float* out, const evaluate_options& o, executor where,
                                  cudaStream_t stream) {
  limits::check("options.component_chunk", o.component_chunk, 0, limits::max_gemm_tile);
  limits::check("options.point_block", o.point_block, 0, limits::max_gemm_tile);
  if (n == 0) return {where, mixture_path::gemm};
  if (where == executor::cuda) check_gemm_capture(st, stream);
  if (where == executor::cuda)
    gemm_denoiser_jvp_cuda(st, gemm_tables_for(st, executor::cuda), x, v, n, ch, out, o, stream);
  else
    gemm_evaluate_cpu(st, gemm_tables_for(st, executor::cpu), 3, x, v, n, ch, out, o);
  return {where, mixture_path::gemm};
}

}  // namespace detail

// --- gaussian_mixture members of the path choice -----------------------------------------------------------------

executor gaussian_mixture::evaluate(float* out, std::int64_t n, const float* x, channel ch, quantity what,
                                    execution exec) const {
  return evaluate(out, n, x, ch, what, evaluate_options{}, exec).ran;
}

evaluate_report gaussian_mixture::evaluate(float* out, std::int64_t n, const float* x, channel ch, quantity what,
                                           const evaluate_options& options, execution exec, void* workspace,
                                           std::size_t workspace_bytes) const {
  DIFFSAMPLE_EXPECTS(what == quantity::log_density || what == quantity::score || what == quantity::denoiser,
                     "what: invalid quantity " << static_cast<int>(what));
  const std::int64_t d = dim();
  detail::check_count("n", n, d);
  detail::check_channel("ch", ch);
  detail::check_mixture_channel(*storage_, "ch", ch);
  const executor where = detail::resolve_executor(exec.kind, x);
  detail::check_buffer("x", x, n * d, sizeof(float), where);
  detail::check_buffer("out", out, what == quantity::log_density ? n : n * d, sizeof(float), where);
  const mixture_path path = detail::choose_path(*storage_, what, n, where, options);
  // Points are evaluated in parallel (and the gemm path reads x after its products wrote out), so out may not share
  // x's memory, in place included; nor may the caller's workspace.
  const std::size_t x_bytes = static_cast<std::size_t>(n * d) * sizeof(float);
  const std::size_t ws_bytes = workspace != nullptr && path == mixture_path::gemm && where == executor::cuda
                                   ? detail::gemm_cuda_workspace_bytes(what, n, components(), d, options)
                                   : 0;
  detail::check_disjoint({{"x", x, x_bytes},
                          {"out", out, what == quantity::log_density ? static_cast<std::size_t>(n) * sizeof(float)
                                                                     : x_bytes},
                          {"workspace", workspace, ws_bytes}});
  if (path == mixture_path::direct) return {evaluate_direct(what, x, n, ch, out, {where, exec.stream}), path};
  return detail::gemm_evaluate(*storage_, what, x, n, ch, out, options, where, exec.stream, workspace,
                               workspace_bytes);
}

std::size_t gaussian_mixture::evaluate_workspace_bytes(std::int64_t n, quantity what, const evaluate_options& options,
                                                       execution exec) const {
  detail::check_count("n", n, dim());
  detail::check_evaluate_options(options);  // on every executor, as evaluate() checks them
  const executor where = exec.kind == executor::automatic
                             ? (cuda_available() ? executor::cuda : executor::cpu)
                             : detail::resolve_executor(exec.kind, nullptr);
  if (where != executor::cuda) return 0;
  if (detail::choose_path(*storage_, what, n, where, options) != mixture_path::gemm) return 0;
  return detail::gemm_cuda_workspace_bytes(what, n, components(), dim(), options);
}

evaluate_report gaussian_mixture::denoiser_jvp(float* out, std::int64_t n, const float* x, const float* v, channel ch,
                                               const evaluate_options& options, execution exec) const {
  const std::int64_t d = dim();
  detail::check_count("n", n, d);
  detail::check_channel("ch", ch);
  detail::check_mixture_channel(*storage_, "ch", ch);
  const executor where = detail::resolve_executor(exec.kind, x);
  detail::check_buffer("x", x, n * d, sizeof(float), where);
  detail::check_buffer("v", v, n * d, sizeof(float), where);
  detail::check_buffer("out", out, n * d, sizeof(float), where);
  // Points are processed in parallel: out may share neither input's memory (x and v may share each other's).
  const std::size_t bytes = static_cast<std::size_t>(n * d) * sizeof(float);
  detail::check_disjoint({{"x", x, bytes}, {"out", out, bytes}});
  detail::check_disjoint({{"v", v, bytes}, {"out", out, bytes}});
  const mixture_path path = detail::choose_path(*storage_, quantity::denoiser, n, where, options);
  if (path == mixture_path::direct) {
    detail::denoiser_jvp_unchecked(*storage_, x, v, n, ch, out, {where, exec.stream});
    return {where, path};
  }
  return detail::gemm_denoiser_jvp(*storage_, x, v, n, ch, out, options, where, exec.stream);
}

mixture_path gaussian_mixture::chosen_path(std::int64_t n, quantity what, const evaluate_options& options,
                                           executor where) const {
  DIFFSAMPLE_EXPECTS(what == quantity::log_density || what == quantity::score || what == quantity::denoiser,
                     "what: invalid quantity " << static_cast<int>(what));
  detail::check_count("n", n, dim());  // as evaluate() checks them: the query refuses what the call would
  DIFFSAMPLE_EXPECTS(where == executor::cpu || where == executor::cuda,
                     "where: expected cpu or cuda, got " << to_string(where));
  return detail::choose_path(*storage_, what, n, where, options);
}

void gaussian_mixture::prepare_gemm(executor where) const {
  DIFFSAMPLE_EXPECTS(where == executor::cpu || where == executor::cuda,
                     "where: expected cpu or cuda, got " << to_string(where));
  DIFFSAMPLE_EXPECTS(where == executor::cpu || cuda_available(), detail::no_usable_gpu("where"));
  if (where == executor::cuda) {
    bool ready;
    {
      std::lock_guard<std::mutex> lock(storage_->gemm_mutex);
      ready = storage_->gemm_device_ready;
    }
    // Whatever is still to be made, before anything is issued: the mixture's tables (made once, on the legacy default
    // stream), and the current device's handle of the operator products (once per device and process: a mixture
    // whose tables a gemm-path evaluate() made, or another device current, still needs it).
    if (!ready)
      detail::refuse_legacy_capture("prepare_gemm(executor::cuda), the first time for a mixture,", "call it");
    else if (!detail::operator_gemm_ready())
      detail::refuse_capture_unrecordable(
          cudaStreamLegacy, "a blocking stream of the current device",
          "prepare_gemm(executor::cuda), the first time on a device, creates the guided operator products' cuBLAS "
          "handle of that device (cublasCreate, which allocates outside any stream)",
          "call it before the capture begins");
  }
  (void)detail::gemm_tables_for(*storage_, where);
  // guided_sample()'s operator products take one cuBLAS handle per device: made here too, so that this call is the
  // one warm-up a capture of either needs.
  if (where == executor::cuda) detail::operator_gemm_prepare(nullptr);
}

gaussian_mixture gaussian_mixture::empirical(std::int64_t n, std::int64_t dim, const double* points,
                                             double variance) {
  limits::check("n (points)", n, 1, limits::max_components);
  limits::check("dim", dim, 1, limits::max_dim);
  DIFFSAMPLE_EXPECTS(points != nullptr, "points: null pointer");
  DIFFSAMPLE_EXPECTS(std::isfinite(variance) && variance >= min_variance && variance <= max_variance,
                     "variance: must be in [" << min_variance << ", " << max_variance << "], got " << variance);
  // n x dim doubles are copied (and the mixture keeps them, with their FP32 copy): the product is refused beyond the
  // host's limit before anything is allocated (n, dim <= 2^24 keep it within int64), and an allocation the host cannot
  // give is out_of_memory naming the points, not std::bad_alloc.
  const std::int64_t values = n * dim;
  if (values > limits::max_host_bytes / std::int64_t(sizeof(double)))
    throw out_of_memory("points: n x dim = " + std::to_string(n) + " x " + std::to_string(dim) + " values need " +
                        std::to_string(values) + " x 8 bytes of host memory, the limit is " +
                        limits::spell(limits::max_host_bytes) + " (limits::max_host_bytes)");
  std::vector<double> means, weights, variances;
  try {
    means.assign(points, points + values);
    weights.assign(std::size_t(n), 1.0);
    variances.assign(std::size_t(n), variance);
  } catch (const std::bad_alloc&) {
    throw out_of_memory("points: the copy of n x dim = " + std::to_string(n) + " x " + std::to_string(dim) +
                        " values (" + std::to_string(values * std::int64_t(sizeof(double))) +
                        " bytes) could not be allocated on the host");
  }
  return gaussian_mixture(dim, std::move(weights), std::move(means), std::move(variances));
}

}  // namespace diffsample
