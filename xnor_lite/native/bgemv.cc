// The binary GEMV path of LceBconv2d (see bgemv.h).
//
// Assumptions, for LCE 0.16.0 (tflite/kernels/bconv2d.cc, core/bconv2d/):
// - the op's custom options are a flexbuffer map with the keys read in ReadOptions;
// - inputs are (bitpacked input, bitpacked filter, post_activation_multiplier,
//   post_activation_bias, thresholds), output 0 is float32, int8 or bitpacked int32;
// - bitpacked tensors pad each pixel's channels with zero bits, in inputs and filters alike,
//   so padding never counts in an xor-popcount;
// - the output transform gets the raw xor-popcount over filter_height * filter_width *
//   bitpacked words, and for float/int8 its multiplier, bias and clamp are derived from the op's
//   tensors as LCE's OneTimeSetup derives them (ComputeOutputTransform below).

#include "bgemv.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "flatbuffers/flexbuffers.h"
#include "kernel_util.h"
#include "larq_compute_engine/core/bconv2d/output_transform.h"
#include "larq_compute_engine/core/bitpacking/bitpack.h"
#include "larq_compute_engine/core/types.h"
#include "larq_compute_engine/tflite/kernels/utils.h"
#include "ruy/context.h"
#include "ruy/thread_pool.h"
#include "tensorflow/lite/kernels/cpu_backend_context.h"
#include "tensorflow/lite/kernels/internal/tensor_ctypes.h"
#include "tensorflow/lite/kernels/kernel_util.h"

namespace xnor_lite {
namespace {

using compute_engine::core::TBitpacked;
using compute_engine::core::bconv2d::OutputTransform;
using compute_engine::core::bitpacking::GetBitpackedSize;

std::atomic<std::int64_t> gemv_invocations{0};

}  // namespace

void PackedBinaryRows::Pack(const std::int32_t* filter, int rows, int words) {
  rows_ = rows;
  words_ = words;
  chunks_ = CeilDiv(CeilDiv(words, kWordsPerChunk), kChunkMultiple) * kChunkMultiple;
  blocks_ = CeilDiv(rows, kRows);
  packed_.assign(static_cast<std::size_t>(blocks_) * chunks_ * kRows * kWordsPerChunk, 0);
  for (int row = 0; row < rows; ++row) {
    const int block = row / kRows, lane = row % kRows;
    for (int word = 0; word < words; ++word) {
      const int chunk = word / kWordsPerChunk;
      const std::size_t at =
          ((static_cast<std::size_t>(block) * chunks_ + chunk) * kRows + lane) * kWordsPerChunk +
          word % kWordsPerChunk;
      packed_[at] = static_cast<std::uint32_t>(filter[static_cast<std::size_t>(row) * words + word]);
    }
  }
  input_.assign(static_cast<std::size_t>(chunks_) * kWordsPerChunk, 0);
  block_sums_.assign(static_cast<std::size_t>(blocks_) * kRows, 0);
}

#if defined(__aarch64__)

// Adds the popcounts of (row lane's chunk ^ input chunk) of one chunk for the block's 4 rows
// to their byte counters c[4]: eor, cnt, add per row.
static inline void CountChunk(const std::uint8_t* w, uint8x16_t x, uint8x16_t c[4]) {
  const uint8x16x4_t rows = vld1q_u8_x4(w);
  c[0] = vaddq_u8(c[0], vcntq_u8(veorq_u8(rows.val[0], x)));
  c[1] = vaddq_u8(c[1], vcntq_u8(veorq_u8(rows.val[1], x)));
  c[2] = vaddq_u8(c[2], vcntq_u8(veorq_u8(rows.val[2], x)));
  c[3] = vaddq_u8(c[3], vcntq_u8(veorq_u8(rows.val[3], x)));
}

// Per 128-bit chunk and row: eor, cnt (bytes), add into byte counters, four chunks per loop
// step; the byte counters are widened into 32-bit sums (uaddlp + uadalp) before they can
// overflow.
static void BlockPopcounts(const std::uint32_t* packed, const std::uint32_t* input, int chunks,
                           int first_block, int end_block, std::int32_t* sums) {
  // A byte counter gains at most 8 per chunk: 28 chunks (a multiple of 4) stay below 256.
  constexpr int kChunksPerFlush = 28;
  for (int block = first_block; block < end_block; ++block) {
    const std::uint8_t* w = reinterpret_cast<const std::uint8_t*>(
        packed + static_cast<std::size_t>(block) * chunks * 16);
    const std::uint8_t* x = reinterpret_cast<const std::uint8_t*>(input);
    uint32x4_t s[4] = {vdupq_n_u32(0), vdupq_n_u32(0), vdupq_n_u32(0), vdupq_n_u32(0)};
    for (int done = 0; done < chunks;) {
      const int n = std::min(chunks - done, kChunksPerFlush);
      uint8x16_t c[4] = {vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0)};
      const std::uint8_t* const end = x + n * 16;
      for (; x + 64 <= end; x += 64, w += 256) {
        const uint8x16x4_t xs = vld1q_u8_x4(x);
        CountChunk(w, xs.val[0], c);
        CountChunk(w + 64, xs.val[1], c);
        CountChunk(w + 128, xs.val[2], c);
        CountChunk(w + 192, xs.val[3], c);
      }
      if (x < end) {  // two chunks left (chunks are a multiple of 2)
        const uint8x16x2_t xs = vld1q_u8_x2(x);
        CountChunk(w, xs.val[0], c);
        CountChunk(w + 64, xs.val[1], c);
        x += 32;
        w += 128;
      }
      for (int lane = 0; lane < 4; ++lane) s[lane] = vpadalq_u16(s[lane], vpaddlq_u8(c[lane]));
      done += n;
    }
    // (sum s0, sum s1, sum s2, sum s3) in two pairwise adds.
    const uint32x4_t total = vpaddq_u32(vpaddq_u32(s[0], s[1]), vpaddq_u32(s[2], s[3]));
    vst1q_s32(sums + block * 4, vreinterpretq_s32_u32(total));
  }
}

#else

static void BlockPopcounts(const std::uint32_t* packed, const std::uint32_t* input, int chunks,
                           int first_block, int end_block, std::int32_t* sums) {
  const int words = chunks * PackedBinaryRows::kWordsPerChunk;
  for (int block = first_block; block < end_block; ++block) {
    const std::uint32_t* w = packed + static_cast<std::size_t>(block) * chunks * 16;
    std::int32_t acc[4] = {0, 0, 0, 0};
    for (int word = 0; word < words; word += 2) {
      std::uint64_t x;
      std::memcpy(&x, input + word, 8);
      const std::uint32_t* chunk = w + (word / 4) * 16 + word % 4;
      for (int lane = 0; lane < 4; ++lane) {
        std::uint64_t v;
        std::memcpy(&v, chunk + lane * 4, 8);
        acc[lane] += __builtin_popcountll(v ^ x);
      }
    }
    std::copy(acc, acc + 4, sums + block * 4);
  }
}

#endif

namespace {

// Fewer rows than this per thread cost more in waking threads than they save.
constexpr int kMinBlocksPerThread = 64;

}  // namespace

void PackedBinaryRows::XorPopcounts(const std::int32_t* input, std::int32_t* popcounts,
                                    ruy::ThreadPool* pool, int threads) {
  std::memcpy(input_.data(), input, static_cast<std::size_t>(words_) * sizeof(std::int32_t));
  const int shares = ShareCount(pool, threads, blocks_, blocks_, kMinBlocksPerThread);
  RunInShares(pool, shares, blocks_, [this](int first, int end, int) {
    BlockPopcounts(packed_.data(), input_.data(), chunks_, first, end, block_sums_.data());
  });
  std::copy(block_sums_.begin(), block_sums_.begin() + rows_, popcounts);
}

namespace {

// LceBconv2d's inputs and output.
enum { kInput = 0, kFilter = 1, kMultiplier = 2, kBias = 3, kThresholds = 4 };

struct Options {
  bool valid = false;  // every key present
  int stride_height = 1, stride_width = 1, dilation_height = 1, dilation_width = 1;
  int channels_in = 0;
  TfLiteFusedActivation activation = kTfLiteActNone;
};

// The user data of a wrapped node: LCE's own, and ours.
struct NodeData {
  void* lce = nullptr;
  Options options;
  bool gemv = false;      // decided by Prepare
  bool set_up = false;    // weights packed and transform computed (first Eval after Prepare)
  int channels_out = 0;
  PackedBinaryRows rows;
  std::vector<std::int32_t> popcounts;
  // float / int8 output transform, as LCE's OneTimeSetup computes it
  std::vector<float> multiplier, bias;
  std::int32_t clamp_min = 0, clamp_max = 0;
};

const TfLiteRegistration* lce_registration = nullptr;

Options ReadOptions(const char* buffer, std::size_t length) {
  Options options;
  if (buffer == nullptr || length == 0) return options;
  const flexbuffers::Map map =
      flexbuffers::GetRoot(reinterpret_cast<const std::uint8_t*>(buffer), length).AsMap();
  for (const char* key : {"stride_height", "stride_width", "dilation_height_factor",
                          "dilation_width_factor", "channels_in", "fused_activation_function"}) {
    if (map[key].IsNull()) return options;
  }
  options.stride_height = map["stride_height"].AsInt32();
  options.stride_width = map["stride_width"].AsInt32();
  options.dilation_height = map["dilation_height_factor"].AsInt32();
  options.dilation_width = map["dilation_width_factor"].AsInt32();
  options.channels_in = map["channels_in"].AsInt32();
  options.activation = tflite::ConvertActivation(
      static_cast<tflite::ActivationFunctionType>(map["fused_activation_function"].AsInt32()));
  options.valid = true;
  return options;
}

// Runs one of LCE's entry points on `node` with LCE's user data in place.
template <typename Call>
TfLiteStatus AsLce(TfLiteNode* node, NodeData* data, Call call) {
  void* ours = node->user_data;
  node->user_data = data->lce;
  const TfLiteStatus status = call();
  node->user_data = ours;
  return status;
}

bool Constant(const TfLiteTensor* tensor) {
  return tensor != nullptr && tensor->allocation_type == kTfLiteMmapRo && tensor->data.raw != nullptr;
}

// Whether LCE's computation for `node` (already prepared by LCE) is one dot product of the
// whole bitpacked input with each filter row.
bool IsGemv(TfLiteContext* context, TfLiteNode* node, const Options& options) {
  if (!options.valid || node->inputs->size != 5) return false;
  const TfLiteTensor* input = tflite::GetInput(context, node, kInput);
  const TfLiteTensor* filter = tflite::GetInput(context, node, kFilter);
  const TfLiteTensor* output = tflite::GetOutput(context, node, 0);
  if (input == nullptr || filter == nullptr || output == nullptr) return false;
  if (tflite::NumDimensions(input) != 4 || tflite::NumDimensions(filter) != 4 ||
      tflite::NumDimensions(output) != 4)
    return false;
  if (input->type != kTfLiteInt32 || filter->type != kTfLiteInt32 || !Constant(filter)) return false;
  const int filter_height = tflite::SizeOfDimension(filter, 1);
  const int filter_width = tflite::SizeOfDimension(filter, 2);
  const int words = tflite::SizeOfDimension(filter, 3);
  // Batch 1 and a 1x1 output map whose receptive field is the whole input map: no padding
  // (with SAME and a 1x1 output, the padding is then zero too), no stride, no dilation.
  if (tflite::SizeOfDimension(input, 0) != 1 || tflite::SizeOfDimension(input, 1) != filter_height ||
      tflite::SizeOfDimension(input, 2) != filter_width || tflite::SizeOfDimension(input, 3) != words)
    return false;
  if (tflite::SizeOfDimension(output, 0) != 1 || tflite::SizeOfDimension(output, 1) != 1 ||
      tflite::SizeOfDimension(output, 2) != 1)
    return false;
  if ((filter_height > 1 && options.dilation_height != 1) ||
      (filter_width > 1 && options.dilation_width != 1))
    return false;
  // One group: the filter holds every input channel.
  if (words != GetBitpackedSize(options.channels_in)) return false;
  switch (output->type) {
    case kTfLiteFloat32:
    case kTfLiteInt8: {
      const TfLiteTensor* multiplier = tflite::GetInput(context, node, kMultiplier);
      const TfLiteTensor* bias = tflite::GetInput(context, node, kBias);
      return Constant(multiplier) && Constant(bias) && multiplier->type == kTfLiteFloat32 &&
             bias->type == kTfLiteFloat32;
    }
    case kTfLiteInt32: {
      const TfLiteTensor* thresholds = tflite::GetInput(context, node, kThresholds);
      return thresholds != nullptr && thresholds->type == kTfLiteInt32;
    }
    default:
      return false;
  }
}

// LCE's float/int8 output transform parameters for `node`: the back-transformation
// (popcount -> filter size - 2 * popcount), the fused activation's clamp and, for int8, the
// output's scale and zero point folded into the multiplier and bias, each computed by the same
// arithmetic (in double, then rounded to float) as LCE 0.16's OneTimeSetup, so that LCE's
// OutputTransform::Run gives bit-identical results.
void ComputeOutputTransform(TfLiteContext* context, TfLiteNode* node, NodeData* data) {
  const TfLiteTensor* filter = tflite::GetInput(context, node, kFilter);
  const TfLiteTensor* output = tflite::GetOutput(context, node, 0);
  const float* post_multiplier = tflite::GetTensorData<float>(tflite::GetInput(context, node, kMultiplier));
  const float* post_bias = tflite::GetTensorData<float>(tflite::GetInput(context, node, kBias));
  const std::int32_t kernel_size = tflite::SizeOfDimension(filter, 1) *
                                   tflite::SizeOfDimension(filter, 2) * data->options.channels_in;
  const bool int8 = output->type == kTfLiteInt8;
  const double scale = int8 ? output->params.scale : 1.0;
  const double zero_point = int8 ? output->params.zero_point : 0.0;
  data->multiplier.resize(data->channels_out);
  data->bias.resize(data->channels_out);
  for (int c = 0; c < data->channels_out; ++c) {
    const double m = post_multiplier[c];
    const double b = post_bias[c];
    data->multiplier[c] = -1 * m / scale;
    data->bias[c] = (b + static_cast<double>(kernel_size) * m) / scale + zero_point;
  }
  // The activation clamps kernel_size - 2 * popcount; in terms of 2 * popcount that is:
  std::int32_t low, high;
  tflite::CalculateActivationRange(data->options.activation, &low, &high);
  low = std::max(low, -kernel_size);
  high = std::min(high, kernel_size);
  data->clamp_min = kernel_size - high;
  data->clamp_max = kernel_size - low;
}

void SetUp(TfLiteContext* context, TfLiteNode* node, NodeData* data) {
  const TfLiteTensor* filter = tflite::GetInput(context, node, kFilter);
  data->channels_out = tflite::SizeOfDimension(filter, 0);
  const int words = tflite::SizeOfDimension(filter, 1) * tflite::SizeOfDimension(filter, 2) *
                    tflite::SizeOfDimension(filter, 3);
  data->rows.Pack(tflite::GetTensorData<std::int32_t>(filter), data->channels_out, words);
  data->popcounts.assign(data->channels_out, 0);
  const TfLiteType type = tflite::GetOutput(context, node, 0)->type;
  if (type == kTfLiteFloat32 || type == kTfLiteInt8) ComputeOutputTransform(context, node, data);
  data->set_up = true;
}

template <typename DstScalar>
void WriteOutputs(const NodeData& data, const OutputTransform<DstScalar>& transform, DstScalar* out) {
  for (int c = 0; c < data.channels_out; ++c) out[c] = transform.Run(data.popcounts[c], c);
}

void WriteBitpackedOutputs(const NodeData& data, const std::int32_t* thresholds, TBitpacked* out) {
  OutputTransform<TBitpacked> transform;
  transform.thresholds = thresholds;
  const int n = data.channels_out;
  for (int word = 0; word * 32 < n; ++word) {
    std::uint32_t bits = 0;
    const int end = std::min(n, word * 32 + 32);
    for (int c = word * 32; c < end; ++c) {
      bits |= static_cast<std::uint32_t>(transform.Run(data.popcounts[c], c)) << (c % 32);
    }
    out[word] = static_cast<TBitpacked>(bits);
  }
}

template <typename DstScalar>
OutputTransform<DstScalar> FloatOrInt8Transform(const NodeData& data) {
  OutputTransform<DstScalar> transform;
  transform.clamp_min = data.clamp_min;
  transform.clamp_max = data.clamp_max;
  transform.multiplier = data.multiplier.data();
  transform.bias = data.bias.data();
  return transform;
}

TfLiteStatus EvalGemv(TfLiteContext* context, TfLiteNode* node, NodeData* data) {
  if (!data->set_up) SetUp(context, node, data);
  const TfLiteTensor* input = tflite::GetInput(context, node, kInput);
  TfLiteTensor* output = tflite::GetOutput(context, node, 0);
  // The interpreter's threads, through the ruy thread pool LCE's BGEMM uses (backend_context.cc).
  tflite::CpuBackendContext* backend = tflite::CpuBackendContext::GetFromContext(context);
  data->rows.XorPopcounts(tflite::GetTensorData<std::int32_t>(input), data->popcounts.data(),
                          backend->ruy_context()->mutable_thread_pool(), backend->max_num_threads());
  switch (output->type) {
    case kTfLiteFloat32:
      WriteOutputs(*data, FloatOrInt8Transform<float>(*data), tflite::GetTensorData<float>(output));
      break;
    case kTfLiteInt8:
      WriteOutputs(*data, FloatOrInt8Transform<std::int8_t>(*data),
                   tflite::GetTensorData<std::int8_t>(output));
      break;
    case kTfLiteInt32:
      WriteBitpackedOutputs(
          *data, tflite::GetTensorData<std::int32_t>(tflite::GetInput(context, node, kThresholds)),
          tflite::GetTensorData<TBitpacked>(output));
      break;
    default:
      return kTfLiteError;
  }
  gemv_invocations.fetch_add(1, std::memory_order_relaxed);
  return kTfLiteOk;
}

void* Init(TfLiteContext* context, const char* buffer, std::size_t length) {
  auto* data = new NodeData;
  data->lce = lce_registration->init(context, buffer, length);
  data->options = ReadOptions(buffer, length);
  return data;
}

void Free(TfLiteContext* context, void* buffer) {
  auto* data = static_cast<NodeData*>(buffer);
  lce_registration->free(context, data->lce);
  delete data;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  auto* data = static_cast<NodeData*>(node->user_data);
  // LCE checks the node, sizes the output (and its own temporaries) in any case.
  TF_LITE_ENSURE_STATUS(AsLce(node, data, [&] { return lce_registration->prepare(context, node); }));
  data->gemv = IsGemv(context, node, data->options);
  data->set_up = false;
  return kTfLiteOk;
}

TfLiteStatus Invoke(TfLiteContext* context, TfLiteNode* node) {
  auto* data = static_cast<NodeData*>(node->user_data);
  if (data->gemv) return EvalGemv(context, node, data);
  return AsLce(node, data, [&] { return lce_registration->invoke(context, node); });
}

}  // namespace

TfLiteRegistration* WithBinaryGemv(const TfLiteRegistration* lce) {
  lce_registration = lce;
  static TfLiteRegistration registration = [] {
    TfLiteRegistration r = *lce_registration;
    r.init = Init;
    r.free = Free;
    r.prepare = Prepare;
    r.invoke = Invoke;
    return r;
  }();
  return &registration;
}

std::int64_t BinaryGemvInvocations() { return gemv_invocations.load(std::memory_order_relaxed); }

}  // namespace xnor_lite
