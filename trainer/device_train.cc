// trainer/device_train.cc: training.device and the training step on a Backend.
#include "trainer/device_train.h"

#include <algorithm>
#include <array>
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
#include "parallel/p2p_group.h"
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
constexpr char kEmulateNcclP2pEnv[] = "MOETRAIN_EMULATE_NCCL_P2P";
constexpr char kExpAvg[] = "optimizer-exp_avg";
constexpr char kExpAvgSq[] = "optimizer-exp_avg_sq";

// Why CudaBackend cannot run here for `ranks` (parallel.pp x parallel.dp) ranks ("" when it
// can): more than one moves device buffers over NCCL.
std::string CudaUnavailable(int ranks) {
#ifdef MOETRAIN_HAVE_CUDA
  if (cuda::DeviceCount() == 0) return "no CUDA device visible";
#ifndef MOETRAIN_HAVE_NCCL
  if (ranks > 1) return "this build has no NCCL communicator (nccl.h / libnccl not found)";
#endif
  return "";
#else
  (void)ranks;
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
  if (missing.empty() && world_size != cfg.parallel.pp * cfg.parallel.dp)
    missing.push_back(absl::StrCat("the run has ", world_size, " processes for parallel.pp ",
                                   cfg.parallel.pp, " x parallel.dp ", cfg.parallel.dp));
  choice.cpu_backend = forced == "cpu";
  if (!choice.cpu_backend) {
    const std::string cuda = CudaUnavailable(cfg.parallel.pp * cfg.parallel.dp);
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
        "; the GPU step needs a CUDA build, a visible GPU (and NCCL for more than one rank) and "
        "parallel.schedule 1f1b when parallel.pp > 1 (training.device auto falls back to the "
        "CPU)"));
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
  t->pp_ = groups.pp.get();
  t->dp_ = groups.dp.get();
  t->expert_dp_ = groups.expert_dp.get();
  // The CPU backend's device memory is host memory: its collectives are the MPI groups'.
  t->dp_device_ = t->dp_;
  t->expert_dp_device_ = t->expert_dp_;
  t->pp_device_ = t->pp_;
  const int ep = groups.ep->size();
  t->ep_group_ = {ep, groups.ep->rank(), groups.ep.get(), groups.ep.get()};
  if (choice.cpu_backend) {
    t->backend_ = std::make_unique<CpuBackend>();
    // Tests: the pipeline's point to point as over NCCL (untagged, grouped; p2p_group.h).
    const char* emulate = std::getenv(kEmulateNcclP2pEnv);
    if (emulate != nullptr && std::string(emulate) == "1" && t->pp_->size() > 1) {
      t->emulated_pp_ = std::make_unique<GroupedP2pCommunicator>(t->pp_);
      t->pp_device_ = t->emulated_pp_.get();
    }
  } else {
#ifdef MOETRAIN_HAVE_CUDA
    ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaBackend> be, cuda::CudaBackend::Create(local_rank));
    t->device_name_ = be->info().name;
#ifdef MOETRAIN_HAVE_NCCL
    // On the comm stream, ordered against compute by events (communicator_nccl.h): the
    // collectives follow the backward and precede AdamW in stream order, and the blocking
    // ones return once done; the EP exchange's started form overlaps the shared expert.
    const cudaStream_t compute = be->streams().compute(), comm = be->streams().comm();
    if (t->dp_->size() > 1) {
      ASSIGN_OR_RETURN(t->nccl_dp_,
                       NcclCommunicator::Create(*t->dp_, compute, comm, "dp", groups.watchdog));
      t->dp_device_ = t->nccl_dp_.get();
    }
    // Expert parallelism: the token exchange over the EP group, the experts' gradients
    // over the expert-DP group (in the same stream order as the DP group's).
    if (ep > 1) {
      ASSIGN_OR_RETURN(t->nccl_ep_,
                       NcclCommunicator::Create(*groups.ep, compute, comm, "ep", groups.watchdog));
      t->ep_group_.device = t->nccl_ep_.get();
    }
    if (ep > 1 && t->expert_dp_->size() > 1) {
      ASSIGN_OR_RETURN(t->nccl_expert_dp_, NcclCommunicator::Create(*t->expert_dp_, compute, comm,
                                                                    "expert_dp", groups.watchdog));
      t->expert_dp_device_ = t->nccl_expert_dp_.get();
    }
    // Pipeline stages: activations and their gradients straight from device memory.
    if (t->pp_->size() > 1) {
      ASSIGN_OR_RETURN(t->nccl_pp_,
                       NcclCommunicator::Create(*t->pp_, compute, comm, "pp", groups.watchdog));
      t->pp_device_ = t->nccl_pp_.get();
    }
#endif
    t->backend_ = std::move(be);
#else
    return absl::FailedPreconditionError(CudaUnavailable(t->world_->size()));
#endif
  }
  const Config& c = r.cfg;
  ASSIGN_OR_RETURN(const Precision precision, ParsePrecision(c.training.precision));
  DeviceOptimizerLayout layout;
  layout.dp_size = t->dp_->size();
  layout.dp_rank = t->dp_->rank();
  layout.moments = c.optimizer.moment_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  if (ep > 1) {  // the experts' own region, reduced over the expert-DP group (ZeroAdamW)
    layout.expert_dp_size = t->expert_dp_->size();
    layout.expert_dp_rank = t->expert_dp_->rank();
  }
  // This rank's pipeline stage (the CPU path's: ParallelModel's one chunk under 1F1B).
  const int pp = t->pp_->size();
  t->model_ =
      std::make_unique<DeviceModel>(c.model, precision, &r.model->params(), t->backend_.get(),
                                    layout, t->ep_group_, t->pp_->rank(), pp);
  if (pp > 1) t->stage_copies_ = FindStageCopies(*t->model_, pp);

  // The restored (or zero) moments: ZeroAdamW's full tensors by name (collective).
  ASSIGN_OR_RETURN(auto state, r.opt->GatherState());
  std::map<std::string, const Tensor*> m, v;
  for (const auto& [file, into] : {std::pair{kExpAvg, &m}, std::pair{kExpAvgSq, &v}})
    for (const NamedTensor& nt : state[file]) (*into)[nt.name] = &nt.tensor;
  RETURN_IF_ERROR(t->model_->LoadMoments(m, v));
  std::vector<DeviceParam*> experts;
  for (DeviceParam* d : t->model_->params()) {
    const Param& p = *d->host;
    if (p.trainable) (p.expert ? experts : t->trainable_).push_back(d);
  }
  t->trainable_.insert(t->trainable_.end(), experts.begin(), experts.end());
  // Each element counts in the norm once over the pipeline ranks (ZeroAdamW's
  // counts_in_norm): the last stage's copy of the embedding does not.
  for (DeviceParam* d : t->trainable_) {
    if (r.model->CountsInNorm(*d->host))
      t->norm_order_.push_back(d);
    else
      t->skip_.push_back(d);
  }
  for (const Moe* moe : r.model->moe_layers()) {
    const DeviceParam* found = nullptr;
    for (const DeviceParam* d : t->model_->params())
      if (moe && d->host == moe->bias()) found = d;
    if (moe && !found) return absl::InternalError("the device model lacks a router bias");
    t->biases_.push_back(found);
  }
  return t;
}

DeviceTrainer::~DeviceTrainer() = default;

bool DeviceTrainer::on_gpu() const { return backend_->device() != Device::kCPU; }

std::string DeviceTrainer::Describe() const {
  std::string out = on_gpu() ? absl::StrCat(backend_->name(), " (", device_name_, ")")
                             : std::string("the device path on the CPU backend");
  if (pp_->size() > 1) absl::StrAppend(&out, ", pipeline stages over ", pp_device_->name());
  return out;
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
  if (pp_->size() == 1) {
    for (int64_t i = 0; i < n_local; ++i) {
      const Losses l = model_->ForwardBackward(tokens.data() + i * micro_batch * (S + 1),
                                               micro_batch, S, w, scale, &out.loads);
      AddLosses(l, scale, &out.losses);
    }
  } else {
    // The CPU path's 1F1B action list for this rank (ParallelModel::ForwardBackward).
    auto it = schedules_.find(n_local);
    if (it == schedules_.end()) {
      ASSIGN_OR_RETURN(PipelineSchedule s,
                       Make1F1BSchedule(pp_->size(), static_cast<int>(n_local)));
      // Over NCCL too: untagged, and each send held for the next receive (p2p_group.h).
      RETURN_IF_ERROR(ValidateGroupedRendezvous(s));
      it = schedules_.emplace(n_local, std::move(s)).first;
    }
    DevicePipelineRun run;
    run.schedule = &it->second;
    run.rank = pp_->rank();
    run.model = model_.get();
    run.pp = pp_device_;
    run.tokens = [&](int i) { return tokens.data() + i * micro_batch * (S + 1); };
    run.B = micro_batch;
    run.S = S;
    run.weights = w;
    run.grad_scale = scale;
    RETURN_IF_ERROR(RunDevicePipeline(run, scale, &out.losses, &out.loads));
    RETURN_IF_ERROR(SumStageCopies(stage_copies_, *backend_, *pp_device_));
  }
  if (world_->size() > 1) RETURN_IF_ERROR(SumOverRanks(*world_, &out));
  return out;
}

absl::StatusOr<double> DeviceTrainer::GradNorm() {
  if (dp_->size() == 1) {
    std::vector<double> sq = {model_->GradSumSquares(norm_order_)};
    if (world_->size() > 1) RETURN_IF_ERROR(world_->AllReduce(sq, ReduceOp::kSum));
    return std::sqrt(sq[0]);
  }
  // ZeRO-1 (ZeroAdamW::ReduceGradients): each rank gets its shard of the summed gradients,
  // per region over its group (dense: DP; routed experts under EP: expert-DP).
  DeviceParams& flat = model_->flat();
  for (size_t i = 0; i < flat.regions().size(); ++i) {
    const DeviceParamRegion& g = flat.regions()[i];
    Tensor shard = flat.grad_shard().Slice(g.shard_offset, g.shard_offset + g.shard_size());
    const Tensor grads = flat.grads().Slice(g.begin, g.padded);
    if (g.shards == 1)
      backend_->Copy(grads.raw(), shard.raw(), grads.nbytes());
    else
      RETURN_IF_ERROR(RegionComm(i, true)->ReduceScatter(grads, shard, ReduceOp::kSum));
  }
  // Over the world, as ZeroAdamW: each pipeline stage adds its own parameters.
  std::vector<double> sq = {model_->ShardSumSquares(skip_)};
  RETURN_IF_ERROR(world_->AllReduce(sq, ReduceOp::kSum));
  return std::sqrt(sq[0]);
}

void DeviceTrainer::InjectNan() {
  if (trainable_.empty()) return;
  Tensor nan({1}, DType::kF32);
  nan.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  const Tensor dev = backend_->ToDevice(nan);
  backend_->Copy(dev.raw(), trainable_.front()->grad.raw(), sizeof(float));
  backend_->Synchronize();
}

absl::Status DeviceTrainer::Step(double lr, double norm,
                                 const std::vector<std::vector<int64_t>>& loads, double gamma) {
  const int64_t step = r_.opt->step() + 1;  // ZeroAdamW::Step's ++step_
  model_->OptimizerStep(r_.cfg.optimizer, lr, step, norm, loads, gamma);
  r_.opt->set_step(step);
  if (dp_->size() == 1) return absl::OkStatus();
  // Every rank's updated shard to every rank (ZeroAdamW's AllGatherParameters), per region,
  // through a copy: the gather writes the region's whole padded range, this rank's shard
  // included.
  DeviceParams& flat = model_->flat();
  Backend& be = *backend_;
  for (size_t i = 0; i < flat.regions().size(); ++i) {
    const DeviceParamRegion& g = flat.regions()[i];
    if (g.shards == 1) continue;  // updated in place
    Tensor shard = be.Empty({g.shard_size()});
    be.Copy(flat.values().data<float>() + g.shard_begin(), shard.raw(), shard.nbytes());
    RETURN_IF_ERROR(RegionComm(i, true)->AllGather(
        shard, OutBuffer(flat.values().data<float>() + g.begin, g.padded - g.begin, DType::kF32)));
  }
  return absl::OkStatus();
}

Communicator* DeviceTrainer::RegionComm(size_t region, bool device) const {
  if (region == 0) return device ? dp_device_ : dp_;
  return device ? expert_dp_device_ : expert_dp_;
}

std::vector<std::vector<float>> DeviceTrainer::Biases() const {
  std::vector<std::vector<float>> out;
  for (const DeviceParam* d : biases_) {
    if (!d) {  // another pipeline stage's layer
      out.emplace_back();
      continue;
    }
    const Tensor host = backend_->ToHost(d->value);
    out.emplace_back(host.data<float>(), host.data<float>() + host.numel());
  }
  return out;
}

absl::StatusOr<Losses> DeviceTrainer::Evaluate(const data::ValidationSource& val, int64_t windows,
                                               int64_t micro_batch, const ObjectiveWeights& w) {
  // ParallelModel::Evaluate: batch r x dp + dp_rank on each rank, through every pipeline
  // stage in turn, the same sums and means. Under expert parallelism every rank runs the
  // same number of forwards (one with no batch left repeats batch 0 and drops it): the
  // experts' exchange needs the whole EP group every time.
  const int64_t S = val.seq_len(), D = model_->config().num_nextn_predict_layers;
  const int64_t batches = (windows + micro_batch - 1) / micro_batch;
  const int dp = dp_->size();
  const int64_t rounds = ep_group_.size > 1 ? (batches + dp - 1) / dp : batches;
  std::vector<double> sums(3 + D, 0.0);  // main, balance, n, mtp
  std::vector<int32_t> tokens(micro_batch * (S + 1));
  for (int64_t batch = dp_->rank(); batch < rounds * dp; batch += dp) {
    const bool real = batch < batches;
    if (!real && ep_group_.size == 1) break;
    const int64_t j0 = real ? batch * micro_batch : 0, B = std::min(micro_batch, windows - j0);
    for (int64_t b = 0; b < B; ++b) val.Sample(j0 + b, tokens.data() + b * (S + 1));
    ASSIGN_OR_RETURN(const Losses l, EvaluateStage(*model_, pp_device_, tokens.data(), B, S, w));
    if (!real) continue;
    sums[1] += l.balance * B;
    if (!model_->stage().last()) continue;
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
  // Every rank's moment shards, gathered on the host per region (collective over its
  // group), cut into the parameters' full tensors; ZeroAdamW::LoadState keeps its own
  // shard of those.
  const DeviceParams& flat = model_->flat();
  Tensor shard[2];
  model_->MomentShards(&shard[0], &shard[1]);
  const DType dt = flat.moment_dtype();
  const size_t es = DTypeSize(dt);
  const std::vector<DeviceParamRegion>& regions = flat.regions();
  std::vector<std::array<Tensor, 2>> full(regions.size());  // per region: m, v [padded - begin]
  for (size_t g = 0; g < regions.size(); ++g) {
    const DeviceParamRegion& r = regions[g];
    for (int i = 0; i < 2; ++i) {
      full[g][i] = Tensor({r.padded - r.begin}, dt);
      const Tensor mine = shard[i].Slice(r.shard_offset, r.shard_offset + r.shard_size());
      RETURN_IF_ERROR(RegionComm(g, false)->AllGather(mine, full[g][i]));
    }
  }
  std::map<std::string, std::vector<NamedTensor>> files;
  for (const DeviceParam* d : trainable_) {
    const DeviceParamRegion& r = flat.RegionOf(*d);
    const size_t g = &r - regions.data();
    for (int i = 0; i < 2; ++i) {
      Tensor t(d->value.shape(), dt);
      std::memcpy(t.raw(), static_cast<const char*>(full[g][i].raw()) + (d->offset - r.begin) * es,
                  t.nbytes());
      files[i == 0 ? kExpAvg : kExpAvgSq].push_back({d->host->name, std::move(t)});
    }
  }
  return r_.opt->LoadState(files, "the device model's AdamW moments");
}

}  // namespace mt::train_internal
