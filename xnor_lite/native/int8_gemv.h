// An int8 matrix-vector product for LiteRT's int8 FULLY_CONNECTED and CONV_2D at batch 1.
//
// A converted net's int8 last layer (XNORAlexNet's fc8: 4096 -> 1000) is one matrix-vector
// product. LiteRT 2.2.0 runs it through cpu_backend_gemm's CustomGemvImpl, which widens every
// int8 to int16 and multiply-accumulates into int32 (vmlal_s16): ~1.2 MACs an instruction on a
// CPU without the dot-product instruction (Raspberry Pi 4's Cortex-A72). This path multiplies
// int8 by int8 into int16 pairs (smull, smlal2) and adds those into int32 (sadalp): 16 MACs in
// 3 instructions per row. Its requantization is CustomGemvImpl's own (shift left, vqrdmulh,
// rounding shift right, output zero point, clamp), so its outputs are LiteRT's, bit for bit.

#ifndef XNOR_LITE_NATIVE_INT8_GEMV_H_
#define XNOR_LITE_NATIVE_INT8_GEMV_H_

#include <cstdint>
#include <vector>

#include "tflite/core/c/common.h"

namespace ruy {
class ThreadPool;
}  // namespace ruy

namespace xnor_lite {

// Weight rows rearranged for the GEMV: blocks of kRows rows, each row zero-padded to whole
// chunks of 16 columns, the kRows rows' chunk j stored side by side (one 64-byte load).
class PackedInt8Rows {
 public:
  static constexpr int kRows = 4;
  static constexpr int kChunk = 16;  // int8 columns per chunk
  // Chunks per row are rounded up to a multiple of this (the kernel takes two at a time).
  static constexpr int kChunkMultiple = 2;

  // `rows` rows of `depth` int8 weights, row-major. Returns false, packing nothing, when a
  // weight is -128: two products (-128) * (-128) overflow the kernel's int16 pair sums
  // (TFLite's int8 weights are [-127, 127] by its quantization spec, so this is a guard).
  bool Pack(const std::int8_t* weights, int rows, int depth);

  // sums[r] = sum over k of weight[r][k] * input[k], for every row (int32, wrapping); blocks of
  // rows shared among up to `threads` threads of `pool` (the same sums whatever the split).
  void DotProducts(const std::int8_t* input, std::int32_t* sums, ruy::ThreadPool* pool = nullptr,
                   int threads = 1);

  int rows() const { return rows_; }
  int depth() const { return depth_; }
  // sum over k of weight[r][k], for the input zero point's term.
  const std::vector<std::int32_t>& row_sums() const { return row_sums_; }

 private:
  int rows_ = 0, depth_ = 0, chunks_ = 0, blocks_ = 0;
  std::vector<std::int8_t> packed_;  // blocks_ * chunks_ * kRows * kChunk
  std::vector<std::int8_t> input_;   // the input, zero-padded to chunks_ chunks
  std::vector<std::int32_t> row_sums_;
  std::vector<std::int32_t> block_sums_;  // blocks_ * kRows
};

// Requantizes int32 accumulators (dot product + bias, zero points applied) to int8 exactly as
// LiteRT 2.2.0's CustomGemvImpl<int8, int8, int32, int8> does for 4 rows at a time:
// x << max(shift, 0), vqrdmulh by the multiplier, rounding shift right by -min(shift, 0),
// + output zero point, saturate, clamp to [act_min, act_max]. Per-row multipliers and shifts.
void RequantizeToInt8(const std::int32_t* acc, const std::int32_t* multiplier,
                      const std::int32_t* shift, int rows, std::int32_t output_zero_point,
                      std::int32_t act_min, std::int32_t act_max, std::int8_t* out);

// Which LiteRT builtin a registration computes.
enum class Int8GemvOp { kFullyConnected, kConv2D };

// LiteRT's own registration `upstream` of builtin `op` wrapped so that a node whose
// computation is one int8 matrix-vector product that LiteRT would run through its CustomGemv
// (see int8_gemv.cc for the exact conditions) runs the GEMV above, and, on a CPU without the
// dot-product instruction, any other int8 CONV_2D with more than one output pixel runs Int8Conv
// (int8_conv.h); every other node (float, hybrid, batch > 1 FULLY_CONNECTED, ...) runs
// `upstream` unchanged. The registration is copied, so `upstream`
// need not outlive the call. nullptr when it cannot be wrapped (already ours, or a kind of
// registration this wrapper does not know); the caller then keeps `upstream`.
const TfLiteRegistration* WithInt8Gemv(const TfLiteRegistration* upstream, Int8GemvOp op);

// How many FULLY_CONNECTED / CONV_2D invocations in this process ran the GEMV (tests check
// the dispatch).
std::int64_t Int8GemvInvocations();

}  // namespace xnor_lite

#endif  // XNOR_LITE_NATIVE_INT8_GEMV_H_
