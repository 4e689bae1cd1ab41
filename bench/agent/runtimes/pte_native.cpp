// A torch-free runner of ExecuTorch programs, for devices where ExecuTorch's Python bindings cannot load
// (they link libtorch, and PyPI's aarch64 torch is a CUDA build). It is compiled by pte_native.py against
// the runtime libraries and headers that the executorch wheel ships, and called through ctypes: a C ABI of
// five functions, float32 in and out (an int8 program quantizes inside).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

// The wheel ships the threadpool library but not its header; this is the one call made on it.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

using executorch::extension::Module;
using executorch::runtime::Error;

namespace {

struct Program {
  std::unique_ptr<Module> module;
  std::vector<executorch::aten::SizesType> input_sizes;
  int64_t output_numel = 0;
};

int fail(char* err, size_t errlen, const std::string& message) {
  std::snprintf(err, errlen, "%s", message.c_str());
  return -1;
}

std::string error_name(Error error) { return "ExecuTorch error 0x" + std::to_string(static_cast<int>(error)); }

}  // namespace

extern "C" {

// Sizes ExecuTorch's threadpool; call once per process, before any program loads (resetting it after a
// method is loaded crashes).
int edgekd_pte_set_threads(uint32_t threads) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  return pool != nullptr && pool->_unsafe_reset_threadpool(threads) ? 0 : -1;
}

// Loads `path`'s "forward" method, which must take one float32 tensor and give one float32 tensor.
void* edgekd_pte_load(const char* path, char* err, size_t errlen) {
  auto program = std::make_unique<Program>();
  program->module = std::make_unique<Module>(path, Module::LoadMode::File);
  Error loaded = program->module->load_method("forward");
  if (loaded != Error::Ok) {
    fail(err, errlen, "loading its forward method failed: " + error_name(loaded));
    return nullptr;
  }
  auto meta = program->module->method_meta("forward");
  if (!meta.ok() || meta->num_inputs() != 1 || meta->num_outputs() < 1) {
    fail(err, errlen, "its forward method does not take one tensor and give one");
    return nullptr;
  }
  auto input = meta->input_tensor_meta(0);
  auto output = meta->output_tensor_meta(0);
  if (!input.ok() || !output.ok() || input->scalar_type() != executorch::aten::ScalarType::Float ||
      output->scalar_type() != executorch::aten::ScalarType::Float) {
    fail(err, errlen, "its forward method does not take and give float32 tensors");
    return nullptr;
  }
  for (auto size : input->sizes()) program->input_sizes.push_back(size);
  program->output_numel = 1;
  for (auto size : output->sizes()) program->output_numel *= size;
  return program.release();
}

// The input's shape into `sizes` (at most `capacity` of them); returns how many dimensions it has.
int edgekd_pte_input_shape(void* handle, int64_t* sizes, int capacity) {
  const auto& dims = static_cast<Program*>(handle)->input_sizes;
  for (size_t i = 0; i < dims.size() && static_cast<int>(i) < capacity; ++i) sizes[i] = dims[i];
  return static_cast<int>(dims.size());
}

int64_t edgekd_pte_output_numel(void* handle) { return static_cast<Program*>(handle)->output_numel; }

// One run: `input` holds the input shape's elements, `output` receives output_numel floats.
int edgekd_pte_run(void* handle, float* input, float* output, char* err, size_t errlen) {
  auto* program = static_cast<Program*>(handle);
  auto tensor = executorch::extension::from_blob(input, program->input_sizes);
  auto result = program->module->forward(tensor);
  if (!result.ok()) return fail(err, errlen, "running forward failed: " + error_name(result.error()));
  const auto& out = result->at(0).toTensor();
  if (out.numel() != program->output_numel) return fail(err, errlen, "the output has an unexpected size");
  std::memcpy(output, out.const_data_ptr<float>(), sizeof(float) * out.numel());
  return 0;
}

void edgekd_pte_free(void* handle) { delete static_cast<Program*>(handle); }

}  // extern "C"
