// kernels/cuda/attention_cudnn_backend.h: a thin layer over cuDNN's backend (graph) API for
// the SDPA graphs of attention_cudnn_graph.cc: owned descriptors, a graph builder that names
// each tensor by a unique id, engine heuristics (CUDNN_HEUR_MODE_A) to an execution plan, and
// execution through a variant pack.
//
// Every cuDNN call is checked; a failure becomes a Status carrying the call, file:line,
// cudnnGetErrorString and cudnnGetLastErrorString, because a graph cuDNN refuses is not a
// broken process: attention.h then takes the unfused path for that shape.
#pragma once

#include <cudnn.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mt::cuda {

// The cuDNN entry points moetrain uses. libcudnn.so.9 is loaded with dlopen at first use,
// not linked: with its engine libraries it is ~500 MB, too big for launch/bundle.sh, so it
// comes from the GPU machine (the nvidia-cudnn wheel, /usr/local/cuda), and a machine
// without it must still start every binary and train, with attention unfused and the
// reason logged.
struct CudnnApi {
  decltype(&::cudnnGetVersion) GetVersion;
  decltype(&::cudnnGetErrorString) GetErrorString;
  decltype(&::cudnnGetLastErrorString) GetLastErrorString;
  decltype(&::cudnnCreate) Create;
  decltype(&::cudnnDestroy) Destroy;
  decltype(&::cudnnSetStream) SetStream;
  decltype(&::cudnnBackendCreateDescriptor) BackendCreateDescriptor;
  decltype(&::cudnnBackendDestroyDescriptor) BackendDestroyDescriptor;
  decltype(&::cudnnBackendSetAttribute) BackendSetAttribute;
  decltype(&::cudnnBackendGetAttribute) BackendGetAttribute;
  decltype(&::cudnnBackendFinalize) BackendFinalize;
  decltype(&::cudnnBackendExecute) BackendExecute;
};

// The library's entry points, loaded once per process, or why it cannot be loaded.
absl::StatusOr<const CudnnApi*> LoadCudnn();
// The loaded entry points; only after LoadCudnn() succeeded (aborts otherwise).
const CudnnApi& Dnn();

// The Status of a failed cuDNN call (`expr` as written, at file:line).
absl::Status CudnnError(const char* expr, cudnnStatus_t st, const char* file, int line);

#define MT_CUDNN_RETURN_IF_ERROR(expr)                                        \
  do {                                                                        \
    const cudnnStatus_t mt_cudnn_st_ = (expr);                                \
    if (mt_cudnn_st_ != CUDNN_STATUS_SUCCESS) {                               \
      return ::mt::cuda::CudnnError(#expr, mt_cudnn_st_, __FILE__, __LINE__); \
    }                                                                         \
  } while (0)

// One backend descriptor, destroyed with its owner.
class BackendDesc {
 public:
  BackendDesc() = default;
  ~BackendDesc();
  BackendDesc(BackendDesc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  BackendDesc& operator=(BackendDesc&& o) noexcept;
  BackendDesc(const BackendDesc&) = delete;
  BackendDesc& operator=(const BackendDesc&) = delete;

  static absl::StatusOr<BackendDesc> Create(cudnnBackendDescriptorType_t type);
  cudnnBackendDescriptor_t get() const { return d_; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

using Dims4 = std::array<int64_t, 4>;

// A finalized execution plan and the unique ids its variant pack must bind.
struct CudnnPlan {
  BackendDesc plan;
  int64_t workspace_bytes = 0;
  std::vector<int64_t> uids;  // the non-virtual tensors (by-value scalars included)
};

// Builds one operation graph. Methods record the first failure and turn later calls into
// no-ops, so a graph reads as a list of operations and is checked once, in Finalize.
// It also keeps a plain description of what it built (trace()), which
// tests/gpu/attention_cudnn_graph_test.cc executes on the CPU.
class GraphBuilder {
 public:
  struct TensorInfo {
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    Dims4 dims{}, strides{};
    bool is_virtual = false, by_value = false;
  };
  enum class OpKind { kPointwise, kReduction, kMatmul, kReshape };
  struct OpInfo {
    OpKind kind = OpKind::kPointwise;
    int mode = 0;                        // cudnnPointwiseMode_t or cudnnReduceTensorOp_t
    int64_t x = 0, b = 0, t = 0, y = 0;  // matmul: a = x, b, c = y
    int64_t axis = -1;
  };
  struct Trace {
    std::map<int64_t, TensorInfo> tensors;
    std::vector<OpInfo> ops;  // in the order added (a topological order)
  };

  // A tensor; `uid` names it in the variant pack (virtual tensors need unique ids too).
  void Tensor(int64_t uid, cudnnDataType_t type, const Dims4& dims, const Dims4& strides,
              bool is_virtual);
  // A scalar passed by value at execution ([1,1,1,1]; its host pointer goes in the pack).
  void Scalar(int64_t uid, cudnnDataType_t type);
  // y = mode(x[, b[, t]]); b, t = 0 when unused. `axis` only for GEN_INDEX.
  void Pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute, int64_t x, int64_t b,
                 int64_t t, int64_t y, int64_t axis = -1);
  // y = reduce(x) over the dimensions where y has extent 1 (FP32).
  void Reduction(cudnnReduceTensorOp_t op, int64_t x, int64_t y);
  // c [.., M, N] = a [.., M, K] b [.., K, N] (FP32 accumulation).
  void Matmul(int64_t a, int64_t b, int64_t c);
  // y = x with y's dims and strides (a transposed view: no data moves).
  void Reshape(int64_t x, int64_t y);

  // OK while every descriptor so far was accepted (each is finalized as it is added, so
  // this checks a graph's tensors and operations without a device or handle).
  const absl::Status& status() const { return status_; }
  int64_t operations() const { return static_cast<int64_t>(ops_.size()); }
  const Trace& trace() const { return trace_; }

  // The operation graph, heuristics mode A, and the first engine config whose plan
  // finalizes. `what` names the graph in errors.
  absl::StatusOr<CudnnPlan> Finalize(cudnnHandle_t handle, const std::string& what);

 private:
  cudnnBackendDescriptor_t TensorDesc(int64_t uid, const char* op);
  void AddOp(absl::StatusOr<BackendDesc> op);
  absl::StatusOr<BackendDesc> MakePointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute,
                                            int64_t x, int64_t b, int64_t t, int64_t y,
                                            int64_t axis);
  absl::StatusOr<BackendDesc> MakeReduction(cudnnReduceTensorOp_t op, int64_t x, int64_t y);
  absl::StatusOr<BackendDesc> MakeMatmul(int64_t a, int64_t b, int64_t c);
  absl::StatusOr<BackendDesc> MakeReshape(int64_t x, int64_t y);

  absl::Status status_;
  Trace trace_;
  std::map<int64_t, BackendDesc> tensors_;
  std::vector<int64_t> non_virtual_;
  std::vector<BackendDesc> ops_;
  std::vector<BackendDesc> op_parts_;  // pointwise/reduction/matmul descriptors the ops use
};

// Runs `plan` on the handle's stream: `ptrs` holds one pointer per uid of plan.uids (device
// memory, or host memory for by-value scalars); `workspace` has plan.workspace_bytes.
absl::Status ExecutePlan(cudnnHandle_t handle, const CudnnPlan& plan,
                         const std::map<int64_t, void*>& ptrs, void* workspace);

}  // namespace mt::cuda
