// One tflite::CpuBackendContext per interpreter, owned by this library.
//
// LCE 0.16's LceBconv2d asks `CpuBackendContext::GetFromContext(context)` for
// the ruy context it multiplies with. Upstream LiteRT keeps that object in the
// interpreter's kTfLiteCpuBackendContext external-context slot, but in a
// prebuilt runtime (the ai-edge-litert wheel) that slot holds the runtime's own
// C++ object, built with its own flags: reading it from here would mean sharing
// a class layout we cannot check. So this file implements the class declared
// by LiteRT v1.2.0's `tflite/kernels/cpu_backend_context.h` itself and keys
// the instances by TfLiteContext.
//
// Lifetime matters: LCE's BGEMM lets ruy cache packed weights keyed by their
// address. A context that outlived its interpreter could hand a later
// interpreter, whose weights landed at the same address, stale packed weights.
// The registration code (lce_ops.cc) therefore calls AcquireBackendContext from
// every LceBconv2d node's init and ReleaseBackendContext from its free; the
// context is destroyed with the interpreter's last binary convolution.

#include "backend_context.h"

#include <map>
#include <memory>
#include <mutex>

#include "public/gemmlowp.h"
#include "ruy/context.h"
#include "tflite/kernels/cpu_backend_context.h"

namespace {

struct Entry {
  int users = 0;
  std::unique_ptr<tflite::CpuBackendContext> backend;
};

std::mutex& RegistryMutex() {
  static std::mutex mutex;
  return mutex;
}

std::map<const TfLiteContext*, Entry>& Registry() {
  static auto* registry = new std::map<const TfLiteContext*, Entry>();
  return *registry;
}

}  // namespace

namespace xnor_lite {

void AcquireBackendContext(const TfLiteContext* context) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  ++Registry()[context].users;
}

void ReleaseBackendContext(const TfLiteContext* context) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  auto it = Registry().find(context);
  if (it == Registry().end()) return;
  if (--it->second.users <= 0) Registry().erase(it);
}

int LiveBackendContexts() {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  int created = 0;
  for (const auto& item : Registry()) created += item.second.backend != nullptr;
  return created;
}

}  // namespace xnor_lite

namespace tflite {

CpuBackendContext* CpuBackendContext::GetFromContext(TfLiteContext* context) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  Entry& entry = Registry()[context];
  if (entry.backend == nullptr) entry.backend.reset(new CpuBackendContext());
  // The interpreter's thread count can change between invokes
  // (Interpreter::SetNumThreads updates recommended_num_threads).
  if (entry.backend->max_num_threads() != context->recommended_num_threads) {
    entry.backend->SetMaxNumThreads(context->recommended_num_threads);
  }
  return entry.backend.get();
}

CpuBackendContext::CpuBackendContext()
    : TfLiteInternalBackendContext(),
      ruy_context_(new ruy::Context),
      gemmlowp_context_(new gemmlowp::GemmContext) {
  SetMaxNumThreads(1);
  SetUseCaching(false);  // as upstream; LCE asks ruy to cache its own operands
}

CpuBackendContext::~CpuBackendContext() {}

CpuBackendContext::CpuInfo::~CpuInfo() {}

void CpuBackendContext::SetMaxNumThreads(int max_num_threads) {
  // LiteRT's convention: -1 means "the default", which is one thread.
  max_num_threads_ = max_num_threads > 0 ? max_num_threads : 1;
  ruy_context_->set_max_num_threads(max_num_threads_);
  gemmlowp_context_->set_max_num_threads(max_num_threads_);
}

void CpuBackendContext::SetUseCaching(bool flag) { use_caching_ = flag; }

}  // namespace tflite
