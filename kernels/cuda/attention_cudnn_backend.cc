// kernels/cuda/attention_cudnn_backend.cc: owned backend descriptors, the graph builder,
// engine heuristics to a plan, and execution (attention_cudnn_backend.h).
#include "kernels/cuda/attention_cudnn_backend.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace mt::cuda {
namespace {

// cudnnBackendSetAttribute for one value or an array.
template <typename T>
cudnnStatus_t Set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                  cudnnBackendAttributeType_t type, const T& value) {
  return Dnn().BackendSetAttribute(d, name, type, 1, &value);
}

}  // namespace

absl::StatusOr<const CudnnApi*> LoadCudnn() {
  static const absl::StatusOr<const CudnnApi*>* const loaded =
      new absl::StatusOr<const CudnnApi*>([]() -> absl::StatusOr<const CudnnApi*> {
        // The major version the headers (and so the attribute numbering) belong to.
        const std::string name = absl::StrCat("libcudnn.so.", CUDNN_MAJOR);
        void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (lib == nullptr) {
          const char* why = dlerror();
          return absl::FailedPreconditionError(
              absl::StrCat(name, " not loadable (", why ? why : "?",
                           "): install cuDNN 9 or the nvidia-cudnn wheel on this machine"));
        }
        auto* api = new CudnnApi();
        std::string missing;
        auto bind = [&](auto& fn, const char* symbol) {
          fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
          if (fn == nullptr) absl::StrAppend(&missing, " ", symbol);
        };
        bind(api->GetVersion, "cudnnGetVersion");
        bind(api->GetErrorString, "cudnnGetErrorString");
        bind(api->GetLastErrorString, "cudnnGetLastErrorString");
        bind(api->Create, "cudnnCreate");
        bind(api->Destroy, "cudnnDestroy");
        bind(api->SetStream, "cudnnSetStream");
        bind(api->BackendCreateDescriptor, "cudnnBackendCreateDescriptor");
        bind(api->BackendDestroyDescriptor, "cudnnBackendDestroyDescriptor");
        bind(api->BackendSetAttribute, "cudnnBackendSetAttribute");
        bind(api->BackendGetAttribute, "cudnnBackendGetAttribute");
        bind(api->BackendFinalize, "cudnnBackendFinalize");
        bind(api->BackendExecute, "cudnnBackendExecute");
        if (!missing.empty()) {
          delete api;
          return absl::FailedPreconditionError(
              absl::StrCat(name, " lacks the entry points", missing));
        }
        return api;  // the library stays loaded for the process's life
      }());
  return *loaded;
}

const CudnnApi& Dnn() {
  const absl::StatusOr<const CudnnApi*>& api = LoadCudnn();
  if (!api.ok()) {
    std::fprintf(stderr, "[moetrain] cuDNN used before it was loaded: %s\n",
                 std::string(api.status().message()).c_str());
    std::abort();
  }
  return **api;
}

absl::Status CudnnError(const char* expr, cudnnStatus_t st, const char* file, int line) {
  char last[512] = {0};
  Dnn().GetLastErrorString(last, sizeof(last));
  return absl::InternalError(absl::StrCat("cuDNN ", expr, " failed at ", file, ":", line, ": ",
                                          Dnn().GetErrorString(st),
                                          last[0] ? absl::StrCat(" (", last, ")") : ""));
}

BackendDesc::~BackendDesc() {
  if (d_ != nullptr) Dnn().BackendDestroyDescriptor(d_);
}

BackendDesc& BackendDesc::operator=(BackendDesc&& o) noexcept {
  if (this != &o) {
    if (d_ != nullptr) Dnn().BackendDestroyDescriptor(d_);
    d_ = std::exchange(o.d_, nullptr);
  }
  return *this;
}

absl::StatusOr<BackendDesc> BackendDesc::Create(cudnnBackendDescriptorType_t type) {
  if (absl::StatusOr<const CudnnApi*> api = LoadCudnn(); !api.ok()) return api.status();
  BackendDesc d;
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendCreateDescriptor(type, &d.d_));
  return d;
}

// ---- tensors ----

void GraphBuilder::Tensor(int64_t uid, cudnnDataType_t type, const Dims4& dims,
                          const Dims4& strides, bool is_virtual) {
  if (!status_.ok()) return;
  status_ = [&]() -> absl::Status {
    absl::StatusOr<BackendDesc> t = BackendDesc::Create(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    if (!t.ok()) return t.status();
    const cudnnBackendDescriptor_t d = t->get();
    const int64_t alignment = 16;
    const bool virt = is_virtual;
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, type));
    MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendSetAttribute(d, CUDNN_ATTR_TENSOR_DIMENSIONS,
                                                       CUDNN_TYPE_INT64, 4, dims.data()));
    MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendSetAttribute(d, CUDNN_ATTR_TENSOR_STRIDES,
                                                       CUDNN_TYPE_INT64, 4, strides.data()));
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, uid));
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, alignment));
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, virt));
    MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(d));
    tensors_[uid] = std::move(*t);
    if (!is_virtual) non_virtual_.push_back(uid);
    trace_.tensors[uid] = {type, dims, strides, is_virtual, false};
    return absl::OkStatus();
  }();
}

void GraphBuilder::Scalar(int64_t uid, cudnnDataType_t type) {
  if (!status_.ok()) return;
  status_ = [&]() -> absl::Status {
    absl::StatusOr<BackendDesc> t = BackendDesc::Create(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    if (!t.ok()) return t.status();
    const cudnnBackendDescriptor_t d = t->get();
    const Dims4 ones{1, 1, 1, 1};
    const int64_t alignment = 16;
    const bool by_value = true, virt = false;
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, type));
    MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendSetAttribute(d, CUDNN_ATTR_TENSOR_DIMENSIONS,
                                                       CUDNN_TYPE_INT64, 4, ones.data()));
    MT_CUDNN_RETURN_IF_ERROR(
        Dnn().BackendSetAttribute(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, ones.data()));
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, uid));
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, alignment));
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, virt));
    MT_CUDNN_RETURN_IF_ERROR(Set(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, by_value));
    MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(d));
    tensors_[uid] = std::move(*t);
    non_virtual_.push_back(uid);
    trace_.tensors[uid] = {type, ones, ones, false, true};
    return absl::OkStatus();
  }();
}

cudnnBackendDescriptor_t GraphBuilder::TensorDesc(int64_t uid, const char* op) {
  const auto it = tensors_.find(uid);
  if (it != tensors_.end()) return it->second.get();
  if (status_.ok()) {
    status_ =
        absl::InternalError(absl::StrCat("SDPA graph: ", op, " uses undeclared tensor ", uid));
  }
  return nullptr;
}

// ---- operations ----

void GraphBuilder::AddOp(absl::StatusOr<BackendDesc> op) {
  if (!status_.ok()) return;
  if (!op.ok()) {
    status_ = op.status();
    return;
  }
  ops_.push_back(std::move(*op));
}

void GraphBuilder::Pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute, int64_t x,
                             int64_t b, int64_t t, int64_t y, int64_t axis) {
  if (!status_.ok()) return;
  trace_.ops.push_back({OpKind::kPointwise, static_cast<int>(mode), x, b, t, y, axis});
  AddOp(MakePointwise(mode, compute, x, b, t, y, axis));
}

void GraphBuilder::Reduction(cudnnReduceTensorOp_t op, int64_t x, int64_t y) {
  if (!status_.ok()) return;
  trace_.ops.push_back({OpKind::kReduction, static_cast<int>(op), x, 0, 0, y, -1});
  AddOp(MakeReduction(op, x, y));
}

void GraphBuilder::Matmul(int64_t a, int64_t b, int64_t c) {
  if (!status_.ok()) return;
  trace_.ops.push_back({OpKind::kMatmul, 0, a, b, 0, c, -1});
  AddOp(MakeMatmul(a, b, c));
}

void GraphBuilder::Reshape(int64_t x, int64_t y) {
  if (!status_.ok()) return;
  trace_.ops.push_back({OpKind::kReshape, 0, x, 0, 0, y, -1});
  AddOp(MakeReshape(x, y));
}

absl::StatusOr<BackendDesc> GraphBuilder::MakePointwise(cudnnPointwiseMode_t mode,
                                                        cudnnDataType_t compute, int64_t x,
                                                        int64_t b, int64_t t, int64_t y,
                                                        int64_t axis) {
  absl::StatusOr<BackendDesc> pw = BackendDesc::Create(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  if (!pw.ok()) return pw.status();
  MT_CUDNN_RETURN_IF_ERROR(
      Set(pw->get(), CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, mode));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(pw->get(), CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, compute));
  if (axis >= 0) {
    MT_CUDNN_RETURN_IF_ERROR(Set(pw->get(), CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, axis));
  }
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(pw->get()));

  absl::StatusOr<BackendDesc> op =
      BackendDesc::Create(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  if (!op.ok()) return op.status();
  const cudnnBackendDescriptor_t d = op->get(), pwd = pw->get();
  const cudnnBackendDescriptor_t xd = TensorDesc(x, "pointwise"), yd = TensorDesc(y, "pointwise");
  const cudnnBackendDescriptor_t bd = b ? TensorDesc(b, "pointwise") : nullptr;
  const cudnnBackendDescriptor_t td = t ? TensorDesc(t, "pointwise") : nullptr;
  if (!status_.ok()) return status_;
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, pwd));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, xd));
  if (bd) {
    MT_CUDNN_RETURN_IF_ERROR(
        Set(d, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, bd));
  }
  if (td) {
    MT_CUDNN_RETURN_IF_ERROR(
        Set(d, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, td));
  }
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, yd));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(d));
  op_parts_.push_back(std::move(*pw));
  return op;
}

absl::StatusOr<BackendDesc> GraphBuilder::MakeReduction(cudnnReduceTensorOp_t rop, int64_t x,
                                                        int64_t y) {
  absl::StatusOr<BackendDesc> red = BackendDesc::Create(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
  if (!red.ok()) return red.status();
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  MT_CUDNN_RETURN_IF_ERROR(
      Set(red->get(), CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, rop));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(red->get(), CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, f32));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(red->get()));

  absl::StatusOr<BackendDesc> op =
      BackendDesc::Create(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
  if (!op.ok()) return op.status();
  const cudnnBackendDescriptor_t d = op->get(), rd = red->get();
  const cudnnBackendDescriptor_t xd = TensorDesc(x, "reduction"), yd = TensorDesc(y, "reduction");
  if (!status_.ok()) return status_;
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, xd));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, yd));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, rd));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(d));
  op_parts_.push_back(std::move(*red));
  return op;
}

absl::StatusOr<BackendDesc> GraphBuilder::MakeMatmul(int64_t a, int64_t b, int64_t c) {
  absl::StatusOr<BackendDesc> mm = BackendDesc::Create(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
  if (!mm.ok()) return mm.status();
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  MT_CUDNN_RETURN_IF_ERROR(Set(mm->get(), CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, f32));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(mm->get()));

  absl::StatusOr<BackendDesc> op = BackendDesc::Create(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
  if (!op.ok()) return op.status();
  const cudnnBackendDescriptor_t d = op->get(), md = mm->get();
  const cudnnBackendDescriptor_t ad = TensorDesc(a, "matmul"), bd = TensorDesc(b, "matmul"),
                                 cd = TensorDesc(c, "matmul");
  if (!status_.ok()) return status_;
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, ad));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, bd));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, cd));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, md));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(d));
  op_parts_.push_back(std::move(*mm));
  return op;
}

absl::StatusOr<BackendDesc> GraphBuilder::MakeReshape(int64_t x, int64_t y) {
  absl::StatusOr<BackendDesc> op = BackendDesc::Create(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
  if (!op.ok()) return op.status();
  const cudnnBackendDescriptor_t d = op->get();
  const cudnnBackendDescriptor_t xd = TensorDesc(x, "reshape"), yd = TensorDesc(y, "reshape");
  if (!status_.ok()) return status_;
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, xd));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, yd));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(d));
  return op;
}

// ---- graph -> heuristics -> plan ----

absl::StatusOr<CudnnPlan> GraphBuilder::Finalize(cudnnHandle_t handle, const std::string& what) {
  if (!status_.ok()) {
    return absl::Status(status_.code(), absl::StrCat(what, ": ", status_.message()));
  }
  absl::StatusOr<BackendDesc> graph = BackendDesc::Create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  if (!graph.ok()) return graph.status();
  std::vector<cudnnBackendDescriptor_t> ops;
  for (const BackendDesc& op : ops_) ops.push_back(op.get());
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendSetAttribute(graph->get(), CUDNN_ATTR_OPERATIONGRAPH_OPS,
                                                     CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                                     static_cast<int64_t>(ops.size()), ops.data()));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(graph->get(), CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, handle));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(graph->get()));

  absl::StatusOr<BackendDesc> heur = BackendDesc::Create(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  if (!heur.ok()) return heur.status();
  const cudnnBackendDescriptor_t gd = graph->get();
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  MT_CUDNN_RETURN_IF_ERROR(
      Set(heur->get(), CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, gd));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(heur->get(), CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, mode));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(heur->get()));
  int64_t count = 0;
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendGetAttribute(heur->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                                     nullptr));
  if (count <= 0) {
    char last[512] = {0};
    Dnn().GetLastErrorString(last, sizeof(last));
    return absl::UnimplementedError(absl::StrCat(what, ": cuDNN heuristics offer no engine",
                                                 last[0] ? absl::StrCat(" (", last, ")") : ""));
  }
  std::vector<BackendDesc> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    absl::StatusOr<BackendDesc> c = BackendDesc::Create(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    if (!c.ok()) return c.status();
    raw.push_back(c->get());
    configs.push_back(std::move(*c));
  }
  int64_t returned = 0;
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendGetAttribute(heur->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                                     &returned, raw.data()));

  // Heuristics rank the configs; the first whose plan finalizes is taken. A config that
  // does not finalize (e.g. its kernel does not compile for this shape) is skipped.
  std::string refusals;
  for (int64_t i = 0; i < returned; ++i) {
    absl::StatusOr<BackendDesc> plan = BackendDesc::Create(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    if (!plan.ok()) return plan.status();
    const cudnnBackendDescriptor_t cfg = raw[i];
    MT_CUDNN_RETURN_IF_ERROR(
        Set(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, handle));
    MT_CUDNN_RETURN_IF_ERROR(Set(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, cfg));
    const cudnnStatus_t st = Dnn().BackendFinalize(plan->get());
    if (st != CUDNN_STATUS_SUCCESS) {
      // cuDNN's own reason (unsupported layout, NVRTC missing, ...) is what the first run
      // on a device needs to see; the status name alone rarely says which.
      char last[512] = {0};
      Dnn().GetLastErrorString(last, sizeof(last));
      absl::StrAppend(&refusals, " config ", i, ": ", Dnn().GetErrorString(st),
                      last[0] ? absl::StrCat(" (", last, ")") : "", ";");
      continue;
    }
    CudnnPlan out;
    MT_CUDNN_RETURN_IF_ERROR(
        Dnn().BackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                  CUDNN_TYPE_INT64, 1, nullptr, &out.workspace_bytes));
    out.plan = std::move(*plan);
    out.uids = non_virtual_;
    return out;
  }
  return absl::UnimplementedError(
      absl::StrCat(what, ": no engine config of ", returned, " finalizes:", refusals));
}

absl::Status ExecutePlan(cudnnHandle_t handle, const CudnnPlan& plan,
                         const std::map<int64_t, void*>& ptrs, void* workspace) {
  std::vector<void*> data;
  for (const int64_t uid : plan.uids) {
    const auto it = ptrs.find(uid);
    if (it == ptrs.end() || it->second == nullptr) {
      return absl::InternalError(absl::StrCat("SDPA execute: no pointer for tensor ", uid));
    }
    data.push_back(it->second);
  }
  absl::StatusOr<BackendDesc> pack = BackendDesc::Create(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  if (!pack.ok()) return pack.status();
  const cudnnBackendDescriptor_t d = pack->get();
  MT_CUDNN_RETURN_IF_ERROR(
      Dnn().BackendSetAttribute(d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                                static_cast<int64_t>(plan.uids.size()), plan.uids.data()));
  MT_CUDNN_RETURN_IF_ERROR(
      Dnn().BackendSetAttribute(d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                                static_cast<int64_t>(data.size()), data.data()));
  MT_CUDNN_RETURN_IF_ERROR(
      Set(d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, workspace));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendFinalize(d));
  MT_CUDNN_RETURN_IF_ERROR(Dnn().BackendExecute(handle, plan.plan.get(), d));
  return absl::OkStatus();
}

}  // namespace mt::cuda
