// Small helpers shared by xnor_lite's kernels (bgemv.cc, int8_gemv.cc, int8_conv.cc).

#ifndef XNOR_LITE_NATIVE_KERNEL_UTIL_H_
#define XNOR_LITE_NATIVE_KERNEL_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#include "ruy/thread_pool.h"

namespace xnor_lite {

inline int CeilDiv(int a, int b) { return (a + b - 1) / b; }

// Whether this CPU has the int8 dot-product instruction (sdot): Linux's HWCAP_ASIMDDP, bit 20
// of AT_HWCAP on aarch64. False on other architectures and systems, where nobody asks.
inline bool CpuHasDotProduct() {
#if defined(__aarch64__) && defined(__linux__)
  constexpr unsigned long kHwcapAsimdDp = 1UL << 20;
  static const bool has = (getauxval(AT_HWCAP) & kHwcapAsimdDp) != 0;
  return has;
#else
  return false;
#endif
}

// How many threads to split `units` (row blocks, tiles) over: at most `threads` and `units`,
// and no more than `work` / `min_work` (less work per thread costs more in waking threads than
// it saves); 1 without a pool.
inline int ShareCount(const ruy::ThreadPool* pool, int threads, int units, std::int64_t work,
                      std::int64_t min_work) {
  if (pool == nullptr) return 1;
  return static_cast<int>(
      std::max<std::int64_t>(1, std::min<std::int64_t>({threads, units, work / min_work})));
}

// Runs fn(first, end, share) over `shares` contiguous parts of [0, units): on the calling
// thread when there is one share, else on `pool` (which runs share 0 on the calling thread too).
template <typename Fn>
void RunInShares(ruy::ThreadPool* pool, int shares, int units, const Fn& fn) {
  if (pool == nullptr || shares <= 1) {
    fn(0, units, 0);
    return;
  }
  struct Share : ruy::Task {
    const Fn* fn;
    int first, end, index;
    void Run() override { (*fn)(first, end, index); }
  };
  std::vector<Share> parts(shares);
  for (int i = 0; i < shares; ++i) {
    parts[i].fn = &fn;
    parts[i].first = static_cast<int>(static_cast<std::int64_t>(units) * i / shares);
    parts[i].end = static_cast<int>(static_cast<std::int64_t>(units) * (i + 1) / shares);
    parts[i].index = i;
  }
  pool->Execute(shares, parts.data());
}

}  // namespace xnor_lite

#endif  // XNOR_LITE_NATIVE_KERNEL_UTIL_H_
