// Global, exact resampling over MPI. Every rank holds particles [first, first + local) of each problem (the block
// split of shard_of()) and computes, as resample() does on all N:
//   1. the problem's largest valid log-weight and invalid count (MPI_Allreduce, max and sum);
//   2. its particles' fixed-point weights q_i = floor(2^k w_i), w_i = fixed_exp(l_i - max), k = 62 - ceil(log2 N),
//      and their rank-local inclusive prefix; the FP64 report sums of w_i and w_i^2 in resample()'s order, carried
//      from rank to rank (MPI_Send / MPI_Recv, rank order, on the resampler's own duplicate of the caller's
//      communicator, where no message of the caller's can match them); the ranks' integer totals (with sum q^2, and the last
//      rank's FP64 sums) are gathered (MPI_Allgather), so every rank knows each rank's offset in the global integer
//      prefix (the exclusive scan of the totals) and the global total T, hence the same fixed-point ESS and
//      resampling decision, and resample()'s reports bit for bit;
//   3. for a resampled problem, the key x_j in [0, T) of every slot j from the shared Philox uniforms (the formulas
//      of kernels::select_ancestor_functor): a slot's ancestor is the first particle whose global prefix exceeds
//      x_j, i.e. the first rank whose prefix end exceeds x_j, then the rank-local search at x_j minus its offset.
//      The rank that holds the ancestor finds the slots its particles feed (for stratified and systematic, whose
//      keys grow with j, a contiguous range found by bisection on j; for multinomial by scanning the N shared
//      uniforms) and sends the rows; the slot's owner knows from x_j which rank sends it, so one MPI_Alltoallv moves
//      every row, in slot order, with no index exchanged.
// Residual, Metropolis and rejection resampling (whose ancestors depend on other particles' weights in ways a
// prefix cannot carry: residual's floor(N w_i) copies before its multinomial draw, the Metropolis and rejection
// chains' comparisons with weights anywhere in the problem) gather every rank's log-weights (MPI_Allgatherv, 4 N
// bytes per problem received by each rank), run resample() on the whole problem on every rank (the same FP32
// inputs, the same integer algorithm: the ancestors and reports are resample()'s bit for bit), and fetch each slot's
// ancestor row from the rank that holds it (fetch() below).
#include "src/mpi/resampler.hpp"

#include "src/cuda_check.hpp"
#include "src/limits.hpp"
#include "src/mpi/messages.hpp"
#include "src/option_readers.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <diffsample/error.hpp>

namespace diffsample::mpi::detail {

using kernels::u128;

namespace {

bool prefix_scheme(resampling_scheme s) {
  return s == resampling_scheme::multinomial || s == resampling_scheme::stratified ||
         s == resampling_scheme::systematic;
}

// The key of slot j of problem b in [0, T): exactly the x that select_ancestor_functor searches for.
struct slot_keys {
  resampling_scheme scheme;
  std::uint64_t seed, step, total, n, systematic_v;
  std::int64_t b;

  slot_keys(const resampling_options& o, std::int64_t problem, std::int64_t particles, std::uint64_t t)
      : scheme(o.scheme), seed(o.seed), step(o.step), total(t), n(std::uint64_t(particles)), systematic_v(0),
        b(problem) {
    if (scheme == resampling_scheme::systematic) {
      kernels::philox rng(seed, static_cast<std::uint64_t>(b * particles), step);
      systematic_v = kernels::uniform_below(rng, total);
    }
  }
  std::uint64_t operator()(std::int64_t j) const {
    const std::uint64_t g = static_cast<std::uint64_t>(b) * n + std::uint64_t(j);
    if (scheme == resampling_scheme::multinomial) {
      kernels::philox rng(seed, g, step);
      return kernels::uniform_below(rng, total);
    }
    std::uint64_t v = systematic_v;
    if (scheme == resampling_scheme::stratified) {
      kernels::philox rng(seed, g, step);
      v = kernels::uniform_below(rng, total);
    }
    const std::uint64_t uj = std::uint64_t(j);
    return uj * (total / n) + (uj * (total % n) + v) / n;
  }
  /// Slots whose key is below x (keys grow with j: stratified and systematic).
  std::int64_t count_below(std::uint64_t x) const {
    std::int64_t lo = 0, hi = static_cast<std::int64_t>(n);
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo) / 2;
      if ((*this)(mid) < x)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo;
  }
};

void displacements(const std::vector<int>& counts, std::vector<int>& displs) {
  displs.resize(counts.size());
  int at = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    displs[r] = at;
    at += counts[r];
  }
}

}  // namespace

resampler::resampler(MPI_Comm comm, std::int64_t particles, comm_stats& stats)
    : own_(comm), comm_(own_.get()), n_(std::max<std::int64_t>(particles, 0)), stats_(stats) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &ranks_);
  first_ = first_of(rank_);
  local_ = first_of(rank_ + 1) - first_;
  n_ = particles;  // as given, for check()
}

resampler::~resampler() {
  if (type_ != MPI_DATATYPE_NULL) MPI_Type_free(&type_);
}

std::int64_t resampler::first_of(std::int64_t r) const {
  const std::int64_t q = n_ / ranks_, rem = n_ % ranks_;
  return r < rem ? r * (q + 1) : rem * (q + 1) + (r - rem) * q;
}

std::int64_t resampler::owner(std::int64_t j) const {
  const std::int64_t q = n_ / ranks_, rem = n_ % ranks_, big = rem * (q + 1);
  return j < big ? j / (q + 1) : rem + (j - big) / q;
}

void resampler::check(std::int64_t problems, const resampling_options& o, const char* name) const {
  DIFFSAMPLE_EXPECTS(o.scheme == resampling_scheme::multinomial || o.scheme == resampling_scheme::stratified ||
                         o.scheme == resampling_scheme::systematic || o.scheme == resampling_scheme::residual ||
                         o.scheme == resampling_scheme::metropolis || o.scheme == resampling_scheme::rejection,
                     name << ".scheme: invalid value " << static_cast<int>(o.scheme));
  if (o.scheme == resampling_scheme::metropolis)
    limits::check(std::string(name) + ".metropolis_steps", o.metropolis_steps, 1, limits::max_inner_steps);
  diffsample::detail::check_unread_resampling(name, o);  // as resample(): what the scheme does not read
  limits::check("particles", n_, 1, limits::max_particles);
  limits::check("problems", problems, 1, limits::max_int_count);
  limits::check("problems x particles", problems * n_, 1, limits::max_int_count, "the MPI exchange's int counts");
  DIFFSAMPLE_EXPECTS(std::isfinite(o.ess_threshold) && o.ess_threshold >= 0,
                     name << ".ess_threshold: must be finite and >= 0, got " << o.ess_threshold);
  limits::check(std::string(name) + ".step", o.step, 0, limits::max_stream_steps - 1, "the random stream's steps");
}

MPI_Datatype resampler::row_type(std::size_t row_bytes) {
  if (type_ != MPI_DATATYPE_NULL && type_bytes_ == row_bytes) return type_;
  if (type_ != MPI_DATATYPE_NULL) MPI_Type_free(&type_);
  // The datatype's count is an int. Every rank moves rows of the same size, so a refusal throws on every rank alike;
  // the library's rows are far below it (mpi::resample's 8 bytes, the filter's at most 4 (3 d + 1) with d up to
  // limits::max_dim).
  limits::check("row bytes", static_cast<std::int64_t>(row_bytes), 0, limits::max_int_count,
                "an MPI datatype's int count");
  MPI_Type_contiguous(static_cast<int>(row_bytes), MPI_BYTE, &type_);
  MPI_Type_commit(&type_);
  type_bytes_ = row_bytes;
  return type_;
}

void resampler::alltoallv(const void* send, const std::vector<int>& sc, void* recv, const std::vector<int>& rc,
                          std::size_t row_bytes) {
  std::vector<int>& sd = send_displs_;
  std::vector<int>& rd = recv_displs_;
  displacements(sc, sd);
  displacements(rc, rd);
  const MPI_Datatype t = row_type(row_bytes);
  {
    timed clock(stats_);
    MPI_Alltoallv(send, sc.data(), sd.data(), t, recv, rc.data(), rd.data(), t, comm_);
  }
  for (int r = 0; r < ranks_; ++r) {
    if (r == rank_) continue;
    stats_.bytes_sent += std::int64_t(sc[r]) * std::int64_t(row_bytes);
    stats_.bytes_received += std::int64_t(rc[r]) * std::int64_t(row_bytes);
  }
  ++stats_.exchanges;
}

void resampler::agree(std::exception_ptr error) {
  {
    timed clock(stats_);
    mpi::agree(comm_, error);
  }
  stats_.bytes_sent += 4 * std::int64_t(ranks_ - 1);
  stats_.bytes_received += 4 * std::int64_t(ranks_ - 1);
}

namespace {

// v holds at least n elements (never shrinks: a smaller B later reads the first ones).
template <class T>
void grow(std::vector<T>& v, std::size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

void resampler::reserve(std::int64_t problems, const resampling_options& o) {
  const std::int64_t B = problems, L = local_, N = n_, P = ranks_;
  const bool gathered = !prefix_scheme(o.scheme);
  // Every rank decides alike (B, N and the scheme are the same everywhere, and so is every earlier decision).
  const std::size_t ws = gathered ? resampling_workspace_bytes(B, N, o.scheme) : 0;
  if (B <= reserved_ && (!gathered || (B <= reserved_gathered_ && ws <= reserved_workspace_))) return;
  std::exception_ptr failure;
  try {
    grow(max_, static_cast<std::size_t>(B));
    grow(nans_, static_cast<std::size_t>(B));
    grow(mine_, static_cast<std::size_t>(B));
    grow(all_, static_cast<std::size_t>(B * P));
    grow(units_, static_cast<std::size_t>(B * L));
    grow(weights_, static_cast<std::size_t>(B * L));
    grow(carry_, static_cast<std::size_t>(B));
    grow(ends_, static_cast<std::size_t>(B * P));
    grow(states_, static_cast<std::size_t>(B));
    grow(source_, static_cast<std::size_t>(B * L));
    grow(reports_, static_cast<std::size_t>(B));
    if (gathered) {
      grow(gathered_, static_cast<std::size_t>(B * N));
      grow(whole_, static_cast<std::size_t>(B * N));
      grow(whole_normalised_, static_cast<std::size_t>(B * N));
      grow(ancestors_, static_cast<std::size_t>(B * N));
      grow(whole_reports_, static_cast<std::size_t>(B));
      grow(index_, static_cast<std::size_t>(B * L));
      grow(workspace_, ws);
    }
  } catch (...) {
    failure = std::current_exception();
  }
  agree(failure);
  reserved_ = std::max(reserved_, B);
  if (gathered) {
    reserved_gathered_ = std::max(reserved_gathered_, B);
    reserved_workspace_ = std::max(reserved_workspace_, ws);
  }
}

void resampler::run(const float* log_weights, std::int64_t problems, const resampling_options& o,
                    particle_report* reports, const void* rows, std::size_t row_bytes, void* out, float* normalised) {
  reserve(problems, o);
  if (!prefix_scheme(o.scheme)) {
    run_gathered(log_weights, problems, o, reports, rows, row_bytes, out, normalised);
    return;
  }
  const std::int64_t B = problems, L = local_, N = n_, P = ranks_;
  const int bits = kernels::fixed_point_bits(N);
  const std::int64_t other = P - 1;  // the payload of each collective reaches P - 1 other ranks

  // 1. The problems' largest valid log-weight and invalid count.
  float* max = max_.data();
  std::int64_t* nans = nans_.data();
  std::fill_n(max, B, -INFINITY);
  std::fill_n(nans, B, 0);
  for (std::int64_t b = 0; b < B; ++b) {
    const float* lw = log_weights + b * L;
    for (std::int64_t i = 0; i < L; ++i) {
      if (kernels::invalid_log_weight(lw[i]))
        ++nans[b];
      else if (lw[i] > max[b])
        max[b] = lw[i];
    }
  }
  {
    timed clock(stats_);
    MPI_Allreduce(MPI_IN_PLACE, max, int(B), MPI_FLOAT, MPI_MAX, comm_);
    MPI_Allreduce(MPI_IN_PLACE, nans, int(B), MPI_INT64_T, MPI_SUM, comm_);
  }
  stats_.bytes_sent += other * B * 12;
  stats_.bytes_received += other * B * 12;

  // 2. Fixed-point weights and their FP64 values (fixed_weight_pair, as resample()), rank-local inclusive prefix.
  rank_sums* mine = mine_.data();
  rank_sums* all = all_.data();
  double* w = weights_.data();
  for (std::int64_t b = 0; b < B; ++b) {
    const float* lw = log_weights + b * L;
    std::uint64_t total = 0;
    u128 q2;
    if (max[b] > -INFINITY) {
      for (std::int64_t i = 0; i < L; ++i) {
        const kernels::weight_pair wq = kernels::fixed_weight_pair(lw[i], max[b], bits);
        total += wq.q;
        q2 = q2 + kernels::mul_wide(wq.q, wq.q);
        units_[b * L + i] = total;
        w[b * L + i] = wq.w;
      }
    } else {
      std::fill(units_.begin() + b * L, units_.begin() + (b + 1) * L, 0);
      std::fill_n(w + b * L, L, 0.0);
    }
    mine[b] = rank_sums{total, q2.lo, q2.hi, 0, 0};
  }
  // The FP64 report sums in resample()'s order on the CPU executor (particle order within tiles of cpu_tile
  // particles, then the tiles in order), hence its bits whatever P: the running sums travel along the ranks in rank
  // order (rank r receives rank r - 1's, adds its particles, sends them on: 4 doubles per problem), and the last
  // rank's totals reach every rank with the integer sums below.
  report_carry* carry = carry_.data();
  if (rank_ > 0) {
    timed clock(stats_);
    recv_bytes(carry, static_cast<std::size_t>(B) * sizeof(report_carry), rank_ - 1, report_sums_tag, comm_);
    stats_.bytes_received += B * std::int64_t(sizeof(report_carry));
  } else {
    std::fill_n(carry, B, report_carry{});
  }
  for (std::int64_t b = 0; b < B; ++b) {
    report_carry c = carry[b];
    for (std::int64_t i = 0; i < L; ++i) {
      const std::int64_t g = first_ + i;  // within the problem
      if (g > 0 && g % kernels::cpu_tile == 0) {
        c.sum_w += c.tile_w;
        c.sum_w2 += c.tile_w2;
        c.tile_w = c.tile_w2 = 0;
      }
      const double x = w[b * L + i];
      c.tile_w += x;
      c.tile_w2 += x * x;
    }
    if (rank_ == P - 1) {
      mine[b].sum_w = c.sum_w + c.tile_w;
      mine[b].sum_w2 = c.sum_w2 + c.tile_w2;
    }
    carry[b] = c;
  }
  if (rank_ < P - 1) {
    timed clock(stats_);
    send_bytes(carry, static_cast<std::size_t>(B) * sizeof(report_carry), rank_ + 1, report_sums_tag, comm_);
    stats_.bytes_sent += B * std::int64_t(sizeof(report_carry));
  }
  {
    timed clock(stats_);
    allgather_bytes(mine, static_cast<std::size_t>(B) * sizeof(rank_sums), all, comm_);
  }
  stats_.bytes_sent += other * B * std::int64_t(sizeof(rank_sums));
  stats_.bytes_received += other * B * std::int64_t(sizeof(rank_sums));

  // 3. Global totals, offsets, decisions and reports (the same on every rank).
  bool any = false;
  for (std::int64_t b = 0; b < B; ++b) {
    std::uint64_t total = 0;
    u128 q2;
    for (std::int64_t r = 0; r < P; ++r) {
      const rank_sums& s = all[r * B + b];
      total += s.total;
      q2 = q2 + u128{s.q2_lo, s.q2_hi};
      ends_[b * P + r] = total;
    }
    const double sum_w = all[(P - 1) * B + b].sum_w, sum_w2 = all[(P - 1) * B + b].sum_w2;
    const kernels::problem_state st = kernels::decide_problem(max[b], nans[b], total, q2, sum_w, sum_w2,
                                                              o.ess_threshold, N, reports_.data() + b);
    states_[b] = st;
    any = any || st.resample;
  }
  // The reports and normalised weights, written once nothing can fail any more (step 4's buffers agreed on): a call
  // that fails leaves the caller's outputs as they were (step 4 wrote its reports before, and a failed allocation
  // there left them written with out unchanged).
  const auto write_outputs = [&] {
    for (std::int64_t b = 0; b < B; ++b) {
      if (reports != nullptr) reports[b] = reports_[b];
      if (normalised == nullptr) continue;
      const std::uint64_t total = ends_[b * P + P - 1];
      const double sum_w = all[(P - 1) * B + b].sum_w;
      const float* lw = log_weights + b * L;
      for (std::int64_t i = 0; i < L; ++i)
        normalised[b * L + i] = (total == 0 || kernels::invalid_log_weight(lw[i]))
                                    ? 0.f
                                    : float(w[b * L + i] / sum_w);
    }
  };
  const auto* in = static_cast<const unsigned char*>(rows);
  auto* dst = static_cast<unsigned char*>(out);
  if (!any) {  // every rank knows: no exchange
    write_outputs();
    if (B * L > 0) std::memcpy(dst, in, static_cast<std::size_t>(B * L) * row_bytes);
    return;
  }

  // 4. The slots this rank's particles feed (sender side) and the rank that feeds each slot held here; the send and
  //    receive buffers (sized by this rank's share of the keys: agreed on before the exchange).
  std::exception_ptr failure;
  try {
    send_counts_.assign(static_cast<std::size_t>(P), 0);
    recv_counts_.assign(static_cast<std::size_t>(P), 0);
    picks_.clear();
    pick_dest_.clear();
    std::fill(source_.begin(), source_.begin() + B * L, -1);
    for (std::int64_t b = 0; b < B; ++b) {
      const kernels::problem_state& st = states_[b];
      if (!st.resample) continue;
      const slot_keys key(o, b, N, st.total);
      const std::uint64_t* e = ends_.data() + b * P;
      const std::uint64_t lo = rank_ == 0 ? 0 : e[rank_ - 1], hi = e[rank_];
      const std::uint64_t* u = units_.data() + b * L;
      auto pick = [&](std::int64_t j, std::uint64_t x) {
        const std::int64_t a = kernels::upper_bound(u, L, x - lo);
        const int dest = static_cast<int>(owner(j));
        picks_.push_back(b * L + a);
        pick_dest_.push_back(dest);
        ++send_counts_[dest];
      };
      if (hi > lo) {
        if (o.scheme == resampling_scheme::multinomial) {
          for (std::int64_t j = 0; j < N; ++j) {
            const std::uint64_t x = key(j);
            if (x >= lo && x < hi) pick(j, x);
          }
        } else {
          const std::int64_t j_end = key.count_below(hi);
          for (std::int64_t j = key.count_below(lo); j < j_end; ++j) pick(j, key(j));
        }
      }
      for (std::int64_t i = 0; i < L; ++i) {
        const std::uint64_t x = key(first_ + i);
        const int src = static_cast<int>(kernels::upper_bound(e, P, x));
        source_[b * L + i] = src;
        ++recv_counts_[src];
      }
    }
    std::int64_t sends = 0, receives = 0;
    for (std::int64_t r = 0; r < P; ++r) {
      sends += send_counts_[r];
      receives += recv_counts_[r];
    }
    send_.resize(static_cast<std::size_t>(sends) * row_bytes);
    recv_.resize(static_cast<std::size_t>(receives) * row_bytes);
    displacements(send_counts_, cursor_);
    (void)row_type(row_bytes);  // the exchange's datatype (its size check), before anything is written
  } catch (...) {
    failure = std::current_exception();
  }
  agree(failure);
  write_outputs();
  for (std::size_t k = 0; k < picks_.size(); ++k)
    std::memcpy(send_.data() + static_cast<std::size_t>(cursor_[pick_dest_[k]]++) * row_bytes,
                in + static_cast<std::size_t>(picks_[k]) * row_bytes, row_bytes);
  alltoallv(send_.data(), send_counts_, recv_.data(), recv_counts_, row_bytes);
  displacements(recv_counts_, cursor_);
  for (std::int64_t s = 0; s < B * L; ++s) {
    const int src = source_[s];
    const unsigned char* from = src < 0 ? in + static_cast<std::size_t>(s) * row_bytes
                                        : recv_.data() + static_cast<std::size_t>(cursor_[src]++) * row_bytes;
    std::memcpy(dst + static_cast<std::size_t>(s) * row_bytes, from, row_bytes);
  }
}

void resampler::run_gathered(const float* log_weights, std::int64_t problems, const resampling_options& o,
                             particle_report* reports, const void* rows, std::size_t row_bytes, void* out,
                             float* normalised) {
  const std::int64_t B = problems, L = local_, N = n_, P = ranks_;
  // Every rank's B x local block, in rank order, then rearranged into B x N (scratch reserved by run()).
  recv_counts_.resize(static_cast<std::size_t>(P));
  for (std::int64_t r = 0; r < P; ++r) recv_counts_[r] = static_cast<int>(B * (first_of(r + 1) - first_of(r)));
  displacements(recv_counts_, recv_displs_);
  {
    timed clock(stats_);
    MPI_Allgatherv(log_weights, static_cast<int>(B * L), MPI_FLOAT, gathered_.data(), recv_counts_.data(),
                   recv_displs_.data(), MPI_FLOAT, comm_);
  }
  stats_.bytes_sent += (P - 1) * B * L * std::int64_t(sizeof(float));
  stats_.bytes_received += B * (N - L) * std::int64_t(sizeof(float));
  for (std::int64_t r = 0; r < P; ++r) {
    const std::int64_t f = first_of(r), c = first_of(r + 1) - f;
    for (std::int64_t b = 0; b < B; ++b)
      std::copy_n(gathered_.data() + recv_displs_[r] + b * c, c, whole_.data() + b * N + f);
  }
  // The whole problems' resampling, as one process computes it (CPU executor, host buffers, its workspace reserved;
  // agreed on before the decision to exchange, one 4-byte MPI_Allreduce).
  particle_outputs po;
  po.ancestors64 = ancestors_.data();
  po.reports = whole_reports_.data();
  if (normalised != nullptr) po.normalised_weights = whole_normalised_.data();
  execution host;
  host.kind = executor::cpu;
  std::exception_ptr failure;
  try {
    resample(po, B, N, whole_.data(), o, host, workspace_.data(), workspace_.size());
  } catch (...) {
    failure = std::current_exception();
  }
  agree(failure);
  bool any = false;
  for (std::int64_t b = 0; b < B; ++b) any = any || whole_reports_[b].resampled != 0;
  if (!any) {  // every rank knows: no exchange
    if (B * L > 0) std::memcpy(out, rows, static_cast<std::size_t>(B * L) * row_bytes);
  } else {
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < L; ++i) index_[b * L + i] = ancestors_[b * N + first_ + i];
    // Its buffers agreed on before it writes out; nothing fails after that.
    fetch(rows, B, row_bytes, index_.data(), out);
  }
  // The reports and normalised weights once nothing can fail any more (fetch()'s buffers agreed on): a call that
  // fails leaves the caller's outputs as they were.
  for (std::int64_t b = 0; b < B; ++b) {
    if (reports != nullptr) reports[b] = whole_reports_[b];
    if (normalised != nullptr)
      std::copy_n(whole_normalised_.data() + b * N + first_, L, normalised + b * L);
  }
}

void resampler::fetch(const void* rows, std::int64_t problems, std::size_t row_bytes, const std::int64_t* index,
                      void* out) {
  const std::int64_t B = problems, L = local_, P = ranks_;
  // The counts each rank wants from each other.
  send_counts_.assign(static_cast<std::size_t>(P), 0);
  for (std::int64_t s = 0; s < B * L; ++s) ++send_counts_[owner(index[s])];
  recv_counts_.assign(static_cast<std::size_t>(P), 0);
  {
    timed clock(stats_);
    MPI_Alltoall(send_counts_.data(), 1, MPI_INT, recv_counts_.data(), 1, MPI_INT, comm_);
  }
  stats_.bytes_sent += (P - 1) * 4;
  stats_.bytes_received += (P - 1) * 4;
  // Requests: the row, within the holder's B x local buffer, of every row wanted here (B x local of them); the rows
  // served and received (sized by what the other ranks want from this one): agreed on before the exchange.
  std::int64_t wanted = 0, served = 0;
  for (std::int64_t r = 0; r < P; ++r) {
    wanted += send_counts_[r];
    served += recv_counts_[r];
  }
  std::exception_ptr failure;
  try {
    grow(requests_, static_cast<std::size_t>(B * L));
    incoming_.resize(static_cast<std::size_t>(served));
    send_.resize(static_cast<std::size_t>(served) * row_bytes);
    recv_.resize(static_cast<std::size_t>(wanted) * row_bytes);
    (void)row_type(row_bytes);  // the exchange's datatype (its size check), before anything is written
  } catch (...) {
    failure = std::current_exception();
  }
  agree(failure);
  std::int64_t* requests = requests_.data();
  displacements(send_counts_, cursor_);
  for (std::int64_t s = 0; s < B * L; ++s) {
    const std::int64_t j = index[s], r = owner(j);
    const std::int64_t b = s / L, holder_local = first_of(r + 1) - first_of(r);
    requests[static_cast<std::size_t>(cursor_[r]++)] = b * holder_local + (j - first_of(r));
  }
  alltoallv(requests, send_counts_, incoming_.data(), recv_counts_, sizeof(std::int64_t));
  const auto* in = static_cast<const unsigned char*>(rows);
  for (std::int64_t k = 0; k < served; ++k)
    std::memcpy(send_.data() + static_cast<std::size_t>(k) * row_bytes,
                in + static_cast<std::size_t>(incoming_[k]) * row_bytes, row_bytes);
  const std::vector<int> replies = recv_counts_, answers = send_counts_;
  alltoallv(send_.data(), replies, recv_.data(), answers, row_bytes);
  displacements(answers, cursor_);
  auto* dst = static_cast<unsigned char*>(out);
  for (std::int64_t s = 0; s < B * L; ++s) {
    const std::int64_t r = owner(index[s]);
    std::memcpy(dst + static_cast<std::size_t>(s) * row_bytes,
                recv_.data() + static_cast<std::size_t>(cursor_[r]++) * row_bytes, row_bytes);
  }
}

}  // namespace diffsample::mpi::detail
