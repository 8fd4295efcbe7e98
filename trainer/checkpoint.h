// trainer/checkpoint.h: training checkpoints that are either whole or ignored.
//
// A checkpoint is a step directory `root/step-NNNNNNN/` that is also a Hugging Face model
// directory (config.json, model shards, model.safetensors.index.json) with the training
// state beside it: one `<name>.safetensors` per state file (e.g. AdamW moments under the
// parameters' names), train_state.json (step, tokens, RNG, sampler cursor, ...) and
// manifest.json (size and SHA-256 of every other file).
//
// Commit protocol (reliability.md §1, §5.1): everything is written into
// `root/.tmp-step-NNNNNNN-<pid>/` and fsync'd (files, then the directory); the rename to
// `step-NNNNNNN` is the commit; then the root is fsync'd, `root/latest` is replaced
// atomically, and only then are old steps (beyond keep_last) and dead writers' temporary
// directories deleted. Resume takes the newest step whose manifest verifies, so a crash at
// any point leaves either the new step or the previous one.
//
// One process (rank 0) writes a root, or several write shards of one step and rank 0
// commits (BeginCheckpoint below); the checkpoint is generic over what it saves.
// Test hook: MOETRAIN_CKPT_CRASH=mid-shard|before-rename|after-rename makes SaveCheckpoint
// SIGKILL itself at that phase.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "nlohmann/json.hpp"
#include "trainer/safetensors.h"

namespace mt {

struct CheckpointData {
  nlohmann::json config_json;      // HF config.json contents
  std::vector<NamedTensor> model;  // HF names, fp32 master weights
  // State file name (a plain name such as "optimizer-exp_avg") -> its tensors, any dtype.
  std::map<std::string, std::vector<NamedTensor>> state_files;
  nlohmann::json train_state;  // step, tokens, rng, sampler cursor, metrics...
  // Side files the step directory carries verbatim (e.g. the tokenizer, so that `generate`
  // needs nothing else): name in the step directory -> path. SaveCheckpoint copies each
  // source path in and lists it in the manifest with its SHA-256; LoadCheckpoint fills the
  // map with name -> path of the (verified) copy inside the step directory. Names are plain
  // file names that cannot collide with the checkpoint's own files (no ".safetensors" or
  // ".json" suffix).
  std::map<std::string, std::string> extra_files;
};

struct SaveOptions {
  int64_t keep_last = 3;                // committed steps kept (>= 1), the new one included
  DType model_dtype = DType::kF32;      // kF32 or kBF16 on disk; loads return fp32
  int64_t max_shard_bytes = 2LL << 30;  // model shard size limit
};

// "step-0000400"
std::string StepDirName(int64_t step);

// Streams `from` into a new file `to` (truncated), fsync'd; returns the copy's size and
// SHA-256. Not atomic: write into a directory that is renamed later, or rename afterwards.
absl::StatusOr<FileDigest> CopyFileDurably(const std::string& from, const std::string& to);

absl::Status SaveCheckpoint(const std::string& root, int64_t step, const CheckpointData& data,
                            const SaveOptions& opts);

// ---- A checkpoint written by several processes ----------------------------------------
// Each process writes the tensors it owns and one (rank 0) commits: the same step directory,
// manifest and commit protocol as SaveCheckpoint's, except that the model and every state
// file come as one file per writer, model-00003-of-00008.safetensors (listed in
// model.safetensors.index.json, so Hugging Face loads the directory as usual) and
// <state>-00003-of-00008.safetensors (listed in the manifest's "state_file_shards").
//   rank 0:       tmp = BeginCheckpoint(root, step), then tells the writers `tmp`
//   each writer:  shard i of n = WriteCheckpointShard(tmp, i, n, model, state_files, opts)
//   rank 0:       FinishCheckpoint(root, tmp, step, data, every shard, opts), where data
//                 holds config_json, train_state and extra_files (its model is ignored)
struct CheckpointShard {
  std::map<std::string, FileDigest> files;  // what this writer wrote
  std::string model_file;                   // "" when it holds no model tensor
  std::vector<std::string> model_tensors;   // in its model file, in order
  int64_t model_bytes = 0;
  std::map<std::string, std::string> state_file;                  // state name -> its file
  std::map<std::string, std::vector<std::string>> state_tensors;  // state name -> names

  nlohmann::json ToJson() const;
  static absl::StatusOr<CheckpointShard> FromJson(const nlohmann::json& j);
};
absl::StatusOr<std::string> BeginCheckpoint(const std::string& root, int64_t step);
absl::StatusOr<CheckpointShard> WriteCheckpointShard(
    const std::string& tmp_dir, int index, int count, const std::vector<NamedTensor>& model,
    const std::map<std::string, std::vector<NamedTensor>>& state_files, const SaveOptions& opts);
absl::Status FinishCheckpoint(const std::string& root, const std::string& tmp_dir, int64_t step,
                              const CheckpointData& data,
                              const std::vector<CheckpointShard>& shards, const SaveOptions& opts);
// Deletes a temporary directory of BeginCheckpoint whose save was abandoned.
void AbandonCheckpoint(const std::string& tmp_dir);

// Verifies the manifest (sizes and SHA-256 of every file) before reading anything, unless
// `verify` is false (the caller just verified it via FindResumeCheckpoint). Model tensors
// come back as fp32 in the order they were saved; state tensors in their saved dtype and
// order.
absl::StatusOr<CheckpointData> LoadCheckpoint(const std::string& step_dir, bool verify = true);
// The same, reading only the model and state tensors whose names `wanted` accepts (one rank
// of a multi-rank run takes its part; the files of other ranks' tensors are not read).
absl::StatusOr<CheckpointData> LoadCheckpoint(
    const std::string& step_dir, bool verify,
    const std::function<bool(const std::string&)>& wanted);

// OK if `step_dir`'s manifest.json exists, parses, and every file it lists has the
// recorded size and SHA-256; otherwise the reason ("manifest missing", ...).
absl::Status VerifyCheckpoint(const std::string& step_dir);

struct ResumeChoice {
  std::string step_dir;  // full path
  int64_t step = 0;
  // Newer candidates passed over and why: "step-0000400: manifest missing", and
  // uncommitted ".tmp-..." directories, which are never candidates.
  std::vector<std::string> skipped;
};

// The newest committed step under `root` whose manifest verifies. nullopt when `root` holds
// no step directories at all (a fresh run); an error listing every reason when step
// directories exist but none verifies, since silently restarting from scratch would
// discard a run. Never modifies `root`.
absl::StatusOr<std::optional<ResumeChoice>> FindResumeCheckpoint(const std::string& root);

}  // namespace mt
