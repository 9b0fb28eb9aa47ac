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

#include "backend_context.h"
#include "larq_compute_engine/tflite/kernels/lce_ops_register.h"
#include "tflite/mutable_op_resolver.h"

#ifndef XNOR_LITE_BUILD_INFO
#error "XNOR_LITE_BUILD_INFO must be defined by the build (xnor_lite/build.py)"
#endif

namespace {

using compute_engine::tflite::Register_BCONV_2D;
using compute_engine::tflite::Register_BCONV_2D_OPT_INDIRECT_BGEMM;
using compute_engine::tflite::Register_BCONV_2D_REF;

enum Kernel : int { kDefault = 0, kIndirectBgemm = 1, kReference = 2 };

// An LceBconv2d registration whose init/free also count the node as a user of
// its interpreter's backend context (backend_context.cc).
template <int kKernel>
TfLiteRegistration* BinaryConvolution() {
  static TfLiteRegistration* const upstream =
      kKernel == kIndirectBgemm ? Register_BCONV_2D_OPT_INDIRECT_BGEMM()
      : kKernel == kReference   ? Register_BCONV_2D_REF()
                                : Register_BCONV_2D();
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

}  // namespace

extern "C" {

// What this library was built from, e.g.
// "xnor_lite=1 lce=0.16.0 litert=1.2.0 ruy=3286a34 arch=aarch64".
__attribute__((visibility("default"))) const char* xnor_lite_build_info() {
  return XNOR_LITE_BUILD_INFO;
}

// Adds LceQuantize, LceDequantize, LceBconv2d (with `kernel`: 0 LCE's default
// optimized BGEMM, 1 indirect BGEMM, 2 reference) and LceBMaxPool2d to the
// tflite::MutableOpResolver at `resolver`. Returns 0, or -1 for an unknown kernel.
__attribute__((visibility("default"))) int xnor_lite_register_ops(
    std::uintptr_t resolver, int kernel) {
  TfLiteRegistration* bconv;
  switch (kernel) {
    case kDefault: bconv = BinaryConvolution<kDefault>(); break;
    case kIndirectBgemm: bconv = BinaryConvolution<kIndirectBgemm>(); break;
    case kReference: bconv = BinaryConvolution<kReference>(); break;
    default: return -1;
  }
  auto* ops = reinterpret_cast<tflite::MutableOpResolver*>(resolver);
  ops->AddCustom("LceQuantize", compute_engine::tflite::Register_QUANTIZE());
  ops->AddCustom("LceDequantize", compute_engine::tflite::Register_DEQUANTIZE());
  ops->AddCustom("LceBconv2d", bconv);
  ops->AddCustom("LceBMaxPool2d", compute_engine::tflite::Register_BMAXPOOL_2D());
  return 0;
}

// Number of live per-interpreter backend contexts (tests check that none
// outlives its interpreter).
__attribute__((visibility("default"))) int xnor_lite_live_backend_contexts() {
  return xnor_lite::LiveBackendContexts();
}

}  // extern "C"
