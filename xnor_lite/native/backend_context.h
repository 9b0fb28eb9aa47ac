// Per-interpreter CPU backend contexts for LCE's kernels (see backend_context.cc).
#ifndef XNOR_LITE_NATIVE_BACKEND_CONTEXT_H_
#define XNOR_LITE_NATIVE_BACKEND_CONTEXT_H_

#include "tflite/core/c/common.h"

namespace xnor_lite {

// Counts one more user (an LceBconv2d node) of `context`'s backend context.
void AcquireBackendContext(const TfLiteContext* context);

// Counts one user less; the backend context is destroyed with its last user.
void ReleaseBackendContext(const TfLiteContext* context);

// How many backend contexts exist now (for tests of the lifetime rule).
int LiveBackendContexts();

}  // namespace xnor_lite

#endif  // XNOR_LITE_NATIVE_BACKEND_CONTEXT_H_
