#include "trainer/parallel_model.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "trainer/pipeline_runner.h"

namespace mt {

LayoutSpec LayoutOf(const Config& cfg, int64_t global_batch) {
  LayoutSpec s;
  s.pp = static_cast<int>(cfg.parallel.pp);
  s.ep = static_cast<int>(cfg.parallel.ep);
  s.dp = static_cast<int>(cfg.parallel.dp);
  s.ranks_per_node = static_cast<int>(cfg.parallel.ranks_per_node);
  s.num_layers = static_cast<int>(cfg.model.num_hidden_layers);
  s.num_experts = static_cast<int>(cfg.model.n_routed_experts);
  s.n_group = static_cast<int>(cfg.model.n_group);
  s.dualpipe = cfg.parallel.schedule == "dualpipe";
  s.num_micro_batches =
      static_cast<int>(global_batch / (cfg.training.micro_batch_size * cfg.parallel.dp));
  return s;
}

absl::StatusOr<std::vector<int32_t>> LocalBatchTokens(const data::TrainSampleSource& samples,
                                                      int64_t cursor, int64_t global_batch, int dp,
                                                      int dp_rank) {
  const int64_t S = samples.seq_len();
  ASSIGN_OR_RETURN(data::BatchPlan plan, data::BatchPlan::Make(global_batch, dp));
  const data::SampleRange range = plan.RankRange(cursor, dp_rank);
  std::vector<int32_t> tokens(range.size() * (S + 1));
  for (int64_t i = 0; i < range.size(); ++i)
    samples.Sample(range.begin + i, tokens.data() + i * (S + 1));
  return tokens;
}

ParallelModel::ParallelModel(const Config& cfg, const Topology& topo, ProcessGroups* groups)
    : cfg_(cfg), m_(cfg.model), topo_(topo), groups_(groups) {}

ParallelModel::~ParallelModel() = default;

absl::StatusOr<std::unique_ptr<ParallelModel>> ParallelModel::Create(const Config& cfg,
                                                                     Precision precision,
                                                                     const Topology& topo,
                                                                     ProcessGroups* groups) {
  std::unique_ptr<ParallelModel> pm(new ParallelModel(cfg, topo, groups));
  const ModelConfig& m = cfg.model;
  ASSIGN_OR_RETURN(pm->kind_, ParseScheduleKind(cfg.parallel.schedule));
  pm->num_chunks_ = pm->kind_ == ScheduleKind::kDualPipe ? 2 : 1;
  pm->precision_ = std::make_unique<PrecisionPolicy>(precision);
  pm->params_ = std::make_unique<ParamStore>(cfg.training.seed, m.initializer_range);
  pm->params_->set_precision(pm->precision_.get());
  if (topo.ep() > 1) {
    ExpertDispatcher::Options o;
    o.num_experts = m.n_routed_experts;
    o.hidden = m.hidden_size;
    o.topk = m.num_experts_per_tok;
    o.ep_ranks_per_node = std::min(topo.ep(), topo.ranks_per_node());
    ASSIGN_OR_RETURN(ExpertDispatcher d, ExpertDispatcher::Create(groups->ep.get(), o));
    pm->dispatcher_ = std::make_unique<ExpertDispatcher>(std::move(d));
  }
  // This rank's stages: chunk c runs stage StageOf(rank, c) (DualPipe mirrors the second).
  const int pp = topo.pp(), rank = topo.coords().pp_stage;
  auto stage_of = [&](int r, int chunk) { return chunk == 0 ? r : pp - 1 - r; };
  for (int c = 0; c < pm->num_chunks_; ++c)
    pm->chunks_.push_back(std::make_unique<ModelChunk>(
        *pm->params_, m, MakeStageSpec(m, stage_of(rank, c), pp), pm->dispatcher_.get()));
  int num_moe = 0;
  for (int64_t l = 0; l < m.num_hidden_layers + m.num_nextn_predict_layers; ++l)
    num_moe += m.IsMoeLayer(l);
  pm->moe_by_index_.assign(num_moe, nullptr);
  for (const auto& c : pm->chunks_)
    for (size_t i = 0; i < c->moe_layers().size(); ++i)
      pm->moe_by_index_[c->moe_indices()[i]] = c->moe_layers()[i];

  // Which pipeline ranks hold each parameter: those running a stage that holds it.
  std::vector<Param*> by_name;
  for (const auto& p : pm->params_->all()) by_name.push_back(p.get());
  std::sort(by_name.begin(), by_name.end(),
            [](const Param* a, const Param* b) { return a->name < b->name; });
  std::map<int, std::vector<Param*>> shared;
  for (Param* p : by_name) {
    std::set<int> holders;
    for (int s : StagesHoldingParam(m, pp, p->name))
      for (int c = 0; c < pm->num_chunks_; ++c) holders.insert(c == 0 ? s : pp - 1 - s);
    MT_CHECK(holders.count(rank) == 1, "rank holds ", p->name, " against the stage plan");
    MT_CHECK(holders.size() <= 2, p->name, " is held by more than two pipeline ranks");
    pm->counts_in_norm_[p] = *holders.begin() == rank;
    // Router biases are state, not gradients: every copy makes the same update from the
    // same global loads.
    if (!p->trainable) continue;
    for (int h : holders)
      if (h != rank) shared[h].push_back(p);
  }
  pm->replicated_.assign(shared.begin(), shared.end());
  return pm;
}

bool ParallelModel::CountsInNorm(const Param& p) const { return counts_in_norm_.at(&p); }

bool ParallelModel::WritesToCheckpoint(const Param& p) const {
  const RankCoords c = topo_.coords();
  return CountsInNorm(p) && (p.expert ? c.expert_dp_rank == 0 : c.dp_rank == 0);
}

ModelChunk* ParallelModel::whole_model() {
  if (chunks_.size() != 1 || !chunks_[0]->stage().first() || !chunks_[0]->stage().last() ||
      dispatcher_)
    return nullptr;
  return chunks_[0].get();
}

absl::StatusOr<const PipelineSchedule*> ParallelModel::Schedule(int num_micro_batches) {
  auto it = schedules_.find(num_micro_batches);
  if (it == schedules_.end()) {
    ASSIGN_OR_RETURN(PipelineSchedule s,
                     MakePipelineSchedule(kind_, topo_.pp(), num_micro_batches));
    it = schedules_.emplace(num_micro_batches, std::move(s)).first;
  }
  return &it->second;
}

absl::Status ParallelModel::SumReplicatedGradients() {
  Communicator& pp = *groups_->pp;
  for (auto& [peer, params] : replicated_) {
    int64_t n = 0;
    for (Param* p : params) n += p->grad.numel();
    Tensor mine({n}, kRealDType), theirs({n}, kRealDType);
    int64_t o = 0;
    for (Param* p : params) {
      std::copy_n(p->grad.data<Real>(), p->grad.numel(), mine.data<Real>() + o);
      o += p->grad.numel();
    }
    ASSIGN_OR_RETURN(auto req, pp.ISend(mine, peer, kPipelineReplicaTag));
    RETURN_IF_ERROR(pp.Recv(theirs, peer, kPipelineReplicaTag));
    RETURN_IF_ERROR(req->Wait());
    // a + b == b + a in IEEE arithmetic: both copies end up bit-identical.
    o = 0;
    for (Param* p : params) {
      Real* g = p->grad.data<Real>();
      for (int64_t i = 0; i < p->grad.numel(); ++i) g[i] += theirs.data<Real>()[o + i];
      o += p->grad.numel();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GlobalBatchResult> ParallelModel::ForwardBackward(
    const data::TrainSampleSource& samples, int64_t cursor, int64_t global_batch,
    int64_t micro_batch, const ObjectiveWeights& w) {
  const int64_t S = samples.seq_len(), E = m_.n_routed_experts;
  ASSIGN_OR_RETURN(
      const std::vector<int32_t> tokens,  // [n_local * mb, S + 1]
      LocalBatchTokens(samples, cursor, global_batch, topo_.dp(), topo_.coords().dp_rank));
  const int64_t n_local = static_cast<int64_t>(tokens.size()) / (S + 1) / micro_batch;
  const int64_t n_global = global_batch / micro_batch;
  ASSIGN_OR_RETURN(const PipelineSchedule* schedule, Schedule(static_cast<int>(n_local)));
  params_->ZeroGrads();
  PipelineRun run;
  run.schedule = schedule;
  run.rank = topo_.coords().pp_stage;
  for (auto& c : chunks_) run.chunks.push_back(c.get());
  run.pp = groups_->pp.get();
  run.batch = [&](int i) {
    return MicroBatch{tokens.data() + i * micro_batch * (S + 1), micro_batch, S};
  };
  run.weights = w;
  run.grad_scale = 1.0 / static_cast<double>(n_global);
  run.hidden = m_.hidden_size;

  GlobalBatchResult out;
  out.losses.mtp.assign(m_.num_nextn_predict_layers, 0.0);
  out.loads.assign(moe_by_index_.size(), std::vector<int64_t>(E, 0));
  RETURN_IF_ERROR(RunPipeline(run, 1.0 / static_cast<double>(n_global), &out.losses, &out.loads));
  RETURN_IF_ERROR(SumReplicatedGradients());

  // Global figures: every rank adds what its stages computed for its samples.
  if (topo_.world_size() > 1) RETURN_IF_ERROR(SumOverRanks(*groups_->world, &out));
  return out;
}

absl::Status SumOverRanks(Communicator& world, GlobalBatchResult* out) {
  Losses& l = out->losses;
  std::vector<double> sums = {l.main, l.balance};
  sums.insert(sums.end(), l.mtp.begin(), l.mtp.end());
  RETURN_IF_ERROR(world.AllReduce(sums, ReduceOp::kSum));
  l.main = sums[0];
  l.balance = sums[1];
  for (size_t k = 0; k < l.mtp.size(); ++k) l.mtp[k] = sums[2 + k];
  std::vector<int64_t> flat;
  for (const auto& load : out->loads) flat.insert(flat.end(), load.begin(), load.end());
  RETURN_IF_ERROR(world.AllReduce(flat, ReduceOp::kSum));
  auto it = flat.begin();
  for (auto& load : out->loads) {
    std::copy_n(it, load.size(), load.begin());
    it += static_cast<std::ptrdiff_t>(load.size());
  }
  return absl::OkStatus();
}

absl::StatusOr<Losses> ParallelModel::Evaluate(const data::ValidationSource& val, int64_t windows,
                                               int64_t micro_batch, const ObjectiveWeights& w) {
  const int64_t S = val.seq_len(), H = m_.hidden_size;
  const int dp = topo_.dp(), dp_rank = topo_.coords().dp_rank;
  const int pp = topo_.pp(), stage = topo_.coords().pp_stage;
  ModelChunk& chunk = *chunks_[0];  // stage = pp rank: forwards flow 0 -> pp-1
  const int64_t batches = (windows + micro_batch - 1) / micro_batch;
  // Every DP rank runs the same number of forwards (a rank with no batch left repeats
  // batch 0 and drops it): the experts' all-to-all needs the whole EP group every time.
  const int64_t rounds = (batches + dp - 1) / dp;
  std::vector<double> sums(3 + m_.num_nextn_predict_layers, 0.0);  // main, balance, n, mtp
  std::vector<int32_t> tokens(micro_batch * (S + 1));
  for (int64_t r = 0; r < rounds; ++r) {
    const int64_t batch = r * dp + dp_rank;
    const bool real = batch < batches;
    const int64_t j0 = real ? batch * micro_batch : 0;
    const int64_t B = std::min(micro_batch, windows - j0);
    for (int64_t b = 0; b < B; ++b) val.Sample(j0 + b, tokens.data() + b * (S + 1));
    Tensor x;
    if (stage > 0) {
      x = Tensor({B * S, H}, kRealDType);
      RETURN_IF_ERROR(groups_->pp->Recv(x, stage - 1, kPipelineEvalTag));
    }
    Losses l;
    Tensor y = chunk.Forward(-1, MicroBatch{tokens.data(), B, S}, x, w, 0.0, /*backward=*/false, &l,
                             nullptr);
    if (stage + 1 < pp) RETURN_IF_ERROR(groups_->pp->Send(y, stage + 1, kPipelineEvalTag));
    if (!real) continue;
    sums[1] += l.balance * B;
    if (chunk.stage().last()) {
      sums[0] += l.main * B;
      sums[2] += B;
      for (size_t k = 0; k < l.mtp.size(); ++k) sums[3 + k] += l.mtp[k] * B;
    }
  }
  if (topo_.world_size() > 1) RETURN_IF_ERROR(groups_->world->AllReduce(sums, ReduceOp::kSum));
  Losses out;
  const double n = std::max(sums[2], 1.0);
  out.main = sums[0] / n;
  out.balance = sums[1] / n;
  for (int64_t k = 0; k < m_.num_nextn_predict_layers; ++k) out.mtp.push_back(sums[3 + k] / n);
  return out;
}

int64_t ParallelModel::MeasureActivationBytes(int64_t B, int64_t S) {
  ModelChunk& chunk = *chunks_[0];
  const std::vector<int32_t> tokens(static_cast<size_t>(B * (S + 1)), 0);
  Tensor x({B * S, m_.hidden_size}, kRealDType);
  x.Zero();
  Losses l;
  chunk.Forward(-1, MicroBatch{tokens.data(), B, S}, x, ObjectiveWeights{}, 0.0,
                /*backward=*/false, &l, nullptr);
  return chunk.activation_bytes();
}

}  // namespace mt
