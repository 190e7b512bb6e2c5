// Fused stepwise runs on the CPU executor (src/fused_stepwise.hpp).
#include "src/fused_stepwise.hpp"

#include <algorithm>
#include <vector>

#include "kernels/langevin.cuh"
#include "kernels/mixture.cuh"
#include "src/cpu/chains.hpp"
#include "src/cpu/pool.hpp"
#include "src/mixture_storage.hpp"

namespace diffsample::detail {

bool fused_stepwise_available() { return cpu::chain_target() != cpu::simd_target::scalar; }

namespace {

/// The tell of a group of asks, its indices offset to the run's.
struct group_tell {
  void (*tell)(const void*, std::int64_t, std::int64_t, std::int64_t);
  const void* context;
  std::int64_t offset;
};

}  // namespace

std::int64_t run_fused_stepwise(const mixture_storage& mix, std::int64_t rows, const fused_ask* asks,
                                std::int64_t count,
                                void (*tell)(const void* context, std::int64_t ask, std::int64_t first,
                                             std::int64_t last),
                                const void* context, const kernels::diffpir_stage_functor* diffpir,
                                const kernels::ddrm_stage_functor* ddrm, const kernels::tmpd_stage_functor* tmpd,
                                const kernels::dcps_stage_functor* dcps, const kernels::dcps_ask* dcps_asks,
                                const kernels::skrock_stage_functor* skrock,
                                const kernels::moment_stage_functor* moment,
                                const kernels::twisted_stage_functor* twisted) {
  if (rows <= 0 || count <= 0) return 0;
  std::int64_t passes = 0;
  const kernels::mixture_view<float> view = mix.view(executor::cpu);
  const std::int64_t K = view.components;
  // Each channel laid out alone, as evaluate() and denoiser_jvp() lay out their one channel (the same table, filled
  // by the same functor), at a stride of whole cache lines.
  const std::int64_t stride = (kernels::mixture_channels::table_floats(view, 1) + 15) / 16 * 16;
  // A group's channels within about 4 MB of table (at least one channel).
  const std::int64_t max_channels = std::max<std::int64_t>(1, (std::int64_t(1) << 20) / stride);
  std::vector<float> table;
  std::vector<cpu::stepwise_ask> group;
  std::vector<std::int64_t> slot;  // per ask of the group: its channel
  const cpu::simd_target target = cpu::chain_target();
  for (std::int64_t first = 0; first < count;) {
    // The group: consecutive asks whose distinct channels (a new one where (a, s) changes) fit the table.
    std::vector<channel> channels;
    slot.clear();
    std::int64_t last = first;
    for (; last < count; ++last) {
      const channel& at = asks[last].at;
      if (channels.empty() || at.a != channels.back().a || at.s != channels.back().s) {
        if (static_cast<std::int64_t>(channels.size()) == max_channels) break;
        channels.push_back(at);
      }
      slot.push_back(static_cast<std::int64_t>(channels.size()) - 1);
    }
    const std::int64_t n_channels = static_cast<std::int64_t>(channels.size());
    if (static_cast<std::int64_t>(table.size()) < n_channels * stride) table.resize(n_channels * stride);
    std::vector<kernels::mixture_channels> tables(static_cast<std::size_t>(n_channels));
    for (std::int64_t c = 0; c < n_channels; ++c) tables[c] = kernels::mixture_channels::in(view, 1, table.data() + c * stride);
    cpu::parallel_for_each(n_channels * K, [&](std::int64_t e) {
      const std::int64_t c = e / K;
      const kernels::channel_table_functor<kernels::langevin_channel> fill{
          tables[c], {float(channels[c].a), float(channels[c].s)}};
      fill(e - c * K);
    });
    group.clear();
    for (std::int64_t a = first; a < last; ++a) {
      const channel& at = asks[a].at;
      group.push_back({asks[a].points, asks[a].vectors, asks[a].answer,
                       tables[slot[a - first]].at(0, float(at.a), float(at.s)), asks[a].score ? 1 : 2});
    }
    const group_tell g{tell, context, first};
    const cpu::stepwise_run run{rows,
                                static_cast<int>(view.dim),
                                group.data(),
                                static_cast<std::int64_t>(group.size()),
                                [](const void* c, std::int64_t a, std::int64_t b, std::int64_t e) {
                                  const group_tell& t = *static_cast<const group_tell*>(c);
                                  t.tell(t.context, t.offset + a, b, e);
                                },
                                &g,
                                diffpir,
                                first,
                                ddrm,
                                tmpd,
                                dcps,
                                count,
                                dcps_asks,
                                skrock,
                                moment,
                                twisted};
    cpu::run_stepwise(target, run);
    passes += 2;
    first = last;
  }
  return passes;
}

}  // namespace diffsample::detail
