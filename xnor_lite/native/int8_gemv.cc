// The int8 GEMV path of FULLY_CONNECTED and CONV_2D (see int8_gemv.h).
//
// Assumptions, for LiteRT 2.2.0 (tflite/kernels/fully_connected.cc, conv.cc,
// internal/optimized/integer_ops/{fully_connected,conv}.h, cpu_backend_gemm.h,
// cpu_backend_gemm_custom_gemv.h):
// - an int8 FULLY_CONNECTED with per-tensor int8 weights (FullyConnectedInt8) and an int8
//   CONV_2D (ConvPerChannel) both end in cpu_backend_gemm::Gemm with the weights as a
//   row-major LHS, the input (or its im2col copy) as the RHS and one RHS column at batch 1 with
//   a 1x1 output map; Gemm then takes CustomGemv, as the interpreter's own CpuBackendContext
//   does not cache (`use_caching()` is off unless the interpreter options ask for it, which the
//   Python interpreter never does), provided LHS rows >= 4 and depth >= 8 (fewer go to ruy,
//   which rounds differently: those nodes stay on LiteRT's kernel);
// - CustomGemv's int8 requantization is: + bias, << max(exponent, 0), vqrdmulh by the fixed-point
//   multiplier, rounding shift right by -min(exponent, 0), + output zero point, saturating
//   narrow, clamp (RequantizeToInt8 below, with the same intrinsics on aarch64);
// - the multipliers, exponents and clamp come from the functions the kernels' Prepare calls
//   (GetQuantizedConvolutionMultipler + QuantizeMultiplier + CalculateActivationRangeQuantized
//   for FULLY_CONNECTED, PopulateConvolutionQuantizationParams for CONV_2D), compiled here from
//   the same LiteRT release's kernel_util.cc and quantization_util.cc;
// - FULLY_CONNECTED subtracts the weights' zero point (we take only 0); CONV_2D takes its
//   weights as symmetric (zero point ignored), as we do.

#include "int8_gemv.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <utility>

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "backend_context.h"
#include "int8_conv.h"
#include "kernel_util.h"
#include "ruy/context.h"
#include "ruy/thread_pool.h"
#include "tflite/core/c/builtin_op_data.h"
#include "tflite/kernels/cpu_backend_context.h"
#include "tflite/kernels/internal/quantization_util.h"
#include "tflite/kernels/internal/tensor_ctypes.h"
#include "tflite/kernels/kernel_util.h"
#include "tflite/kernels/padding.h"

namespace xnor_lite {
namespace {

std::atomic<std::int64_t> gemv_invocations{0};

constexpr int kBlockBytes = PackedInt8Rows::kRows * PackedInt8Rows::kChunk;  // one chunk of a block

}  // namespace

bool PackedInt8Rows::Pack(const std::int8_t* weights, int rows, int depth) {
  std::vector<std::int32_t> sums(rows);
  for (int row = 0; row < rows; ++row) {
    const std::int8_t* src = weights + static_cast<std::size_t>(row) * depth;
    std::int32_t sum = 0;
    std::int8_t lowest = 0;
    for (int k = 0; k < depth; ++k) {
      sum += src[k];
      lowest = std::min(lowest, src[k]);
    }
    if (lowest == -128) return false;
    sums[row] = sum;
  }
  rows_ = rows;
  depth_ = depth;
  chunks_ = CeilDiv(CeilDiv(depth, kChunk), kChunkMultiple) * kChunkMultiple;
  blocks_ = CeilDiv(rows, kRows);
  packed_.assign(static_cast<std::size_t>(blocks_) * chunks_ * kBlockBytes, 0);
  row_sums_ = std::move(sums);
  for (int row = 0; row < rows; ++row) {
    const std::int8_t* src = weights + static_cast<std::size_t>(row) * depth;
    std::int8_t* dst = packed_.data() + static_cast<std::size_t>(row / kRows) * chunks_ * kBlockBytes +
                       (row % kRows) * kChunk;
    int k = 0;
    for (; k + kChunk <= depth; k += kChunk, dst += kBlockBytes) std::memcpy(dst, src + k, kChunk);
    if (k < depth) std::memcpy(dst, src + k, depth - k);
  }
  input_.assign(static_cast<std::size_t>(chunks_) * kChunk, 0);
  block_sums_.assign(static_cast<std::size_t>(blocks_) * kRows, 0);
  return true;
}

#if defined(__aarch64__)

// Per block of 4 rows, two chunks of 16 columns a step: each row's 16 products of a chunk in
// int16 pairs (smull + smlal2; |weight| <= 127 keeps a pair within int16), added pairwise into
// the row's int32 sums (sadalp): 3 loads and 24 multiply-adds for 128 MACs. In assembly, as GCC
// copies the multi-register loads' registers around (11 extra moves a step).
static void BlockDots(const std::int8_t* packed, const std::int8_t* input, int chunks,
                      int first_block, int end_block, std::int32_t* sums) {
  for (int block = first_block; block < end_block; ++block) {
    const std::int8_t* w = packed + static_cast<std::size_t>(block) * chunks * kBlockBytes;
    const std::int8_t* x = input;
    int steps = chunks / 2;  // >= 1: chunks is a positive multiple of 2
    int32x4_t s0 = vdupq_n_s32(0), s1 = s0, s2 = s0, s3 = s0;
    asm volatile(
        "1:\n"
        "ld1 {v0.16b, v1.16b}, [%[x]], #32\n"
        "ld1 {v16.16b, v17.16b, v18.16b, v19.16b}, [%[w]], #64\n"
        "ld1 {v20.16b, v21.16b, v22.16b, v23.16b}, [%[w]], #64\n"
        "smull v24.8h, v16.8b, v0.8b\n"
        "smull v25.8h, v17.8b, v0.8b\n"
        "smull v26.8h, v18.8b, v0.8b\n"
        "smull v27.8h, v19.8b, v0.8b\n"
        "smull v28.8h, v20.8b, v1.8b\n"
        "smull v29.8h, v21.8b, v1.8b\n"
        "smull v30.8h, v22.8b, v1.8b\n"
        "smull v31.8h, v23.8b, v1.8b\n"
        "smlal2 v24.8h, v16.16b, v0.16b\n"
        "smlal2 v25.8h, v17.16b, v0.16b\n"
        "smlal2 v26.8h, v18.16b, v0.16b\n"
        "smlal2 v27.8h, v19.16b, v0.16b\n"
        "smlal2 v28.8h, v20.16b, v1.16b\n"
        "smlal2 v29.8h, v21.16b, v1.16b\n"
        "smlal2 v30.8h, v22.16b, v1.16b\n"
        "smlal2 v31.8h, v23.16b, v1.16b\n"
        "subs %w[steps], %w[steps], #1\n"
        "sadalp %[s0].4s, v24.8h\n"
        "sadalp %[s1].4s, v25.8h\n"
        "sadalp %[s2].4s, v26.8h\n"
        "sadalp %[s3].4s, v27.8h\n"
        "sadalp %[s0].4s, v28.8h\n"
        "sadalp %[s1].4s, v29.8h\n"
        "sadalp %[s2].4s, v30.8h\n"
        "sadalp %[s3].4s, v31.8h\n"
        "b.ne 1b\n"
        : [x] "+r"(x), [w] "+r"(w), [steps] "+r"(steps), [s0] "+w"(s0), [s1] "+w"(s1),
          [s2] "+w"(s2), [s3] "+w"(s3)
        :
        : "cc", "memory", "v0", "v1", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23",
          "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31");
    // (sum s0, sum s1, sum s2, sum s3) in two pairwise adds.
    vst1q_s32(sums + block * 4, vpaddq_s32(vpaddq_s32(s0, s1), vpaddq_s32(s2, s3)));
  }
}

// The same on a CPU with the dot-product instructions (ARMv8.2-A's option, e.g. a Raspberry
// Pi 5's Cortex-A76): one sdot per row and chunk, 4 products into each int32 lane. The library
// is built for ARMv8.0-A: only this function may use sdot, and it runs only where the CPU has it.
static void BlockDotsDotProduct(const std::int8_t* packed, const std::int8_t* input, int chunks,
                                int first_block, int end_block, std::int32_t* sums) {
  for (int block = first_block; block < end_block; ++block) {
    const std::int8_t* w = packed + static_cast<std::size_t>(block) * chunks * kBlockBytes;
    const std::int8_t* x = input;
    int steps = chunks / 2;
    int32x4_t s0 = vdupq_n_s32(0), s1 = s0, s2 = s0, s3 = s0;
    asm volatile(
        // (GNU as takes sdot under armv8.2-a+dotprod, not armv8-a+dotprod.)
        ".arch armv8.2-a+dotprod\n"
        "1:\n"
        "ld1 {v0.16b, v1.16b}, [%[x]], #32\n"
        "ld1 {v16.16b, v17.16b, v18.16b, v19.16b}, [%[w]], #64\n"
        "ld1 {v20.16b, v21.16b, v22.16b, v23.16b}, [%[w]], #64\n"
        "subs %w[steps], %w[steps], #1\n"
        "sdot %[s0].4s, v16.16b, v0.16b\n"
        "sdot %[s1].4s, v17.16b, v0.16b\n"
        "sdot %[s2].4s, v18.16b, v0.16b\n"
        "sdot %[s3].4s, v19.16b, v0.16b\n"
        "sdot %[s0].4s, v20.16b, v1.16b\n"
        "sdot %[s1].4s, v21.16b, v1.16b\n"
        "sdot %[s2].4s, v22.16b, v1.16b\n"
        "sdot %[s3].4s, v23.16b, v1.16b\n"
        "b.ne 1b\n"
        ".arch armv8-a\n"
        : [x] "+r"(x), [w] "+r"(w), [steps] "+r"(steps), [s0] "+w"(s0), [s1] "+w"(s1),
          [s2] "+w"(s2), [s3] "+w"(s3)
        :
        : "cc", "memory", "v0", "v1", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23");
    vst1q_s32(sums + block * 4, vpaddq_s32(vpaddq_s32(s0, s1), vpaddq_s32(s2, s3)));
  }
}

using BlockDotsFunction = void (*)(const std::int8_t*, const std::int8_t*, int, int, int, std::int32_t*);

// sdot where the CPU has it, else smull/sadalp.
static BlockDotsFunction ChooseBlockDots() {
  return CpuHasDotProduct() ? BlockDotsDotProduct : BlockDots;
}

#else

static void BlockDots(const std::int8_t* packed, const std::int8_t* input, int chunks,
                      int first_block, int end_block, std::int32_t* sums) {
  constexpr int kRows = PackedInt8Rows::kRows, kChunk = PackedInt8Rows::kChunk;
  for (int block = first_block; block < end_block; ++block) {
    const std::int8_t* w = packed + static_cast<std::size_t>(block) * chunks * kBlockBytes;
    std::int32_t acc[kRows] = {0, 0, 0, 0};
    for (int chunk = 0; chunk < chunks; ++chunk, w += kBlockBytes) {
      const std::int8_t* x = input + chunk * kChunk;
      for (int lane = 0; lane < kRows; ++lane) {
        std::int32_t sum = 0;
        for (int i = 0; i < kChunk; ++i) sum += w[lane * kChunk + i] * x[i];
        acc[lane] += sum;
      }
    }
    std::copy(acc, acc + kRows, sums + block * kRows);
  }
}

using BlockDotsFunction = void (*)(const std::int8_t*, const std::int8_t*, int, int, int, std::int32_t*);

static BlockDotsFunction ChooseBlockDots() { return BlockDots; }

#endif

namespace {

// The kernel for this CPU, chosen once.
const BlockDotsFunction block_dots = ChooseBlockDots();

// Less work than this per thread costs more in waking threads than it saves.
constexpr std::int64_t kMinMacsPerThread = 1 << 16;

}  // namespace

void PackedInt8Rows::DotProducts(const std::int8_t* input, std::int32_t* sums,
                                 ruy::ThreadPool* pool, int threads) {
  std::memcpy(input_.data(), input, static_cast<std::size_t>(depth_));
  const std::int64_t macs = static_cast<std::int64_t>(blocks_) * kRows * chunks_ * kChunk;
  const int shares = ShareCount(pool, threads, blocks_, macs, kMinMacsPerThread);
  RunInShares(pool, shares, blocks_, [this](int first, int end, int) {
    block_dots(packed_.data(), input_.data(), chunks_, first, end, block_sums_.data());
  });
  std::copy(block_sums_.begin(), block_sums_.begin() + rows_, sums);
}

#if defined(__aarch64__)

// Four rows, with CustomGemvImpl's instructions in its order.
static inline void Requantize4(const std::int32_t* acc, const std::int32_t* multiplier,
                               const std::int32_t* shift, std::int32_t output_zero_point,
                               std::int8_t act_min, std::int8_t act_max, std::int8_t* out, int n) {
  const int32x4_t exponent = vld1q_s32(shift);
  int32x4_t v = vshlq_s32(vld1q_s32(acc), vmaxq_s32(exponent, vdupq_n_s32(0)));
  v = vqrdmulhq_s32(v, vld1q_s32(multiplier));
  v = vrshlq_s32(v, vminq_s32(exponent, vdupq_n_s32(0)));
  v = vaddq_s32(v, vdupq_n_s32(output_zero_point));
  const int16x4_t v16 = vqmovn_s32(v);
  int8x8_t v8 = vqmovn_s16(vcombine_s16(v16, v16));
  v8 = vmin_s8(vmax_s8(v8, vdup_n_s8(act_min)), vdup_n_s8(act_max));
  std::int8_t lanes[8];
  vst1_s8(lanes, v8);
  std::copy(lanes, lanes + n, out);
}

void RequantizeToInt8(const std::int32_t* acc, const std::int32_t* multiplier,
                      const std::int32_t* shift, int rows, std::int32_t output_zero_point,
                      std::int32_t act_min, std::int32_t act_max, std::int8_t* out) {
  int row = 0;
  for (; row + 4 <= rows; row += 4) {
    Requantize4(acc + row, multiplier + row, shift + row, output_zero_point,
                static_cast<std::int8_t>(act_min), static_cast<std::int8_t>(act_max), out + row, 4);
  }
  if (row < rows) {  // the last 1-3 rows, through zero-padded lanes
    std::int32_t a[4] = {0, 0, 0, 0}, m[4] = {0, 0, 0, 0}, s[4] = {0, 0, 0, 0};
    const int n = rows - row;
    std::copy(acc + row, acc + rows, a);
    std::copy(multiplier + row, multiplier + rows, m);
    std::copy(shift + row, shift + rows, s);
    Requantize4(a, m, s, output_zero_point, static_cast<std::int8_t>(act_min),
                static_cast<std::int8_t>(act_max), out + row, n);
  }
}

#else

// The NEON instructions above, one lane at a time (two's-complement wrapping where they wrap).
void RequantizeToInt8(const std::int32_t* acc, const std::int32_t* multiplier,
                      const std::int32_t* shift, int rows, std::int32_t output_zero_point,
                      std::int32_t act_min, std::int32_t act_max, std::int8_t* out) {
  for (int row = 0; row < rows; ++row) {
    const int left = std::max(shift[row], 0), right = std::max(-shift[row], 0);
    // vshlq_s32: a plain (wrapping) left shift.
    std::int32_t v = left >= 32 ? 0 : static_cast<std::int32_t>(static_cast<std::uint32_t>(acc[row]) << left);
    // vqrdmulhq_s32: (2 v m + 2^31) >> 32, saturating only for INT32_MIN * INT32_MIN.
    if (v == INT32_MIN && multiplier[row] == INT32_MIN) {
      v = INT32_MAX;
    } else {
      v = static_cast<std::int32_t>((static_cast<std::int64_t>(v) * multiplier[row] + (std::int64_t{1} << 30)) >> 31);
    }
    // vrshlq_s32 by -right: round half up.
    if (right > 0) {
      v = static_cast<std::int32_t>((static_cast<std::int64_t>(v) + (std::int64_t{1} << (right - 1))) >> right);
    }
    v = static_cast<std::int32_t>(static_cast<std::uint32_t>(v) + static_cast<std::uint32_t>(output_zero_point));
    out[row] = static_cast<std::int8_t>(std::min(std::max(v, act_min), act_max));
  }
}

#endif

namespace {

enum { kInput = 0, kWeights = 1, kBias = 2 };

// A wrapped upstream registration. Init, the only entry point that cannot reach the node's
// data, is one function per slot; the rest are shared.
struct Slot {
  TfLiteRegistration upstream{};
  Int8GemvOp op = Int8GemvOp::kFullyConnected;
  TfLiteRegistration wrapped{};
  bool used = false;
};
constexpr int kSlots = 8;
Slot slots[kSlots];
std::mutex slots_mutex;

// The user data of a wrapped node: LiteRT's own, and ours.
struct NodeData {
  const Slot* slot = nullptr;
  void* upstream = nullptr;
  bool gemv = false;  // decided by Prepare
  bool conv = false;  // decided by Prepare, when not `gemv`
  Int8Conv convolution;
  const void* packed_from = nullptr;  // the weights `rows` holds
  PackedInt8Rows rows;
  std::vector<std::int32_t> multiplier, shift;  // per row
  std::int32_t input_zero_point = 0, output_zero_point = 0, act_min = 0, act_max = 0;
  std::vector<std::int32_t> acc;
};

// Runs one of LiteRT's entry points on `node` with LiteRT's user data in place.
template <typename Call>
TfLiteStatus AsUpstream(TfLiteNode* node, NodeData* data, Call call) {
  void* ours = node->user_data;
  node->user_data = data->upstream;
  const TfLiteStatus status = call();
  node->user_data = ours;
  return status;
}

bool Constant(const TfLiteTensor* tensor) {
  return tensor != nullptr && tensor->allocation_type == kTfLiteMmapRo && tensor->data.raw != nullptr;
}

bool ClampActivation(TfLiteFusedActivation activation) {
  return activation == kTfLiteActNone || activation == kTfLiteActRelu || activation == kTfLiteActRelu6;
}

// Filter scales of an affine-quantized tensor (0 when it is not one).
int ScaleCount(const TfLiteTensor* tensor) {
  if (tensor->quantization.type != kTfLiteAffineQuantization) return 0;
  const auto* affine = static_cast<const TfLiteAffineQuantization*>(tensor->quantization.params);
  return affine == nullptr || affine->scale == nullptr ? 0 : affine->scale->size;
}

// The node's int8 tensors when it is an int8 x int8 -> int8 product with constant dense weights
// and an optional int32 bias; nullptr inputs otherwise.
struct Tensors {
  const TfLiteTensor* input = nullptr;
  const TfLiteTensor* weights = nullptr;
  const TfLiteTensor* bias = nullptr;
  TfLiteTensor* output = nullptr;
};

bool Int8Tensors(TfLiteContext* context, TfLiteNode* node, Tensors* t) {
  if (node->inputs->size < 2 || node->inputs->size > 3 || node->outputs->size != 1) return false;
  t->input = tflite::GetInput(context, node, kInput);
  t->weights = tflite::GetInput(context, node, kWeights);
  t->bias = node->inputs->size == 3 ? tflite::GetOptionalInputTensor(context, node, kBias) : nullptr;
  t->output = tflite::GetOutput(context, node, 0);
  if (t->input == nullptr || t->weights == nullptr || t->output == nullptr) return false;
  if (t->input->type != kTfLiteInt8 || t->weights->type != kTfLiteInt8 || t->output->type != kTfLiteInt8)
    return false;
  if (t->bias != nullptr && t->bias->type != kTfLiteInt32) return false;
  if (!Constant(t->weights) || t->weights->sparsity != nullptr) return false;
  return t->input->quantization.type == kTfLiteAffineQuantization &&
         t->output->quantization.type == kTfLiteAffineQuantization && ScaleCount(t->weights) > 0;
}

// The rows and depth LiteRT's CustomGemv takes (rows >= 4, depth >= 8; else it uses ruy).
bool CustomGemvShape(int rows, int depth) { return rows >= 4 && depth >= 8; }

// FULLY_CONNECTED: int8, per-tensor weights with zero point 0, batch 1.
bool PrepareFullyConnected(TfLiteContext* context, TfLiteNode* node, NodeData* data, Tensors* t) {
  const auto* params = static_cast<const TfLiteFullyConnectedParams*>(node->builtin_data);
  if (params == nullptr || params->weights_format != kTfLiteFullyConnectedWeightsFormatDefault ||
      !ClampActivation(params->activation))
    return false;
  if (!Int8Tensors(context, node, t) || tflite::NumDimensions(t->weights) != 2) return false;
  if (ScaleCount(t->weights) != 1 || t->weights->params.zero_point != 0) return false;
  const int rows = tflite::SizeOfDimension(t->weights, 0), depth = tflite::SizeOfDimension(t->weights, 1);
  if (!CustomGemvShape(rows, depth)) return false;
  if (tflite::NumElements(t->input) != depth || tflite::NumElements(t->output) != rows) return false;
  if (t->bias != nullptr && tflite::NumElements(t->bias) != rows) return false;
  double real_multiplier = 0;
  if (tflite::GetQuantizedConvolutionMultipler(context, t->input, t->weights, t->bias, t->output,
                                               &real_multiplier) != kTfLiteOk)
    return false;
  std::int32_t multiplier;
  int shift;
  tflite::QuantizeMultiplier(real_multiplier, &multiplier, &shift);
  if (tflite::CalculateActivationRangeQuantized(context, params->activation, t->output, &data->act_min,
                                                &data->act_max) != kTfLiteOk)
    return false;
  data->multiplier.assign(rows, multiplier);
  data->shift.assign(rows, shift);
  return true;
}

// CONV_2D: int8, batch 1, a 1x1 output map whose filter covers the whole input map (no padding,
// no dilation, one group): a 1x1 conv on a 1x1 map, as the converter writes a 1x1-map Dense.
bool PrepareConv2D(TfLiteContext* context, TfLiteNode* node, NodeData* data, Tensors* t) {
  const auto* params = static_cast<const TfLiteConvParams*>(node->builtin_data);
  if (params == nullptr || !ClampActivation(params->activation)) return false;
  if (!Int8Tensors(context, node, t)) return false;
  if (tflite::NumDimensions(t->input) != 4 || tflite::NumDimensions(t->weights) != 4 ||
      tflite::NumDimensions(t->output) != 4)
    return false;
  const int rows = tflite::SizeOfDimension(t->weights, 0);
  const int filter_height = tflite::SizeOfDimension(t->weights, 1);
  const int filter_width = tflite::SizeOfDimension(t->weights, 2);
  const int channels = tflite::SizeOfDimension(t->weights, 3);
  if (tflite::SizeOfDimension(t->input, 0) != 1 || tflite::SizeOfDimension(t->input, 1) != filter_height ||
      tflite::SizeOfDimension(t->input, 2) != filter_width || tflite::SizeOfDimension(t->input, 3) != channels)
    return false;
  if (tflite::SizeOfDimension(t->output, 0) != 1 || tflite::SizeOfDimension(t->output, 1) != 1 ||
      tflite::SizeOfDimension(t->output, 2) != 1 || tflite::SizeOfDimension(t->output, 3) != rows)
    return false;
  if ((filter_height > 1 && params->dilation_height_factor != 1) ||
      (filter_width > 1 && params->dilation_width_factor != 1))
    return false;
  const int depth = filter_height * filter_width * channels;
  if (!CustomGemvShape(rows, depth)) return false;
  if (ScaleCount(t->weights) != 1 &&
      (ScaleCount(t->weights) != rows ||
       static_cast<const TfLiteAffineQuantization*>(t->weights->quantization.params)->quantized_dimension != 0))
    return false;
  if (t->bias != nullptr && tflite::NumElements(t->bias) != rows) return false;
  data->multiplier.assign(rows, 0);
  data->shift.assign(rows, 0);
  std::int32_t multiplier;
  int shift;
  return tflite::PopulateConvolutionQuantizationParams(
             context, t->input, t->weights, t->bias, t->output, params->activation, &multiplier, &shift,
             &data->act_min, &data->act_max, data->multiplier.data(), data->shift.data(), rows) == kTfLiteOk;
}

bool PrepareGemv(TfLiteContext* context, TfLiteNode* node, NodeData* data) {
  Tensors t;
  const bool ok = data->slot->op == Int8GemvOp::kFullyConnected
                      ? PrepareFullyConnected(context, node, data, &t)
                      : PrepareConv2D(context, node, data, &t);
  if (!ok) return false;
  const int rows = static_cast<int>(data->multiplier.size());
  const int depth = static_cast<int>(tflite::NumElements(t.weights) / rows);
  if (data->packed_from != t.weights->data.raw || data->rows.rows() != rows || data->rows.depth() != depth) {
    data->packed_from = nullptr;
    if (!data->rows.Pack(tflite::GetTensorData<std::int8_t>(t.weights), rows, depth)) return false;
    data->packed_from = t.weights->data.raw;
  }
  data->input_zero_point = t.input->params.zero_point;
  data->output_zero_point = t.output->params.zero_point;
  data->acc.assign(rows, 0);
  return true;
}

// CONV_2D that our GEMV does not take, on a CPU without the dot-product instruction
// (Int8Conv::Available()): int8, per-tensor or per-channel filter, one group, no dilation, any
// filter size, stride, padding and batch, and more than one output pixel (a single one is one
// column, which LiteRT runs through CustomGemv's rounding rather than ruy's).
bool PrepareConvolution(TfLiteContext* context, TfLiteNode* node, NodeData* data) {
  if (data->slot->op != Int8GemvOp::kConv2D || !Int8Conv::Available()) return false;
  const auto* params = static_cast<const TfLiteConvParams*>(node->builtin_data);
  if (params == nullptr || !ClampActivation(params->activation)) return false;
  if (params->dilation_height_factor != 1 || params->dilation_width_factor != 1) return false;
  Tensors t;
  if (!Int8Tensors(context, node, &t)) return false;
  if (tflite::NumDimensions(t.input) != 4 || tflite::NumDimensions(t.weights) != 4 ||
      tflite::NumDimensions(t.output) != 4)
    return false;
  Int8ConvShape shape;
  shape.batch = tflite::SizeOfDimension(t.input, 0);
  shape.input_height = tflite::SizeOfDimension(t.input, 1);
  shape.input_width = tflite::SizeOfDimension(t.input, 2);
  shape.input_channels = tflite::SizeOfDimension(t.input, 3);
  shape.output_channels = tflite::SizeOfDimension(t.weights, 0);
  shape.filter_height = tflite::SizeOfDimension(t.weights, 1);
  shape.filter_width = tflite::SizeOfDimension(t.weights, 2);
  shape.stride_height = params->stride_height;
  shape.stride_width = params->stride_width;
  if (tflite::SizeOfDimension(t.weights, 3) != shape.input_channels) return false;  // groups
  // LiteRT's own padding (conv.cc's Prepare computes it with the same function).
  const TfLitePaddingValues padding = tflite::ComputePaddingHeightWidth(
      shape.stride_height, shape.stride_width, 1, 1, shape.input_height, shape.input_width,
      shape.filter_height, shape.filter_width, params->padding, &shape.output_height, &shape.output_width);
  shape.pad_top = padding.height;
  shape.pad_left = padding.width;
  if (tflite::SizeOfDimension(t.output, 0) != shape.batch ||
      tflite::SizeOfDimension(t.output, 1) != shape.output_height ||
      tflite::SizeOfDimension(t.output, 2) != shape.output_width ||
      tflite::SizeOfDimension(t.output, 3) != shape.output_channels)
    return false;
  if (static_cast<std::int64_t>(shape.batch) * shape.output_height * shape.output_width < 2) return false;
  const int rows = shape.output_channels;
  if (ScaleCount(t.weights) != 1 &&
      (ScaleCount(t.weights) != rows ||
       static_cast<const TfLiteAffineQuantization*>(t.weights->quantization.params)->quantized_dimension != 0))
    return false;
  if (t.bias != nullptr && tflite::NumElements(t.bias) != rows) return false;
  std::vector<std::int32_t> multipliers(rows), shifts(rows);
  std::int32_t multiplier, act_min, act_max;
  int shift;
  if (tflite::PopulateConvolutionQuantizationParams(context, t.input, t.weights, t.bias, t.output,
                                                    params->activation, &multiplier, &shift, &act_min,
                                                    &act_max, multipliers.data(), shifts.data(),
                                                    rows) != kTfLiteOk)
    return false;
  return data->convolution.Prepare(shape, tflite::GetTensorData<std::int8_t>(t.weights), multipliers.data(),
                                   shifts.data(), t.input->params.zero_point, t.output->params.zero_point,
                                   act_min, act_max);
}

TfLiteStatus EvalConvolution(TfLiteContext* context, TfLiteNode* node, NodeData* data) {
  const TfLiteTensor* input = tflite::GetInput(context, node, kInput);
  const TfLiteTensor* bias = node->inputs->size == 3 ? tflite::GetOptionalInputTensor(context, node, kBias) : nullptr;
  TfLiteTensor* output = tflite::GetOutput(context, node, 0);
  tflite::CpuBackendContext* backend = tflite::CpuBackendContext::GetFromContext(context);
  data->convolution.Run(tflite::GetTensorData<std::int8_t>(input),
                        bias == nullptr ? nullptr : tflite::GetTensorData<std::int32_t>(bias),
                        tflite::GetTensorData<std::int8_t>(output), backend->ruy_context()->mutable_thread_pool(),
                        backend->max_num_threads());
  return kTfLiteOk;
}

TfLiteStatus EvalGemv(TfLiteContext* context, TfLiteNode* node, NodeData* data) {
  const TfLiteTensor* input = tflite::GetInput(context, node, kInput);
  const TfLiteTensor* bias = node->inputs->size == 3 ? tflite::GetOptionalInputTensor(context, node, kBias) : nullptr;
  TfLiteTensor* output = tflite::GetOutput(context, node, 0);
  // The interpreter's threads, through the ruy thread pool LCE's kernels use (backend_context.cc).
  tflite::CpuBackendContext* backend = tflite::CpuBackendContext::GetFromContext(context);
  std::int32_t* acc = data->acc.data();
  data->rows.DotProducts(tflite::GetTensorData<std::int8_t>(input), acc,
                         backend->ruy_context()->mutable_thread_pool(), backend->max_num_threads());
  // sum_k w (x - zx) + bias = sum_k w x - zx sum_k w + bias, in wrapping int32 like LiteRT's.
  const std::vector<std::int32_t>& row_sums = data->rows.row_sums();
  const std::int32_t* bias_data = bias == nullptr ? nullptr : tflite::GetTensorData<std::int32_t>(bias);
  const std::uint32_t zx = static_cast<std::uint32_t>(data->input_zero_point);
  for (int row = 0; row < data->rows.rows(); ++row) {
    std::uint32_t value = static_cast<std::uint32_t>(acc[row]) - zx * static_cast<std::uint32_t>(row_sums[row]);
    if (bias_data != nullptr) value += static_cast<std::uint32_t>(bias_data[row]);
    acc[row] = static_cast<std::int32_t>(value);
  }
  RequantizeToInt8(acc, data->multiplier.data(), data->shift.data(), data->rows.rows(),
                   data->output_zero_point, data->act_min, data->act_max,
                   tflite::GetTensorData<std::int8_t>(output));
  gemv_invocations.fetch_add(1, std::memory_order_relaxed);
  return kTfLiteOk;
}

template <int kSlot>
void* Init(TfLiteContext* context, const char* buffer, std::size_t length) {
  auto* data = new NodeData;
  data->slot = &slots[kSlot];
  const TfLiteRegistration& upstream = slots[kSlot].upstream;
  data->upstream = upstream.init == nullptr ? nullptr : upstream.init(context, buffer, length);
  AcquireBackendContext(context);
  return data;
}

void Free(TfLiteContext* context, void* buffer) {
  auto* data = static_cast<NodeData*>(buffer);
  if (data->slot->upstream.free != nullptr) data->slot->upstream.free(context, data->upstream);
  ReleaseBackendContext(context);
  delete data;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  auto* data = static_cast<NodeData*>(node->user_data);
  const TfLiteRegistration& upstream = data->slot->upstream;
  // LiteRT checks the node and sizes the output (and its own temporaries) in any case.
  if (upstream.prepare != nullptr) {
    TF_LITE_ENSURE_STATUS(AsUpstream(node, data, [&] { return upstream.prepare(context, node); }));
  }
  data->gemv = PrepareGemv(context, node, data);
  data->conv = !data->gemv && PrepareConvolution(context, node, data);
  return kTfLiteOk;
}

TfLiteStatus Invoke(TfLiteContext* context, TfLiteNode* node) {
  auto* data = static_cast<NodeData*>(node->user_data);
  if (data->gemv) return EvalGemv(context, node, data);
  if (data->conv) return EvalConvolution(context, node, data);
  const TfLiteRegistration& upstream = data->slot->upstream;
  return AsUpstream(node, data, [&] { return upstream.invoke(context, node); });
}

template <int... kSlot>
constexpr std::array<void* (*)(TfLiteContext*, const char*, std::size_t), sizeof...(kSlot)> InitTable(
    std::integer_sequence<int, kSlot...>) {
  return {&Init<kSlot>...};
}

bool SameKernel(const TfLiteRegistration& a, const TfLiteRegistration& b) {
  return a.init == b.init && a.free == b.free && a.prepare == b.prepare && a.invoke == b.invoke &&
         a.profiling_string == b.profiling_string && a.async_kernel == b.async_kernel &&
         a.inplace_operator == b.inplace_operator;
}

}  // namespace

const TfLiteRegistration* WithInt8Gemv(const TfLiteRegistration* upstream, Int8GemvOp op) {
  static constexpr auto inits = InitTable(std::make_integer_sequence<int, kSlots>());
  if (upstream == nullptr || upstream->invoke == nullptr || upstream->registration_external != nullptr ||
      upstream->async_kernel != nullptr || upstream->invoke == Invoke) {
    return nullptr;  // nothing to wrap, a kind of registration we do not know, or ours already
  }
  std::lock_guard<std::mutex> lock(slots_mutex);
  for (int i = 0; i < kSlots; ++i) {
    Slot& slot = slots[i];
    if (slot.used && (slot.op != op || !SameKernel(slot.upstream, *upstream))) continue;
    if (!slot.used) {
      slot.upstream = *upstream;
      slot.op = op;
      slot.wrapped = *upstream;
      slot.wrapped.init = inits[i];
      slot.wrapped.free = Free;
      slot.wrapped.prepare = Prepare;
      slot.wrapped.invoke = Invoke;
      slot.wrapped.profiling_string = nullptr;  // would see our user data
      slot.used = true;
    }
    return &slot.wrapped;
  }
  return nullptr;  // more distinct upstream kernels than slots: keep LiteRT's
}

std::int64_t Int8GemvInvocations() { return gemv_invocations.load(std::memory_order_relaxed); }

}  // namespace xnor_lite
