// trainer/device_train.cc: training.device and the training step on a Backend.
#include "trainer/device_train.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
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
#ifdef MOETRAIN_HAVE_NCCL
#include "parallel/communicator_nccl.h"
#endif

namespace mt::train_internal {
namespace {

constexpr char kBackendEnv[] = "MOETRAIN_DEVICE_BACKEND";
constexpr char kExpAvg[] = "optimizer-exp_avg";
constexpr char kExpAvgSq[] = "optimizer-exp_avg_sq";

// Why CudaBackend cannot run here for `dp` data-parallel ranks ("" when it can).
std::string CudaUnavailable(int dp) {
#ifdef MOETRAIN_HAVE_CUDA
  if (cuda::DeviceCount() == 0) return "no CUDA device visible";
#ifndef MOETRAIN_HAVE_NCCL
  if (dp > 1) return "this build has no NCCL communicator (nccl.h / libnccl not found)";
#endif
  return "";
#else
  (void)dp;
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
  if (missing.empty() && world_size != cfg.parallel.dp)
    missing.push_back(
        absl::StrCat("the run has ", world_size, " processes for parallel.dp ", cfg.parallel.dp));
  choice.cpu_backend = forced == "cpu";
  if (!choice.cpu_backend) {
    const std::string cuda = CudaUnavailable(cfg.parallel.dp);
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
        "; the GPU step needs a CUDA build, a visible GPU (and NCCL for parallel.dp > 1) and "
        "parallel.pp = ep = 1 (training.device auto falls back to the CPU)"));
  choice.cpu_backend = false;
  choice.why = absl::StrJoin(missing, ", ");
  return choice;
}

absl::StatusOr<std::unique_ptr<DeviceTrainer>> DeviceTrainer::Create(Run& r,
                                                                     const DeviceChoice& choice,
                                                                     int local_rank) {
  std::unique_ptr<DeviceTrainer> t(new DeviceTrainer(r));
  ProcessGroups& groups = r.model->groups();
  t->world_ = groups.world.get();
  t->dp_ = groups.dp.get();
  t->dp_device_ = t->dp_;  // the CPU backend's device memory is host memory
  if (choice.cpu_backend) {
    t->backend_ = std::make_unique<CpuBackend>();
  } else {
#ifdef MOETRAIN_HAVE_CUDA
    ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaBackend> be, cuda::CudaBackend::Create(local_rank));
    t->device_name_ = be->info().name;
#ifdef MOETRAIN_HAVE_NCCL
    // On the compute stream: the collectives follow the backward and precede AdamW in
    // stream order, and return once done (NcclCommunicator's contract).
    if (t->dp_->size() > 1) {
      ASSIGN_OR_RETURN(t->nccl_dp_, NcclCommunicator::Create(*t->dp_, be->stream(), "dp"));
      t->dp_device_ = t->nccl_dp_.get();
    }
#endif
    t->backend_ = std::move(be);
#else
    return absl::FailedPreconditionError(CudaUnavailable(t->dp_->size()));
#endif
  }
  const Config& c = r.cfg;
  ASSIGN_OR_RETURN(const Precision precision, ParsePrecision(c.training.precision));
  DeviceOptimizerLayout layout;
  layout.dp_size = t->dp_->size();
  layout.dp_rank = t->dp_->rank();
  layout.moments = c.optimizer.moment_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  t->model_ = std::make_unique<DeviceModel>(c.model, precision, &r.model->params(),
                                            t->backend_.get(), layout);

  // The restored (or zero) moments: ZeroAdamW's full tensors by name (collective).
  ASSIGN_OR_RETURN(auto state, r.opt->GatherState());
  std::map<std::string, const Tensor*> m, v;
  for (const auto& [file, into] : {std::pair{kExpAvg, &m}, std::pair{kExpAvgSq, &v}})
    for (const NamedTensor& nt : state[file]) (*into)[nt.name] = &nt.tensor;
  RETURN_IF_ERROR(t->model_->LoadMoments(m, v));
  std::vector<DeviceParam*> experts;
  for (DeviceParam* d : t->model_->params()) {
    const Param& p = *d->host;
    if (p.trainable) (p.expert ? experts : t->norm_order_).push_back(d);
  }
  t->norm_order_.insert(t->norm_order_.end(), experts.begin(), experts.end());
  for (const Moe* moe : r.model->moe_layers()) {
    const DeviceParam* found = nullptr;
    for (const DeviceParam* d : t->model_->params())
      if (moe && d->host == moe->bias()) found = d;
    if (!found) return absl::InternalError("the device model lacks a router bias");
    t->biases_.push_back(found);
  }
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
  const int64_t S = samples.seq_len(), E = mc.n_routed_experts;
  ASSIGN_OR_RETURN(const std::vector<int32_t> tokens,
                   LocalBatchTokens(samples, cursor, global_batch, dp_->size(), dp_->rank()));
  const int64_t n_local = static_cast<int64_t>(tokens.size()) / (S + 1) / micro_batch;
  model_->ZeroGrads();
  GlobalBatchResult out;
  out.losses.mtp.assign(mc.num_nextn_predict_layers, 0.0);
  out.loads.assign(biases_.size(), std::vector<int64_t>(E, 0));
  // As ParallelModel::ForwardBackward: each micro-batch's gradient is of 1/n of its loss
  // (n over all ranks), and its losses are added with weight 1/n (the same double), in
  // micro-batch order; then summed over the ranks.
  const double scale = 1.0 / static_cast<double>(global_batch / micro_batch);
  for (int64_t i = 0; i < n_local; ++i) {
    const Losses l = model_->ForwardBackward(tokens.data() + i * micro_batch * (S + 1), micro_batch,
                                             S, w, scale, &out.loads);
    AddLosses(l, scale, &out.losses);
  }
  if (world_->size() > 1) RETURN_IF_ERROR(SumOverRanks(*world_, &out));
  return out;
}

absl::StatusOr<double> DeviceTrainer::GradNorm() {
  if (dp_->size() == 1) return model_->GradNorm(norm_order_);
  // ZeRO-1 (ZeroAdamW::ReduceGradients): each rank gets its shard of the summed gradients.
  DeviceParams& flat = model_->flat();
  RETURN_IF_ERROR(dp_device_->ReduceScatter(flat.grads(), flat.grad_shard(), ReduceOp::kSum));
  std::vector<double> sq = {model_->ShardSumSquares()};
  RETURN_IF_ERROR(dp_->AllReduce(sq, ReduceOp::kSum));
  return std::sqrt(sq[0]);
}

void DeviceTrainer::InjectNan() {
  if (norm_order_.empty()) return;
  Tensor nan({1}, DType::kF32);
  nan.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  const Tensor dev = backend_->ToDevice(nan);
  backend_->Copy(dev.raw(), norm_order_.front()->grad.raw(), sizeof(float));
  backend_->Synchronize();
}

absl::Status DeviceTrainer::Step(double lr, double norm,
                                 const std::vector<std::vector<int64_t>>& loads, double gamma) {
  const int64_t step = r_.opt->step() + 1;  // ZeroAdamW::Step's ++step_
  model_->OptimizerStep(r_.cfg.optimizer, lr, step, norm, loads, gamma);
  r_.opt->set_step(step);
  if (dp_->size() == 1) return absl::OkStatus();
  // Every rank's updated shard to every rank (ZeroAdamW's AllGatherParameters), through a
  // copy: the gather writes the whole padded range, this rank's shard included.
  DeviceParams& flat = model_->flat();
  Backend& be = *backend_;
  Tensor shard = be.Empty({flat.shard_size()});
  be.Copy(flat.values().data<float>() + flat.shard_begin(), shard.raw(), shard.nbytes());
  return dp_device_->AllGather(shard, OutBuffer(flat.values().raw(), flat.padded(), DType::kF32));
}

std::vector<std::vector<float>> DeviceTrainer::Biases() const {
  std::vector<std::vector<float>> out;
  for (const DeviceParam* d : biases_) {
    const Tensor host = backend_->ToHost(d->value);
    out.emplace_back(host.data<float>(), host.data<float>() + host.numel());
  }
  return out;
}

absl::StatusOr<Losses> DeviceTrainer::Evaluate(const data::ValidationSource& val, int64_t windows,
                                               int64_t micro_batch, const ObjectiveWeights& w) {
  // ParallelModel::Evaluate without pipeline stages: batch r x dp + dp_rank on each rank,
  // the same sums and means (no all-to-all, so a rank with no batch left simply stops).
  const int64_t S = val.seq_len(), D = model_->config().num_nextn_predict_layers;
  const int64_t batches = (windows + micro_batch - 1) / micro_batch;
  const int dp = dp_->size();
  std::vector<double> sums(3 + D, 0.0);  // main, balance, n, mtp
  std::vector<int32_t> tokens(micro_batch * (S + 1));
  for (int64_t batch = dp_->rank(); batch < batches; batch += dp) {
    const int64_t j0 = batch * micro_batch, B = std::min(micro_batch, windows - j0);
    for (int64_t b = 0; b < B; ++b) val.Sample(j0 + b, tokens.data() + b * (S + 1));
    const Losses l = model_->Evaluate(tokens.data(), B, S, w);
    sums[1] += l.balance * B;
    sums[0] += l.main * B;
    sums[2] += B;
    for (size_t k = 0; k < l.mtp.size(); ++k) sums[3 + k] += l.mtp[k] * B;
  }
  if (world_->size() > 1) RETURN_IF_ERROR(world_->AllReduce(sums, ReduceOp::kSum));
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
  // Every rank's moment shard, gathered on the host (collective over dp), cut into the
  // parameters' full tensors; ZeroAdamW::LoadState keeps its own shard of those.
  const DeviceParams& flat = model_->flat();
  Tensor shard[2], full[2];
  model_->MomentShards(&shard[0], &shard[1]);
  const DType dt = flat.moment_dtype();
  const size_t es = DTypeSize(dt);
  for (int i = 0; i < 2; ++i) {
    full[i] = Tensor({flat.padded()}, dt);
    RETURN_IF_ERROR(dp_->AllGather(shard[i], full[i]));
  }
  std::map<std::string, std::vector<NamedTensor>> files;
  for (const DeviceParam* d : norm_order_) {
    for (int i = 0; i < 2; ++i) {
      Tensor t(d->value.shape(), dt);
      std::memcpy(t.raw(), static_cast<const char*>(full[i].raw()) + d->offset * es, t.nbytes());
      files[i == 0 ? kExpAvg : kExpAvgSq].push_back({d->host->name, std::move(t)});
    }
  }
  return r_.opt->LoadState(files, "the device model's AdamW moments");
}

}  // namespace mt::train_internal
