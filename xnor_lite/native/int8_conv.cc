// The int8 convolution of CONV_2D on CPUs without the dot-product instruction (see int8_conv.h).
//
// Assumptions, for LiteRT 2.2.0 (tflite/kernels/conv.cc, internal/optimized/integer_ops/conv.h,
// cpu_backend_gemm.h, cpu_backend_gemm_ruy.h) and its ruy (3286a34, ruy/kernel_arm64.cc):
// - an int8 CONV_2D with int8 filter and one group runs ConvPerChannel: im2col (padding filled
//   with the input zero point) when the filter is not 1x1 or the stride not 1, then
//   cpu_backend_gemm::Gemm with the filter as the row-major LHS (zero point 0), the patches as
//   the column-major RHS (zero point: the input's), per-channel multipliers and exponents even
//   for a per-tensor filter, the output zero point and the clamp;
// - with more than one output column (pixels x batch) Gemm goes to ruy (aarch64 builds define
//   TFLITE_WITH_RUY, and the interpreter's CpuBackendContext does not cache), whose 8-bit
//   kernels all requantize as Kernel8bitNeon does: acc + bias - input zero point * row sum
//   (int32, wrapping), then, with e the channel's exponent, sshl by e - min(e, -1), sqdmulh by
//   the fixed-point multiplier (truncating), srshl by min(e, -1) (rounding right shift by at
//   least 1): one rounding of acc * multiplier * 2^e / 2^31, half up. (CustomGemv, which runs
//   the one-column case, rounds twice: vqrdmulh then vrshl. That case stays with LiteRT or our
//   GEMV, int8_gemv.cc.) Then narrowing to int16 with saturation, a saturating add of the
//   output zero point, narrowing to int8 with saturation, and the clamp.
// This file uses those very instructions in that order, so its outputs are LiteRT's bit for bit.

#include "int8_conv.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "kernel_util.h"
#include "ruy/thread_pool.h"

namespace xnor_lite {
namespace {

std::atomic<std::int64_t> conv_invocations{0};

constexpr int kChunk = 16;      // int8 depth per full step
constexpr int kHalfChunk = 8;   // int8 depth of the last step when at most 8 remain
constexpr int kParamsPerBlock = 4 * Int8Conv::kRows;  // offsets, left shifts, multipliers, right shifts
constexpr int kGroupBytes = 16 * 1024;  // packed patches shared by the row blocks (within L1)

// Where depth index k of lane `lane` (a row of a row block, a column of a tile) lies in a
// packed block of `full` 16-deep steps and an optional 8-deep one: each step holds its 4 lanes
// side by side.
int PackedOffset(int k, int lane, int full) {
  if (k < full * kChunk) return (k / kChunk) * 4 * kChunk + lane * kChunk + k % kChunk;
  return full * 4 * kChunk + lane * kHalfChunk + (k - full * kChunk);
}

}  // namespace

#if defined(__aarch64__)

// Products of rows v0-v3 by columns c0, c1 into int16 pairs (smull + smlal2: |weight| <= 127 keeps
// a pair in int16): (row r, c0) in v8+r, (row r, c1) in v12+r; then OP (sadalp, or saddlp to
// start) adds the pairs into the int32 sums: (row r, column c) in v16 + 4c + r.
#define XL_MUL(op, t, r, c, size) #op " v" #t ".8h, v" #r "." size ", v" #c "." size "\n"
#define XL_SMULL8(c0, c1)                                                                   \
  XL_MUL(smull, 8, 0, c0, "8b") XL_MUL(smull, 9, 1, c0, "8b") XL_MUL(smull, 10, 2, c0, "8b") \
  XL_MUL(smull, 11, 3, c0, "8b") XL_MUL(smull, 12, 0, c1, "8b") XL_MUL(smull, 13, 1, c1, "8b") \
  XL_MUL(smull, 14, 2, c1, "8b") XL_MUL(smull, 15, 3, c1, "8b")
#define XL_SMLAL8(c0, c1)                                                                        \
  XL_MUL(smlal2, 8, 0, c0, "16b") XL_MUL(smlal2, 9, 1, c0, "16b") XL_MUL(smlal2, 10, 2, c0, "16b") \
  XL_MUL(smlal2, 11, 3, c0, "16b") XL_MUL(smlal2, 12, 0, c1, "16b") XL_MUL(smlal2, 13, 1, c1, "16b") \
  XL_MUL(smlal2, 14, 2, c1, "16b") XL_MUL(smlal2, 15, 3, c1, "16b")
#define XL_ADD(op, a, t) #op " v" #a ".4s, v" #t ".8h\n"
#define XL_ADD8(op, a0, a1, a2, a3, a4, a5, a6, a7)                                         \
  XL_ADD(op, a0, 8) XL_ADD(op, a1, 9) XL_ADD(op, a2, 10) XL_ADD(op, a3, 11) XL_ADD(op, a4, 12) \
  XL_ADD(op, a5, 13) XL_ADD(op, a6, 14) XL_ADD(op, a7, 15)
// 16 deep: 2 loads (outside), 48 multiply-adds for 256 MACs.
#define XL_FULL_STEP(op)                                                   \
  XL_SMULL8(4, 5) XL_SMLAL8(4, 5) XL_ADD8(op, 16, 17, 18, 19, 20, 21, 22, 23) \
  XL_SMULL8(6, 7) XL_SMLAL8(6, 7) XL_ADD8(op, 24, 25, 26, 27, 28, 29, 30, 31)
// 8 deep: 32 for 128 MACs.
#define XL_HALF_STEP(op) \
  XL_SMULL8(4, 5) XL_ADD8(op, 16, 17, 18, 19, 20, 21, 22, 23) XL_SMULL8(6, 7) XL_ADD8(op, 24, 25, 26, 27, 28, 29, 30, 31)

// `count` consecutive tiles of 4 columns times one block of 4 rows: the 16 int32 sums of each,
// then ruy's requantization (see the top of this file) with the block's `params`, and the
// 4 x 4 int8 outputs stored column by column (4 channels each), `stride` bytes apart; a tile's
// first column follows the previous tile's last. In assembly: GCC spills the 16 sums and
// copies the multi-register loads' registers around.
static void KernelTiles(const std::int8_t* weights, const std::int8_t* x, int count, int full, int half,
                        const std::int32_t* params, const std::int8_t* constants, std::int8_t* out,
                        std::int64_t stride) {
  const std::int8_t* w;
  int steps;
  asm volatile(
      "0:\n"
      "mov %[w], %[weights]\n"
      "mov %w[steps], %w[full]\n"
      "cbz %w[steps], 5f\n"
      "ld1 {v0.16b, v1.16b, v2.16b, v3.16b}, [%[w]], #64\n"
      "ld1 {v4.16b, v5.16b, v6.16b, v7.16b}, [%[x]], #64\n"
      XL_FULL_STEP(saddlp)
      "subs %w[steps], %w[steps], #1\n"
      "b.eq 3f\n"
      "tbz %w[steps], #0, 2f\n"  // an odd number of steps left: one alone
      "ld1 {v0.16b, v1.16b, v2.16b, v3.16b}, [%[w]], #64\n"
      "ld1 {v4.16b, v5.16b, v6.16b, v7.16b}, [%[x]], #64\n"
      XL_FULL_STEP(sadalp)
      "subs %w[steps], %w[steps], #1\n"
      "b.eq 3f\n"
      "2:\n"  // two at a time
      "ld1 {v0.16b, v1.16b, v2.16b, v3.16b}, [%[w]], #64\n"
      "ld1 {v4.16b, v5.16b, v6.16b, v7.16b}, [%[x]], #64\n"
      XL_FULL_STEP(sadalp)
      "ld1 {v0.16b, v1.16b, v2.16b, v3.16b}, [%[w]], #64\n"
      "ld1 {v4.16b, v5.16b, v6.16b, v7.16b}, [%[x]], #64\n"
      XL_FULL_STEP(sadalp)
      "subs %w[steps], %w[steps], #2\n"
      "b.ne 2b\n"
      "3:\n"
      "cbz %w[half], 8f\n"
      "ld1 {v0.8b, v1.8b, v2.8b, v3.8b}, [%[w]]\n"
      "ld1 {v4.8b, v5.8b, v6.8b, v7.8b}, [%[x]], #32\n"
      XL_HALF_STEP(sadalp)
      "b 8f\n"
      "5:\n"  // no 16-deep step: the 8-deep one starts the sums
      "ld1 {v0.8b, v1.8b, v2.8b, v3.8b}, [%[w]]\n"
      "ld1 {v4.8b, v5.8b, v6.8b, v7.8b}, [%[x]], #32\n"
      XL_HALF_STEP(saddlp)
      "8:\n"
      // Column c's 4 row sums into v16 + 4c.
      "addp v16.4s, v16.4s, v17.4s\n"
      "addp v18.4s, v18.4s, v19.4s\n"
      "addp v20.4s, v20.4s, v21.4s\n"
      "addp v22.4s, v22.4s, v23.4s\n"
      "addp v24.4s, v24.4s, v25.4s\n"
      "addp v26.4s, v26.4s, v27.4s\n"
      "addp v28.4s, v28.4s, v29.4s\n"
      "addp v30.4s, v30.4s, v31.4s\n"
      "addp v16.4s, v16.4s, v18.4s\n"
      "addp v20.4s, v20.4s, v22.4s\n"
      "addp v24.4s, v24.4s, v26.4s\n"
      "addp v28.4s, v28.4s, v30.4s\n"
      // + bias - input zero point * row sum; ruy's multiplier.
      "ld1 {v0.4s, v1.4s, v2.4s, v3.4s}, [%[params]]\n"
      "ld1 {v12.16b, v13.16b, v14.16b}, [%[constants]]\n"
      "add v16.4s, v16.4s, v0.4s\n"
      "add v20.4s, v20.4s, v0.4s\n"
      "add v24.4s, v24.4s, v0.4s\n"
      "add v28.4s, v28.4s, v0.4s\n"
      "sshl v16.4s, v16.4s, v1.4s\n"
      "sshl v20.4s, v20.4s, v1.4s\n"
      "sshl v24.4s, v24.4s, v1.4s\n"
      "sshl v28.4s, v28.4s, v1.4s\n"
      "sqdmulh v16.4s, v16.4s, v2.4s\n"
      "sqdmulh v20.4s, v20.4s, v2.4s\n"
      "sqdmulh v24.4s, v24.4s, v2.4s\n"
      "sqdmulh v28.4s, v28.4s, v2.4s\n"
      "srshl v16.4s, v16.4s, v3.4s\n"
      "srshl v20.4s, v20.4s, v3.4s\n"
      "srshl v24.4s, v24.4s, v3.4s\n"
      "srshl v28.4s, v28.4s, v3.4s\n"
      // int16, + output zero point, int8, clamp.
      "sqxtn v4.4h, v16.4s\n"
      "sqxtn2 v4.8h, v20.4s\n"
      "sqxtn v5.4h, v24.4s\n"
      "sqxtn2 v5.8h, v28.4s\n"
      "sqadd v4.8h, v4.8h, v12.8h\n"
      "sqadd v5.8h, v5.8h, v12.8h\n"
      "sqxtn v6.8b, v4.8h\n"
      "sqxtn2 v6.16b, v5.8h\n"
      "smax v6.16b, v6.16b, v13.16b\n"
      "smin v6.16b, v6.16b, v14.16b\n"
      "st1 {v6.s}[0], [%[out]], %[stride]\n"
      "st1 {v6.s}[1], [%[out]], %[stride]\n"
      "st1 {v6.s}[2], [%[out]], %[stride]\n"
      "st1 {v6.s}[3], [%[out]], %[stride]\n"
      "subs %w[count], %w[count], #1\n"
      "b.ne 0b\n"
      : [x] "+r"(x), [out] "+r"(out), [count] "+r"(count), [w] "=&r"(w), [steps] "=&r"(steps)
      : [weights] "r"(weights), [full] "r"(full), [half] "r"(half), [params] "r"(params),
        [constants] "r"(constants), [stride] "r"(stride)
      : "cc", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11",
        "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24",
        "v25", "v26", "v27", "v28", "v29", "v30", "v31");
}

#undef XL_MUL
#undef XL_SMULL8
#undef XL_SMLAL8
#undef XL_ADD
#undef XL_ADD8
#undef XL_FULL_STEP
#undef XL_HALF_STEP

// Copies `rows` rows of `blocks` 16-byte blocks, `src_step` and `dst_step` bytes apart.
template <int kBlocks>
static inline void CopyRowsOf(std::int8_t* dst, const std::int8_t* src, int rows, int dst_step,
                              std::size_t src_step, int blocks) {
  for (int row = 0; row < rows; ++row, dst += dst_step, src += src_step) {
    if (kBlocks == 1) {
      vst1q_s8(dst, vld1q_s8(src));
    } else if (kBlocks == 2) {
      vst1q_s8_x2(dst, vld1q_s8_x2(src));
    } else {
      for (int i = 0; i < blocks; ++i) vst1q_s8(dst + i * kChunk, vld1q_s8(src + i * kChunk));
    }
  }
}

static inline void CopyRows(std::int8_t* dst, const std::int8_t* src, int rows, int dst_step,
                            std::size_t src_step, int blocks) {
  if (blocks == 1) {
    CopyRowsOf<1>(dst, src, rows, dst_step, src_step, blocks);
  } else if (blocks == 2) {
    CopyRowsOf<2>(dst, src, rows, dst_step, src_step, blocks);
  } else {
    CopyRowsOf<0>(dst, src, rows, dst_step, src_step, blocks);
  }
}

// 4 patches' packed depth, side by side, into a tile.
static inline void Interleave(std::int8_t* tile, const std::int8_t* const patches[4], int full, int half) {
  const std::int8_t *a = patches[0], *b = patches[1], *c = patches[2], *d = patches[3];
  for (int j = 0; j < full; ++j, tile += 4 * kChunk, a += kChunk, b += kChunk, c += kChunk, d += kChunk) {
    vst1q_s8_x4(tile, int8x16x4_t{{vld1q_s8(a), vld1q_s8(b), vld1q_s8(c), vld1q_s8(d)}});
  }
  if (half) vst1_s8_x4(tile, int8x8x4_t{{vld1_s8(a), vld1_s8(b), vld1_s8(c), vld1_s8(d)}});
}

bool Int8Conv::Available() {
#if defined(__linux__)
  return !CpuHasDotProduct();
#else
  return false;
#endif
}

#else  // not aarch64: the same arithmetic, one lane at a time (for reading; not Available()).

static std::int32_t Saturate(std::int64_t v, std::int64_t lo, std::int64_t hi) {
  return static_cast<std::int32_t>(std::min(std::max(v, lo), hi));
}

static void KernelTiles(const std::int8_t* weights, const std::int8_t* x, int count, int full, int half,
                        const std::int32_t* params, const std::int8_t* constants, std::int8_t* out,
                        std::int64_t stride) {
  const int depth = full * kChunk + half * kHalfChunk;
  std::int16_t zero_point;
  std::memcpy(&zero_point, constants, sizeof(zero_point));
  const std::int8_t act_min = constants[16], act_max = constants[32];
  for (int tile = 0; tile < count; ++tile, x += 4 * depth) {
    for (int c = 0; c < 4; ++c, out += stride) {
      for (int r = 0; r < 4; ++r) {
        std::int32_t acc = 0;
        for (int k = 0; k < depth; ++k) {
          acc += weights[PackedOffset(k, r, full)] * x[PackedOffset(k, c, full)];
        }
        // add (wrapping), sshl (wrapping; 0 from 32 on), sqdmulh, srshl by a negative amount.
        std::uint32_t u = static_cast<std::uint32_t>(acc) + static_cast<std::uint32_t>(params[r]);
        const int left = params[4 + r];
        u = left >= 32 ? 0 : u << left;
        std::int64_t v = static_cast<std::int32_t>(u);
        const std::int64_t m = params[8 + r];
        v = v == INT32_MIN && m == INT32_MIN ? INT32_MAX : (2 * v * m) >> 32;
        const int right = -params[12 + r];
        v = (v + (std::int64_t{1} << (right - 1))) >> right;
        // sqxtn to int16, sqadd, sqxtn to int8, clamp.
        v = Saturate(Saturate(v, INT16_MIN, INT16_MAX) + zero_point, INT16_MIN, INT16_MAX);
        v = Saturate(v, INT8_MIN, INT8_MAX);
        out[r] = static_cast<std::int8_t>(std::min<std::int64_t>(std::max<std::int64_t>(v, act_min), act_max));
      }
    }
  }
}

static inline void CopyRows(std::int8_t* dst, const std::int8_t* src, int rows, int dst_step,
                            std::size_t src_step, int blocks) {
  for (int row = 0; row < rows; ++row, dst += dst_step, src += src_step) {
    std::memcpy(dst, src, static_cast<std::size_t>(blocks) * kChunk);
  }
}

static inline void Interleave(std::int8_t* tile, const std::int8_t* const patches[4], int full, int half) {
  const int depth = full * kChunk + half * kHalfChunk;
  for (int lane = 0; lane < 4; ++lane) {
    for (int k = 0; k < depth; ++k) tile[PackedOffset(k, lane, full)] = patches[lane][k];
  }
}

bool Int8Conv::Available() { return false; }

#endif

bool Int8Conv::Prepare(const Int8ConvShape& shape, const std::int8_t* filter, const std::int32_t* multiplier,
                       const std::int32_t* shift, std::int32_t input_zero_point,
                       std::int32_t output_zero_point, std::int32_t act_min, std::int32_t act_max) {
  const Int8ConvShape& s = shape;
  if (s.batch < 1 || s.input_height < 1 || s.input_width < 1 || s.input_channels < 1 || s.filter_height < 1 ||
      s.filter_width < 1 || s.stride_height < 1 || s.stride_width < 1 || s.output_height < 1 ||
      s.output_width < 1 || s.output_channels < 1 || act_min < INT8_MIN || act_max > INT8_MAX ||
      output_zero_point < INT8_MIN || output_zero_point > INT8_MAX)
    return false;
  const std::int64_t depth = static_cast<std::int64_t>(s.filter_height) * s.filter_width * s.input_channels;
  const std::int64_t columns = static_cast<std::int64_t>(s.batch) * s.output_height * s.output_width;
  if (depth > (1 << 20) || columns > (1 << 30)) return false;
  std::int8_t lowest = 0;
  for (std::int64_t i = 0; i < depth * s.output_channels; ++i) lowest = std::min(lowest, filter[i]);
  if (lowest == -128) return false;
  shape_ = shape;
  depth_ = static_cast<int>(depth);
  columns_ = static_cast<int>(columns);
  full_chunks_ = depth_ / kChunk;
  const int rest = depth_ % kChunk;
  half_chunk_ = rest > 0 && rest <= kHalfChunk ? 1 : 0;
  if (rest > kHalfChunk) ++full_chunks_;
  tile_bytes_ = 4 * (full_chunks_ * kChunk + half_chunk_ * kHalfChunk);
  // A patch's im2col bytes, its packed depth (zero weights beyond depth_) and the excess of
  // PackTile's 16-byte blocks.
  patch_bytes_ = tile_bytes_ / 4 + (CeilDiv(s.filter_width * s.input_channels, kChunk) + 1) * kChunk;
  blocks_ = CeilDiv(s.output_channels, kRows);
  tiles_ = CeilDiv(columns_, kColumns);
  input_zero_point_ = input_zero_point;

  packed_.assign(static_cast<std::size_t>(blocks_) * tile_bytes_, 0);
  row_sums_.assign(s.output_channels, 0);
  params_.assign(static_cast<std::size_t>(blocks_) * kParamsPerBlock, 0);
  for (int row = 0; row < s.output_channels; ++row) {
    const std::int8_t* src = filter + static_cast<std::size_t>(row) * depth_;
    std::int8_t* block = packed_.data() + static_cast<std::size_t>(row / kRows) * tile_bytes_;
    for (int k = 0; k < depth_; k += kChunk) {
      std::memcpy(block + PackedOffset(k, row % kRows, full_chunks_), src + k, std::min(kChunk, depth_ - k));
    }
    std::int32_t sum = 0;
    for (int k = 0; k < depth_; ++k) sum += src[k];
    row_sums_[row] = sum;
  }
  for (int row = 0; row < blocks_ * kRows; ++row) {
    std::int32_t* p = params_.data() + (row / kRows) * kParamsPerBlock + row % kRows;
    const std::int32_t exponent = row < s.output_channels ? shift[row] : 0;
    const std::int32_t right = std::min<std::int32_t>(exponent, -1);
    p[kRows] = exponent - right;  // left shift
    p[2 * kRows] = row < s.output_channels ? multiplier[row] : 0;
    p[3 * kRows] = right;
  }
  const std::int16_t zero_point = static_cast<std::int16_t>(output_zero_point);
  for (int i = 0; i < 8; ++i) std::memcpy(output_constants_ + 2 * i, &zero_point, sizeof(zero_point));
  std::memset(output_constants_ + 16, act_min, 16);
  std::memset(output_constants_ + 32, act_max, 16);
  return true;
}

void Int8Conv::GatherPatch(const std::int8_t* image, int y0, int x0, std::int8_t* patch) const {
  const Int8ConvShape& s = shape_;
  const int row_bytes = s.filter_width * s.input_channels;
  const std::int8_t zero_point = static_cast<std::int8_t>(input_zero_point_);
  const int fx_begin = std::max(0, -x0), fx_end = std::min(s.filter_width, s.input_width - x0);
  for (int fy = 0; fy < s.filter_height; ++fy) {
    std::int8_t* dst = patch + fy * row_bytes;
    const int y = y0 + fy;
    if (y < 0 || y >= s.input_height || fx_begin >= fx_end) {
      std::memset(dst, zero_point, row_bytes);
      continue;
    }
    const int left = fx_begin * s.input_channels, inside = (fx_end - fx_begin) * s.input_channels;
    std::memset(dst, zero_point, left);
    std::memcpy(dst + left, image + (static_cast<std::size_t>(y) * s.input_width + x0 + fx_begin) * s.input_channels,
                inside);
    std::memset(dst + left + inside, zero_point, row_bytes - left - inside);
  }
}

void Int8Conv::PackTile(const std::int8_t* input, int first_column, std::int8_t* tile,
                        std::int8_t* patches) const {
  const Int8ConvShape& s = shape_;
  const int pixels = s.output_height * s.output_width;
  const int row_bytes = s.filter_width * s.input_channels, row_blocks = CeilDiv(row_bytes, kChunk);
  const std::size_t row_stride = static_cast<std::size_t>(s.input_width) * s.input_channels;
  const std::size_t image_bytes = row_stride * s.input_height;
  const std::int8_t* input_end = input + image_bytes * s.batch;
  const bool in_place = s.filter_height == 1 && depth_ % kChunk == 0;
  int image = first_column / pixels, oy = first_column % pixels / s.output_width;
  int ox = first_column % s.output_width;
  const std::int8_t* sources[kColumns] = {patches, patches, patches, patches};  // past the end: any
  for (int lane = 0; lane < kColumns && first_column + lane < columns_; ++lane) {
    std::int8_t* patch = patches + lane * patch_bytes_;
    const std::int8_t* image_data = input + image_bytes * image;
    const int y0 = oy * s.stride_height - s.pad_top, x0 = ox * s.stride_width - s.pad_left;
    const bool inside =
        y0 >= 0 && y0 + s.filter_height <= s.input_height && x0 >= 0 && x0 + s.filter_width <= s.input_width;
    const std::int8_t* src = inside ? image_data + y0 * row_stride + x0 * s.input_channels : image_data;
    if (inside && in_place) {  // one row of whole 16-byte steps: read in place
      sources[lane] = src;
    } else if (inside && src + (s.filter_height - 1) * row_stride + row_blocks * kChunk <= input_end) {
      // Whole 16-byte blocks per filter row, each row's excess overwritten by the next row's
      // copy, the last one's landing beyond the depth (where the weights are 0).
      CopyRows(patch, src, s.filter_height, row_bytes, row_stride, row_blocks);
      sources[lane] = patch;
    } else {
      // On the border (or near the input's end): im2col's patch, the padding filled with the
      // input zero point (whose products the offset's - input zero point * row sum cancels,
      // as in LiteRT).
      GatherPatch(image_data, y0, x0, patch);
      sources[lane] = patch;
    }
    if (++ox == s.output_width) {
      ox = 0;
      if (++oy == s.output_height) {
        oy = 0;
        ++image;
      }
    }
  }
  Interleave(tile, sources, full_chunks_, half_chunk_);
}

void Int8Conv::RunTiles(const std::int8_t* input, std::int8_t* output, int first_tile, int end_tile,
                        Buffers* buffers) const {
  const int channels = shape_.output_channels;
  const int group = std::max(1, std::min(16, kGroupBytes / tile_bytes_));
  if (buffers->tiles.size() < static_cast<std::size_t>(group) * tile_bytes_) {
    buffers->tiles.assign(static_cast<std::size_t>(group) * tile_bytes_, 0);
    buffers->patches.assign(static_cast<std::size_t>(kColumns) * patch_bytes_, 0);
    buffers->out.assign(kColumns * kRows, 0);
  }
  for (int first = first_tile; first < end_tile; first += group) {
    const int count = std::min(group, end_tile - first);
    for (int t = 0; t < count; ++t) {
      PackTile(input, (first + t) * kColumns, buffers->tiles.data() + static_cast<std::size_t>(t) * tile_bytes_,
               buffers->patches.data());
    }
    // The last tile may have fewer than 4 columns, the last block fewer than 4 rows: those go
    // through `out`.
    const int whole_tiles = first + count == tiles_ && columns_ % kColumns != 0 ? count - 1 : count;
    for (int block = 0; block < blocks_; ++block) {
      const std::int8_t* weights = packed_.data() + static_cast<std::size_t>(block) * tile_bytes_;
      const std::int32_t* params = params_.data() + block * kParamsPerBlock;
      const int rows = std::min(kRows, channels - block * kRows);
      std::int8_t* out = output + static_cast<std::size_t>(first) * kColumns * channels + block * kRows;
      int t = 0;
      if (rows == kRows && whole_tiles > 0) {
        KernelTiles(weights, buffers->tiles.data(), whole_tiles, full_chunks_, half_chunk_, params,
                    output_constants_, out, channels);
        t = whole_tiles;
      }
      for (; t < count; ++t) {
        KernelTiles(weights, buffers->tiles.data() + static_cast<std::size_t>(t) * tile_bytes_, 1, full_chunks_,
                    half_chunk_, params, output_constants_, buffers->out.data(), kRows);
        const int columns = std::min(kColumns, columns_ - (first + t) * kColumns);
        for (int c = 0; c < columns; ++c) {
          std::memcpy(out + static_cast<std::size_t>(t * kColumns + c) * channels, buffers->out.data() + c * kRows,
                      rows);
        }
      }
    }
  }
}

namespace {

// Less work than this per thread costs more in waking threads than it saves.
constexpr std::int64_t kMinMacsPerThread = 1 << 18;

}  // namespace

void Int8Conv::Run(const std::int8_t* input, const std::int32_t* bias, std::int8_t* output,
                   ruy::ThreadPool* pool, int threads) {
  // offset = bias - input zero point * row sum, in wrapping int32 like ruy's.
  for (int row = 0; row < shape_.output_channels; ++row) {
    std::uint32_t offset = static_cast<std::uint32_t>(bias == nullptr ? 0 : bias[row]);
    offset -= static_cast<std::uint32_t>(input_zero_point_) * static_cast<std::uint32_t>(row_sums_[row]);
    params_[(row / kRows) * kParamsPerBlock + row % kRows] = static_cast<std::int32_t>(offset);
  }
  const std::int64_t macs = static_cast<std::int64_t>(columns_) * depth_ * shape_.output_channels;
  const int shares = ShareCount(pool, threads, tiles_, macs, kMinMacsPerThread);
  if (buffers_.size() < static_cast<std::size_t>(shares)) buffers_.resize(shares);
  RunInShares(pool, shares, tiles_, [&](int first, int end, int share) {
    RunTiles(input, output, first, end, &buffers_[share]);
  });
  conv_invocations.fetch_add(1, std::memory_order_relaxed);
}

std::int64_t Int8ConvInvocations() { return conv_invocations.load(std::memory_order_relaxed); }

}  // namespace xnor_lite
