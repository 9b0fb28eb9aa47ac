// A binary matrix-vector product for LCE's LceBconv2d at one output pixel.
//
// At batch 1, a binary fully connected layer (converted by LCE as a 1x1 conv on a 1x1 map, or
// as a kxk "valid" conv over a kxk map, like AlexNet's fc6) is a dot product of the bitpacked
// input with each bitpacked filter row. LCE 0.16 runs it through its BGEMM, whose aarch64
// micro-kernel is built for blocks of several output pixels; with one pixel most of its work
// is wasted. This path computes the xor-popcounts row by row instead (NEON on aarch64,
// portable C++ elsewhere) and hands each one to LCE's own output transform
// (core/bconv2d/output_transform.h), so its outputs are those of LCE's reference kernel.

#ifndef XNOR_LITE_NATIVE_BGEMV_H_
#define XNOR_LITE_NATIVE_BGEMV_H_

#include <cstdint>
#include <vector>

#include "tflite/core/c/common.h"

namespace ruy {
class ThreadPool;
}  // namespace ruy

namespace xnor_lite {

// Filter rows rearranged for the GEMV: blocks of kRows rows, each row's bits zero-padded to
// whole chunks of 128 bits, the kRows rows' chunk j stored side by side (one 64-byte load).
class PackedBinaryRows {
 public:
  static constexpr int kRows = 4;
  static constexpr int kWordsPerChunk = 4;  // 32-bit words: 128 bits
  // Chunks per row are rounded up to a multiple of this (the kernel takes two at a time).
  static constexpr int kChunkMultiple = 2;

  // `rows` rows of `words` 32-bit words each, row-major (LCE's bitpacked filter layout
  // [channels_out, filter_height, filter_width, bitpacked channels_in] is that).
  void Pack(const std::int32_t* filter, int rows, int words);

  // The xor-popcount of the bitpacked `input` (`words` words, as given to Pack) with every
  // row, into `popcounts` (rows() values); blocks of rows shared among up to `threads` threads
  // of `pool` (the same sums whatever the split).
  void XorPopcounts(const std::int32_t* input, std::int32_t* popcounts,
                    ruy::ThreadPool* pool = nullptr, int threads = 1);

  int rows() const { return rows_; }

 private:
  int rows_ = 0, words_ = 0, chunks_ = 0, blocks_ = 0;
  std::vector<std::uint32_t> packed_;  // blocks_ * chunks_ * kRows * kWordsPerChunk
  std::vector<std::uint32_t> input_;   // the input, zero-padded to chunks_ chunks
  std::vector<std::int32_t> block_sums_;  // blocks_ * kRows
};

// LceBconv2d's registration `lce` (LCE's optimized BGEMM) wrapped so that a node whose
// computation is one matrix-vector product (batch 1, a 1x1 output map, the filter covering the
// whole input map without padding or dilation, no groups, constant filter) runs the GEMV above;
// any other node runs `lce` unchanged. `lce` must outlive the returned registration.
TfLiteRegistration* WithBinaryGemv(const TfLiteRegistration* lce);

// How many LceBconv2d invocations in this process ran the GEMV (tests check the dispatch).
std::int64_t BinaryGemvInvocations();

}  // namespace xnor_lite

#endif  // XNOR_LITE_NATIVE_BGEMV_H_
