// An int8 convolution for LiteRT's int8 CONV_2D on CPUs without the dot-product instruction.
//
// XNORResNet18's int8 stem (7x7 stride 2, 3 -> 64 channels) and its 1x1 stride-2 shortcuts run
// in LiteRT 2.2.0 as im2col + cpu_backend_gemm on ruy's 4x4 Kernel8bitNeon, ~3.0 MACs an
// instruction on a Raspberry Pi 4's Cortex-A72: its inner loop is the right one (int8 * int8 in
// int16 pairs, smull + smlal2, added into int32 with sadalp) but each 4x4 block pays a long
// general epilogue, and the operands are copied twice (im2col, then ruy's packing). This
// convolution gathers the input patches straight into the kernel's layout and runs the same
// 4x4 inner loop with a short epilogue: ~4 MACs an instruction on the stem, all in.
//
// Its outputs are LiteRT's, bit for bit: the int32 sums are exact, and the requantization is
// ruy's (not CustomGemv's, see int8_conv.cc). On CPUs with the dot-product instruction
// ruy's sdot kernel is the better one, and this convolution is not used (Available()).

#ifndef XNOR_LITE_NATIVE_INT8_CONV_H_
#define XNOR_LITE_NATIVE_INT8_CONV_H_

#include <cstdint>
#include <vector>

namespace ruy {
class ThreadPool;
}  // namespace ruy

namespace xnor_lite {

// One CONV_2D node's geometry: NHWC input and output, OHWI filter, no dilation, one group.
struct Int8ConvShape {
  int batch = 0;
  int input_height = 0, input_width = 0, input_channels = 0;
  int filter_height = 0, filter_width = 0;
  int stride_height = 1, stride_width = 1;
  int pad_top = 0, pad_left = 0;  // LiteRT's TfLitePaddingValues height and width
  int output_height = 0, output_width = 0, output_channels = 0;
};

class Int8Conv {
 public:
  // Output pixels per kernel tile and output channels per row block.
  static constexpr int kColumns = 4;
  static constexpr int kRows = 4;

  // True where this convolution runs: an aarch64 CPU without the dot-product instruction.
  static bool Available();

  // Packs the filter (`shape.output_channels` rows of filter_height * filter_width *
  // input_channels int8 weights, zero point 0) and keeps the requantization: per output
  // channel ruy's fixed-point multiplier and exponent (LiteRT's per-channel multiplier and
  // shift), the zero points and the clamp [act_min, act_max]. Returns false, keeping nothing,
  // when a weight is -128 (two products (-128) * (-128) overflow the int16 pair sums) or the
  // shape is not one this convolution takes.
  bool Prepare(const Int8ConvShape& shape, const std::int8_t* filter, const std::int32_t* multiplier,
               const std::int32_t* shift, std::int32_t input_zero_point, std::int32_t output_zero_point,
               std::int32_t act_min, std::int32_t act_max);

  // output = requantized conv(input, filter) + bias (`bias` may be nullptr), the output pixels
  // shared among up to `threads` threads of `pool` (the same outputs whatever the split).
  void Run(const std::int8_t* input, const std::int32_t* bias, std::int8_t* output,
           ruy::ThreadPool* pool = nullptr, int threads = 1);

  const Int8ConvShape& shape() const { return shape_; }

 private:
  struct Buffers {
    std::vector<std::int8_t> tiles;  // packed input patches of a group of tiles
    std::vector<std::int8_t> patches;  // kColumns patches in im2col order, patch_bytes_ apart
    std::vector<std::int8_t> out;    // a partial tile's outputs
  };
  void RunTiles(const std::int8_t* input, std::int8_t* output, int first_tile, int end_tile,
                Buffers* buffers) const;
  // The patches of output columns first_column.. (up to kColumns) into `tile`, through `patches`.
  void PackTile(const std::int8_t* input, int first_column, std::int8_t* tile, std::int8_t* patches) const;
  // im2col's patch at input (y0, x0) of `image`, the padding filled with the input zero point.
  void GatherPatch(const std::int8_t* image, int y0, int x0, std::int8_t* patch) const;

  Int8ConvShape shape_;
  int depth_ = 0;          // filter_height * filter_width * input_channels
  int full_chunks_ = 0;    // 16-deep steps
  int half_chunk_ = 0;     // 1: one more 8-deep step
  int tile_bytes_ = 0;     // kColumns (or kRows) patches of full_chunks_ * 16 + half_chunk_ * 8
  int patch_bytes_ = 0;    // room for one patch in Buffers::patches
  int blocks_ = 0, columns_ = 0, tiles_ = 0;
  std::int32_t input_zero_point_ = 0;
  std::vector<std::int8_t> packed_;      // blocks_ * tile_bytes_
  std::vector<std::int32_t> row_sums_;   // sum of each output channel's weights
  // Per row block: the int32 offsets (bias - input zero point * row sum), ruy's left shifts,
  // fixed-point multipliers and (negative) right shifts, 4 lanes each.
  std::vector<std::int32_t> params_;
  // The output zero point as 8 int16, then act_min and act_max as 16 int8 each.
  std::int8_t output_constants_[48] = {};
  std::vector<Buffers> buffers_;  // one per share of the work
};

// How many times Int8Conv::Run ran in this process: the CONV_2D invocations that took this
// convolution (tests check the dispatch).
std::int64_t Int8ConvInvocations();

}  // namespace xnor_lite

#endif  // XNOR_LITE_NATIVE_INT8_CONV_H_
