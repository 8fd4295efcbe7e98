// trainer/train_run.cc: opening a run's data, restoring it (init_from, resume) and saving
// its checkpoints.
#include "trainer/train_run.h"

#include <chrono>
#include <cstdio>
#include <map>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "data/tokenizer_factory.h"
#include "trainer/checkpoint.h"
#include "trainer/hf_import.h"
#include "trainer/model_io.h"
#include "trainer/rank_strings.h"
#include "trainer/tokenizer_files.h"
#include "trainer/trainer.h"

namespace mt::train_internal {
namespace {

// Bytes of every tensor a checkpoint holds in memory (for the throughput lines).
size_t TensorBytes(const CheckpointData& ck) {
  size_t bytes = 0;
  for (const auto& t : ck.model) bytes += t.tensor.nbytes();
  for (const auto& [name, tensors] : ck.state_files)
    for (const auto& t : tensors) bytes += t.tensor.nbytes();
  return bytes;
}

using Json = nlohmann::json;

// The state file holding the fp32 master weights when checkpoint.dtype is bf16: the bf16
// model shards alone would round the weights and a resumed run would diverge.
constexpr char kMasterWeights[] = "master_weights";
// Where the tokenizer goes in a step directory (and in an export): `generate` looks there.

// The step directory to resume from ("" for a fresh start) and whether its manifest still
// needs verifying.
absl::StatusOr<std::pair<std::string, bool>> ResumeDir(const Config& c, bool print) {
  if (c.checkpoint.resume == "none") return std::pair<std::string, bool>("", false);
  if (c.checkpoint.resume != "auto") return std::pair<std::string, bool>(c.checkpoint.resume, true);
  if (c.checkpoint.dir.empty())
    return absl::InvalidArgumentError(
        absl::StrCat(c.source, ": checkpoint.resume is auto but checkpoint.dir is not set"));
  ASSIGN_OR_RETURN(auto choice, FindResumeCheckpoint(c.checkpoint.dir));
  if (!choice) {
    if (print)
      std::printf("[moetrain] resume auto: no checkpoint in %s, starting fresh\n",
                  c.checkpoint.dir.c_str());
    return std::pair<std::string, bool>("", false);
  }
  if (!print) return std::pair<std::string, bool>(choice->step_dir, false);
  for (const auto& why : choice->skipped)
    std::printf("[moetrain] resume: skipped %s\n", why.c_str());
  std::printf(
      "[moetrain] resume: taking %s, step %lld (the newest committed step whose manifest "
      "verifies)\n",
      choice->step_dir.c_str(), static_cast<long long>(choice->step));
  // FindResumeCheckpoint has just hashed every file of it.
  return std::pair<std::string, bool>(choice->step_dir, false);
}

}  // namespace

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

absl::Status OpenData(Run& r) {
  const Config& c = r.cfg;
  if (c.data.train_path.empty())
    return absl::InvalidArgumentError(absl::StrCat(c.source, ": data.train_path is not set"));
  std::vector<std::pair<double, std::string>> weighted;
  for (size_t i = 0; i < c.data.train_path.size(); ++i)
    weighted.push_back(
        {i < c.data.train_weights.size() ? c.data.train_weights[i] : 1.0, c.data.train_path[i]});
  ASSIGN_OR_RETURN(std::vector<data::BlendSource> blend, data::OpenBlend(weighted));
  for (const auto& b : blend) RETURN_IF_ERROR(b.dataset->CheckVocab(c.model.vocab_size));
  ASSIGN_OR_RETURN(r.train, data::TrainSampleSource::Create(std::move(blend), c.training.seq_len,
                                                            c.training.seed));
  if (!c.data.val_path.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<data::IndexedDataset> vds,
                     data::IndexedDataset::Open(c.data.val_path));
    RETURN_IF_ERROR(vds->CheckVocab(c.model.vocab_size));
    ASSIGN_OR_RETURN(r.val, data::ValidationSource::Create(
                                std::shared_ptr<const data::IndexedDataset>(std::move(vds)),
                                c.training.seq_len));
  }
  // The run's tokenizer: data.tokenizer, else the one a fine-tune's --init-from directory
  // carries (a Hub model directory's tokenizer.json).
  r.tokenizer_path = c.data.tokenizer;
  if (r.tokenizer_path.empty() && !c.training.init_from.empty())
    r.tokenizer_path = TokenizerInDirectory(c.training.init_from).value_or("");
  if (!r.tokenizer_path.empty()) {
    ASSIGN_OR_RETURN(r.tokenizer, data::LoadTokenizer(r.tokenizer_path));
    if (r.tokenizer->vocab_size() > c.model.vocab_size)
      return absl::InvalidArgumentError(
          absl::StrCat(r.tokenizer_path, ": tokenizer has ", r.tokenizer->vocab_size(),
                       " tokens but model.vocab_size is ", c.model.vocab_size));
  }
  return absl::OkStatus();
}

// The step directory to resume from ("" for a fresh start) and whether its manifest still

absl::Status Restore(Run& r) {
  const Config& c = r.cfg;
  ParallelModel& pm = *r.model;
  const bool whole = pm.topology().world_size() == 1;
  if (!c.training.init_from.empty()) {
    ASSIGN_OR_RETURN(HfModelDir hf,
                     LoadHfModelDir(c.training.init_from, [&](const std::string& name) {
                       return pm.params().Find(name) != nullptr || IsMtpCopyName(c.model, name);
                     }));
    RETURN_IF_ERROR(LoadParams(pm.params(), c.model, hf.tensors, c.training.init_from, whole));
    if (r.rank0)
      std::printf("[moetrain] initialised weights from %s\n", c.training.init_from.c_str());
  }
  // Rank 0 chooses and verifies the step (hashing its files once, not once per rank) and
  // tells the others; every rank then reads only the tensors it holds.
  Communicator& world = *pm.groups().world;
  std::string step_dir;
  absl::Status chosen = absl::OkStatus();
  if (r.rank0) {
    auto resume = ResumeDir(c, /*print=*/true);
    chosen = resume.status();
    if (resume.ok()) {
      step_dir = resume->first;
      if (resume->second) chosen = Annotate(VerifyCheckpoint(step_dir), step_dir);
    }
  }
  ASSIGN_OR_RETURN(std::string told,
                   BroadcastString(world, chosen.ok() ? step_dir : "!" + chosen.ToString(), 0));
  if (!told.empty() && told[0] == '!')
    return r.rank0 ? chosen
                   : absl::AbortedError(
                         absl::StrCat("rank 0 could not pick the checkpoint: ", told.substr(1)));
  step_dir = told;
  if (step_dir.empty()) return absl::OkStatus();
  const auto load_start = std::chrono::steady_clock::now();
  ParamStore& ps = pm.params();
  ASSIGN_OR_RETURN(CheckpointData ck,
                   LoadCheckpoint(step_dir, /*verify=*/false, [&](const std::string& name) {
                     return whole || ps.Find(name) != nullptr;
                   }));
  const size_t bytes = TensorBytes(ck);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  if (r.rank0)
    std::printf("[moetrain] loaded %s: %.1f MB of tensors in %.3fs (%.0f MB/s)\n", step_dir.c_str(),
                bytes / 1e6, load_s, bytes / 1e6 / load_s);
  RETURN_IF_ERROR(LoadParams(pm.params(), c.model, ck.model, step_dir, whole));
  if (auto it = ck.state_files.find(kMasterWeights); it != ck.state_files.end())
    RETURN_IF_ERROR(
        LoadParams(pm.params(), c.model, it->second, step_dir + " (master weights)", whole));
  RETURN_IF_ERROR(r.opt->LoadState(ck.state_files, step_dir));
  const Json& ts = ck.train_state;
  try {
    r.step = ts.at("step").get<int64_t>();
    r.opt->set_step(ts.at("optimizer_step").get<int64_t>());
    r.consecutive_skips = ts.at("consecutive_skips").get<int64_t>();
    r.skipped_total = ts.at("skipped_steps").get<int64_t>();
    if (ts.contains("metrics_history")) r.history = ts.at("metrics_history");
    if (ts.contains("metrics_interval")) r.interval.FromJson(ts.at("metrics_interval"));
    if (r.interval.mtp.size() != static_cast<size_t>(c.model.num_nextn_predict_layers))
      return absl::InvalidArgumentError(absl::StrCat(
          step_dir, "/train_state.json: metrics_interval.mtp has ", r.interval.mtp.size(),
          " entries, the model has ", c.model.num_nextn_predict_layers, " MTP modules"));
    ASSIGN_OR_RETURN(r.cursor, r.train->RestoreCursor(ts.at("sampler")));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(step_dir, "/train_state.json: ", e.what()));
  }
  if (r.rank0)
    std::printf("[moetrain] resumed at step %lld (%lld samples consumed)\n",
                static_cast<long long>(r.step), static_cast<long long>(r.cursor));
  return absl::OkStatus();
}

namespace {

// The train_state.json of the run's current step.
Json TrainState(const Run& r) {
  const Config& c = r.cfg;
  return {{"step", r.step},
          {"tokens", r.Tokens()},
          {"optimizer_step", r.opt->step()},
          {"consecutive_skips", r.consecutive_skips},
          {"skipped_steps", r.skipped_total},
          {"sampler", r.train->SamplerState(r.cursor)},
          {"rng", {{"seed", c.training.seed}, {"generator", "counter-based (seed, name, index)"}}},
          {"layout",
           {{"pp", c.parallel.pp},
            {"ep", c.parallel.ep},
            {"dp", c.parallel.dp},
            {"schedule", c.parallel.schedule}}},
          // Informational: the schedules are functions of the consumed tokens above.
          {"schedules",
           {{"lr", c.optimizer.lr.Value(r.Tokens())},
            {"mtp_lambda", c.training.mtp_lambda.Value(r.Tokens())},
            {"bias_update_speed", c.training.bias_update_speed.Value(r.Tokens())},
            {"global_batch", GlobalBatchAt(c, r.Tokens())}}},
          {"metrics_history", r.history},
          {"metrics_interval", r.interval.ToJson()},
          {"config_source", c.source}};
}

// Every rank writes its shard into rank 0's temporary directory; rank 0 commits. Each
// step is collective, and a failure anywhere reaches every rank, so none waits forever.
absl::Status SaveShards(Run& r, const CheckpointData& meta, const CheckpointData& mine,
                        const SaveOptions& opts) {
  Communicator& world = *r.model->groups().world;
  const std::string& root = r.cfg.checkpoint.dir;
  std::string tmp;
  absl::Status begun = absl::OkStatus();
  if (r.rank0) {
    auto t = BeginCheckpoint(root, r.step);
    if (t.ok()) tmp = *t;
    begun = t.status();
  }
  ASSIGN_OR_RETURN(tmp, BroadcastString(world, tmp, 0));
  if (tmp.empty())
    return r.rank0 ? begun
                   : absl::AbortedError(absl::StrCat(
                         "rank 0 could not start the checkpoint of step ", r.step, " in ", root));
  // Writers are the ranks that own something; they number their files in rank order.
  std::vector<int32_t> writes(world.size(), 0);
  writes[world.rank()] = mine.model.empty() && mine.state_files.empty() ? 0 : 1;
  RETURN_IF_ERROR(world.AllReduce(writes, ReduceOp::kSum));
  int index = 0, count = 0;
  for (int i = 0; i < world.size(); ++i) {
    if (i < world.rank()) index += writes[i];
    count += writes[i];
  }
  Json record = Json::object();
  if (writes[world.rank()]) {
    auto shard = WriteCheckpointShard(tmp, index, count, mine.model, mine.state_files, opts);
    record =
        shard.ok()
            ? shard->ToJson()
            : Json{{"error", absl::StrCat("rank ", world.rank(), ": ", shard.status().ToString())}};
  }
  ASSIGN_OR_RETURN(std::vector<std::string> records, GatherStrings(world, record.dump()));
  absl::Status done = absl::OkStatus();
  if (r.rank0) {
    std::vector<CheckpointShard> shards;
    for (const std::string& text : records) {
      const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("error")) {
        done = absl::InternalError(j["error"].get<std::string>());
        break;
      }
      if (j.is_object() && j.empty()) continue;  // a rank that owns nothing
      auto shard = CheckpointShard::FromJson(j);
      if (!shard.ok()) {
        done = shard.status();
        break;
      }
      shards.push_back(*std::move(shard));
    }
    if (done.ok())
      done = FinishCheckpoint(root, tmp, r.step, meta, shards, opts);
    else
      AbandonCheckpoint(tmp);
  }
  std::vector<int32_t> ok = {done.ok() ? 1 : 0};
  RETURN_IF_ERROR(world.Broadcast(ok, 0));
  if (!r.rank0 && !ok[0])
    return absl::AbortedError(
        absl::StrCat("rank 0 failed to commit the checkpoint of step ", r.step, " in ", root));
  return done;
}

}  // namespace

absl::Status Save(Run& r) {
  const Config& c = r.cfg;
  ParallelModel& pm = *r.model;
  const auto t0 = Clock::now();
  // What this rank owns: its copy of each parameter it writes, and their moments.
  CheckpointData mine;
  std::unordered_set<std::string> owned;
  for (const auto& p : pm.params().all())
    if (pm.WritesToCheckpoint(*p)) {
      owned.insert(p->name);
      mine.model.push_back({p->name, p->value.To(DType::kF32)});
      if (c.checkpoint.dtype == "bf16")
        mine.state_files[kMasterWeights].push_back({p->name, p->value});
    }
  AddMtpCopies(c.model, &mine.model);
  ASSIGN_OR_RETURN(auto state, r.opt->GatherState());  // collective over the DP groups
  for (auto& [file, tensors] : state)
    for (auto& t : tensors)
      if (owned.count(t.name)) mine.state_files[file].push_back(std::move(t));

  CheckpointData meta;  // what only rank 0 writes
  if (r.rank0) {
    meta.config_json = ModelConfigToHfJson(c.model);
    if (!r.tokenizer_path.empty()) meta.extra_files = TokenizerFiles(r.tokenizer_path);
    meta.train_state = TrainState(r);
  }
  SaveOptions opts;
  opts.keep_last = c.checkpoint.keep_last;
  opts.model_dtype = c.checkpoint.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  const size_t bytes = TensorBytes(mine);
  if (pm.topology().world_size() == 1) {
    mine.config_json = std::move(meta.config_json);
    mine.extra_files = std::move(meta.extra_files);
    mine.train_state = std::move(meta.train_state);
    RETURN_IF_ERROR(SaveCheckpoint(c.checkpoint.dir, r.step, mine, opts));
  } else {
    RETURN_IF_ERROR(SaveShards(r, meta, mine, opts));
  }
  const double seconds = Seconds(t0, Clock::now());
  if (r.rank0)
    std::printf("[moetrain] checkpoint %s/%s written: %.1f MB of tensors%s in %.3fs (%.0f MB/s)\n",
                c.checkpoint.dir.c_str(), StepDirName(r.step).c_str(), bytes / 1e6,
                pm.topology().world_size() > 1 ? " on rank 0" : "", seconds, bytes / 1e6 / seconds);
  return absl::OkStatus();
}
}  // namespace mt::train_internal
