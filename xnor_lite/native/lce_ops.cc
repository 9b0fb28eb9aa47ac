// LCE 0.16's custom ops, registered into a prebuilt LiteRT interpreter.
//
// The ai-edge-litert Python Interpreter (`InterpreterWithCustomOps`) calls each
// of its `custom_op_registerers` with the address of the tflite::MutableOpResolver
// it builds the interpreter from. xnor_lite_register_ops is that registerer:
// Python hands it the address and the kernel choice. Everything else in this
// library is hidden; these extern "C" functions are its whole interface.
//
// Assumption, checked at load time by xnor_lite/library.py: the runtime was
// built from the same LiteRT release as the headers this file was compiled
// against (XNOR_LITE_LITERT_VERSION), so MutableOpResolver and
// TfLiteRegistration have the layout seen here.

#include <cstdint>
#include <string>
#include <utility>

#include "backend_context.h"
#include "bgemv.h"
#include "int8_conv.h"
#include "int8_gemv.h"
#include "larq_compute_engine/tflite/kernels/lce_ops_register.h"
#include "tflite/mutable_op_resolver.h"

#ifndef XNOR_LITE_BUILD_INFO
#error "XNOR_LITE_BUILD_INFO must be defined by the build (xnor_lite/build.py)"
#endif

namespace {

using compute_engine::tflite::Register_BCONV_2D;
using compute_engine::tflite::Register_BCONV_2D_OPT_INDIRECT_BGEMM;
using compute_engine::tflite::Register_BCONV_2D_REF;

// kDefault: LCE's optimized BGEMM, except for nodes that are one binary matrix-vector product
// (batch-1 fully connected layers), which run our GEMV (bgemv.h), and LiteRT's FULLY_CONNECTED
// and CONV_2D wrapped so that their int8 batch-1 matrix-vector products run our int8 GEMV
// (int8_gemv.h) and, on CPUs without the dot-product instruction, their other int8
// convolutions our int8 convolution (int8_conv.h); kLce: LCE's optimized BGEMM for every node, as LCE's own runtime registers it,
// and LiteRT's builtin kernels untouched.
enum Kernel : int { kDefault = 0, kIndirectBgemm = 1, kReference = 2, kLce = 3 };

// An LceBconv2d registration whose init/free also count the node as a user of
// its interpreter's backend context (backend_context.cc).
template <int kKernel>
TfLiteRegistration* BinaryConvolution() {
  static TfLiteRegistration* const upstream =
      kKernel == kIndirectBgemm ? Register_BCONV_2D_OPT_INDIRECT_BGEMM()
      : kKernel == kReference   ? Register_BCONV_2D_REF()
      : kKernel == kLce         ? Register_BCONV_2D()
                                : xnor_lite::WithBinaryGemv(Register_BCONV_2D());
  static TfLiteRegistration wrapped = [] {
    TfLiteRegistration r = *upstream;
    r.init = [](TfLiteContext* context, const char* buffer,
                size_t length) -> void* {
      xnor_lite::AcquireBackendContext(context);
      return upstream->init(context, buffer, length);
    };
    r.free = [](TfLiteContext* context, void* data) {
      upstream->free(context, data);
      xnor_lite::ReleaseBackendContext(context);
    };
    return r;
  }();
  return &wrapped;
}

// The highest builtin op version looked up in the resolver (LiteRT 2.2.0 registers
// FULLY_CONNECTED up to 14 and CONV_2D up to 8; unregistered versions are skipped).
constexpr int kMaxBuiltinVersion = 32;

// Replaces, in `resolver`, every registered version of FULLY_CONNECTED and CONV_2D by the same
// registration wrapped with our int8 GEMV. The Python interpreter (LiteRT 2.2.0's
// interpreter_wrapper.cc) calls the registerers after its BuiltinOpResolver has added the
// builtins, and MutableOpResolver::AddBuiltin replaces an (op, version) already there.
void AddInt8Gemv(tflite::MutableOpResolver* resolver) {
  const std::pair<tflite::BuiltinOperator, xnor_lite::Int8GemvOp> ops[] = {
      {tflite::BuiltinOperator_FULLY_CONNECTED, xnor_lite::Int8GemvOp::kFullyConnected},
      {tflite::BuiltinOperator_CONV_2D, xnor_lite::Int8GemvOp::kConv2D},
  };
  for (const auto& [op, kind] : ops) {
    for (int version = 1; version <= kMaxBuiltinVersion; ++version) {
      const TfLiteRegistration* wrapped = xnor_lite::WithInt8Gemv(resolver->FindOp(op, version), kind);
      if (wrapped != nullptr) resolver->AddBuiltin(op, wrapped, version);
    }
  }
}

}  // namespace

extern "C" {

// What this library was built from, e.g.
// "xnor_lite=3 lce=0.16.0 litert=1.2.0 ruy=3286a34 arch=aarch64".
__attribute__((visibility("default"))) const char* xnor_lite_build_info() {
  return XNOR_LITE_BUILD_INFO;
}

// The registration of LCE op `name` ("LceQuantize", "LceDequantize", "LceBconv2d",
// "LceBMaxPool2d"); for LceBconv2d, `kernel` picks the kernel: 0 LCE's default
// optimized BGEMM with our binary GEMV for batch-1 fully connected layers, 1 indirect BGEMM,
// 2 reference, 3 LCE's default optimized BGEMM alone. nullptr for another name or kernel. For
// runtimes driven through LiteRT's C API (e.g. an Android app's native code):
// TfLiteInterpreterOptionsAddCustomOp(options, name, xnor_lite_registration(name, 0), 1, 1).
__attribute__((visibility("default"))) const TfLiteRegistration* xnor_lite_registration(
    const char* name, int kernel) {
  const std::string op = name == nullptr ? "" : name;
  if (op == "LceQuantize") return compute_engine::tflite::Register_QUANTIZE();
  if (op == "LceDequantize") return compute_engine::tflite::Register_DEQUANTIZE();
  if (op == "LceBMaxPool2d") return compute_engine::tflite::Register_BMAXPOOL_2D();
  if (op != "LceBconv2d") return nullptr;
  switch (kernel) {
    case kDefault: return BinaryConvolution<kDefault>();
    case kIndirectBgemm: return BinaryConvolution<kIndirectBgemm>();
    case kReference: return BinaryConvolution<kReference>();
    case kLce: return BinaryConvolution<kLce>();
    default: return nullptr;
  }
}

// Adds LceQuantize, LceDequantize, LceBconv2d (with `kernel` as above) and
// LceBMaxPool2d to the tflite::MutableOpResolver at `resolver`; with kernel 0 also wraps its
// FULLY_CONNECTED and CONV_2D with our int8 GEMV (int8_gemv.h). Returns 0, or -1 for an
// unknown kernel.
__attribute__((visibility("default"))) int xnor_lite_register_ops(
    std::uintptr_t resolver, int kernel) {
  const TfLiteRegistration* bconv = xnor_lite_registration("LceBconv2d", kernel);
  if (bconv == nullptr) return -1;
  auto* ops = reinterpret_cast<tflite::MutableOpResolver*>(resolver);
  // The resolver keeps the name pointers: they must be (and are) string literals.
  ops->AddCustom("LceQuantize", xnor_lite_registration("LceQuantize", kernel));
  ops->AddCustom("LceDequantize", xnor_lite_registration("LceDequantize", kernel));
  ops->AddCustom("LceBconv2d", bconv);
  ops->AddCustom("LceBMaxPool2d", xnor_lite_registration("LceBMaxPool2d", kernel));
  if (kernel == kDefault) AddInt8Gemv(ops);
  return 0;
}

// Number of live per-interpreter backend contexts (tests check that none
// outlives its interpreter).
__attribute__((visibility("default"))) int xnor_lite_live_backend_contexts() {
  return xnor_lite::LiveBackendContexts();
}

// Number of LceBconv2d invocations in this process that ran the binary GEMV of kernel 0 (tests
// check that the dispatch takes it).
__attribute__((visibility("default"))) long long xnor_lite_binary_gemv_invocations() {
  return xnor_lite::BinaryGemvInvocations();
}

// Number of FULLY_CONNECTED / CONV_2D invocations in this process that ran the int8 GEMV of
// kernel 0 (tests check that the dispatch takes it).
__attribute__((visibility("default"))) long long xnor_lite_int8_gemv_invocations() {
  return xnor_lite::Int8GemvInvocations();
}

// Number of CONV_2D invocations in this process that ran the int8 convolution of kernel 0
// (CPUs without the dot-product instruction; tests check that the dispatch takes it).
__attribute__((visibility("default"))) long long xnor_lite_int8_conv_invocations() {
  return xnor_lite::Int8ConvInvocations();
}

}  // extern "C"
