// trainer/device_train.cc: training.device and the training step on a Backend.
#include "trainer/device_train.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/backend_cpu.h"
#include "kernels/status.h"
#include "trainer/pipeline_runner.h"
#include "trainer/safetensors.h"

#ifdef MOETRAIN_HAVE_CUDA
#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/runtime.h"
#endif

namespace mt::train_internal {
namespace {

constexpr char kBackendEnv[] = "MOETRAIN_DEVICE_BACKEND";
constexpr char kExpAvg[] = "optimizer-exp_avg";
constexpr char kExpAvgSq[] = "optimizer-exp_avg_sq";

// Why CudaBackend cannot run here ("" when it can).
std::string CudaUnavailable() {
#ifdef MOETRAIN_HAVE_CUDA
  if (cuda::DeviceCount() == 0) return "no CUDA device visible";
  return "";
#else
  return "this build has no CUDA backend (configured with MOETRAIN_CUDA OFF)";
#endif
}

}  // namespace

absl::StatusOr<DeviceChoice> ChooseDevice(const Config& cfg, int world_size) {
  const char* env = std::getenv(kBackendEnv);
  const std::string forced = env ? env : "";
  if (!forced.empty() && forced != "cpu" && forced != "cuda")
    return absl::InvalidArgumentError(
        absl::StrCat(kBackendEnv, "=", forced,
                     ": expected cpu (the device path on the CPU backend, for tests) "
                     "or cuda (the default)"));
  DeviceChoice choice;
  const std::string& device = cfg.training.device;
  if (device == "cpu") {
    choice.why = "training.device cpu";
    return choice;
  }
  std::vector<std::string> missing = DevicePathBlockers(cfg);
  if (world_size != 1) missing.push_back(absl::StrCat("the run has ", world_size, " processes"));
  choice.cpu_backend = forced == "cpu";
  if (!choice.cpu_backend) {
    const std::string cuda = CudaUnavailable();
    if (!cuda.empty()) missing.insert(missing.begin(), cuda);
  }
  if (missing.empty()) {
    choice.device_path = true;
    choice.why = choice.cpu_backend ? absl::StrCat(kBackendEnv, "=cpu")
                                    : absl::StrCat("training.device ", device);
    return choice;
  }
  if (device == "cuda")
    return absl::FailedPreconditionError(absl::StrCat(
        cfg.source, ": training.device is cuda, but ", absl::StrJoin(missing, ", "),
        "; the GPU step needs a CUDA build, a visible GPU, one process (parallel.pp = ep = dp = "
        "1) and optimizer.moment_dtype fp32 (training.device auto falls back to the CPU)"));
  choice.cpu_backend = false;
  choice.why = absl::StrJoin(missing, ", ");
  return choice;
}

absl::StatusOr<std::unique_ptr<DeviceTrainer>> DeviceTrainer::Create(Run& r,
                                                                     const DeviceChoice& choice,
                                                                     int local_rank) {
  std::unique_ptr<DeviceTrainer> t(new DeviceTrainer(r));
  if (choice.cpu_backend) {
    t->backend_ = std::make_unique<CpuBackend>();
  } else {
#ifdef MOETRAIN_HAVE_CUDA
    ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaBackend> be, cuda::CudaBackend::Create(local_rank));
    t->device_name_ = be->info().name;
    t->backend_ = std::move(be);
#else
    return absl::FailedPreconditionError(CudaUnavailable());
#endif
  }
  const Config& c = r.cfg;
  ASSIGN_OR_RETURN(const Precision precision, ParsePrecision(c.training.precision));
  t->model_ =
      std::make_unique<DeviceModel>(c.model, precision, &r.model->params(), t->backend_.get());
  Backend& be = *t->backend_;

  // The restored (or zero) moments: ZeroAdamW's full tensors by name (one rank holds all).
  ASSIGN_OR_RETURN(auto state, r.opt->GatherState());
  std::unordered_map<std::string, const Tensor*> m, v;
  for (const auto& [file, into] : {std::pair{kExpAvg, &m}, std::pair{kExpAvgSq, &v}})
    for (const NamedTensor& nt : state[file]) (*into)[nt.name] = &nt.tensor;
  std::vector<DeviceParam*> experts;
  for (DeviceParam* d : t->model_->params()) {
    const Param& p = *d->host;
    if (!p.trainable) continue;
    (p.expert ? experts : t->norm_order_).push_back(d);
    for (const auto& [from, to] : {std::pair{&m, &d->m}, std::pair{&v, &d->v}}) {
      auto it = from->find(p.name);
      if (it == from->end())
        return absl::InternalError(absl::StrCat("the optimizer has no moment for ", p.name));
      const Tensor dev = be.ToDevice(it->second->To(DType::kF32));
      be.Copy(dev.raw(), to->raw(), to->nbytes());
    }
  }
  t->norm_order_.insert(t->norm_order_.end(), experts.begin(), experts.end());
  for (const Moe* moe : r.model->moe_layers()) {
    const DeviceParam* found = nullptr;
    for (const DeviceParam* d : t->model_->params())
      if (moe && d->host == moe->bias()) found = d;
    if (!found) return absl::InternalError("the device model lacks a router bias");
    t->biases_.push_back(found);
  }
  be.Synchronize();  // the uploads' sources are about to go
  return t;
}

DeviceTrainer::~DeviceTrainer() = default;

bool DeviceTrainer::on_gpu() const { return backend_->device() != Device::kCPU; }

std::string DeviceTrainer::Describe() const {
  return on_gpu() ? absl::StrCat(backend_->name(), " (", device_name_, ")")
                  : std::string("the device path on the CPU backend");
}

absl::StatusOr<GlobalBatchResult> DeviceTrainer::ForwardBackward(
    const data::TrainSampleSource& samples, int64_t cursor, int64_t global_batch,
    int64_t micro_batch, const ObjectiveWeights& w) {
  const ModelConfig& mc = model_->config();
  const int64_t S = samples.seq_len(), n = global_batch / micro_batch;
  ASSIGN_OR_RETURN(const std::vector<int32_t> tokens,
                   LocalBatchTokens(samples, cursor, global_batch, /*dp=*/1, /*dp_rank=*/0));
  model_->ZeroGrads();
  GlobalBatchResult out;
  out.losses.mtp.assign(mc.num_nextn_predict_layers, 0.0);
  out.loads.assign(biases_.size(), std::vector<int64_t>(mc.n_routed_experts, 0));
  // As ParallelModel::ForwardBackward: each micro-batch's gradient is of 1/n of its loss,
  // and its losses are added with weight 1/n (the same double), in micro-batch order.
  const double scale = 1.0 / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const Losses l = model_->ForwardBackward(tokens.data() + i * micro_batch * (S + 1), micro_batch,
                                             S, w, scale, &out.loads);
    AddLosses(l, scale, &out.losses);
  }
  return out;
}

double DeviceTrainer::GradNorm() { return model_->GradNorm(norm_order_); }

void DeviceTrainer::InjectNan() {
  if (norm_order_.empty()) return;
  Tensor nan({1}, DType::kF32);
  nan.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  const Tensor dev = backend_->ToDevice(nan);
  backend_->Copy(dev.raw(), norm_order_.front()->grad.raw(), sizeof(float));
  backend_->Synchronize();
}

void DeviceTrainer::Step(double lr, double norm, const std::vector<std::vector<int64_t>>& loads,
                         double gamma) {
  const int64_t step = r_.opt->step() + 1;  // ZeroAdamW::Step's ++step_
  model_->OptimizerStep(r_.cfg.optimizer, lr, step, norm, loads, gamma);
  r_.opt->set_step(step);
}

std::vector<std::vector<float>> DeviceTrainer::Biases() const {
  std::vector<std::vector<float>> out;
  for (const DeviceParam* d : biases_) {
    const Tensor host = backend_->ToHost(d->value);
    out.emplace_back(host.data<float>(), host.data<float>() + host.numel());
  }
  return out;
}

Losses DeviceTrainer::Evaluate(const data::ValidationSource& val, int64_t windows,
                               int64_t micro_batch, const ObjectiveWeights& w) {
  // ParallelModel::Evaluate with one rank: the same batches, sums and means.
  const int64_t S = val.seq_len(), D = model_->config().num_nextn_predict_layers;
  const int64_t batches = (windows + micro_batch - 1) / micro_batch;
  std::vector<double> sums(3 + D, 0.0);  // main, balance, n, mtp
  std::vector<int32_t> tokens(micro_batch * (S + 1));
  for (int64_t batch = 0; batch < batches; ++batch) {
    const int64_t j0 = batch * micro_batch, B = std::min(micro_batch, windows - j0);
    for (int64_t b = 0; b < B; ++b) val.Sample(j0 + b, tokens.data() + b * (S + 1));
    const Losses l = model_->Evaluate(tokens.data(), B, S, w);
    sums[1] += l.balance * B;
    sums[0] += l.main * B;
    sums[2] += B;
    for (size_t k = 0; k < l.mtp.size(); ++k) sums[3 + k] += l.mtp[k] * B;
  }
  Losses out;
  const double count = std::max(sums[2], 1.0);
  out.main = sums[0] / count;
  out.balance = sums[1] / count;
  for (int64_t k = 0; k < D; ++k) out.mtp.push_back(sums[3 + k] / count);
  return out;
}

absl::Status DeviceTrainer::SyncToHost(bool moments) {
  model_->Download(/*grads=*/false);
  if (!moments) return absl::OkStatus();
  std::map<std::string, std::vector<NamedTensor>> files;
  for (const DeviceParam* d : norm_order_) {
    files[kExpAvg].push_back({d->host->name, backend_->ToHost(d->m)});
    files[kExpAvgSq].push_back({d->host->name, backend_->ToHost(d->v)});
  }
  return r_.opt->LoadState(files, "the device model's AdamW moments");
}

}  // namespace mt::train_internal
