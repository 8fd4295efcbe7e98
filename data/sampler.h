// data/sampler.h: training and validation samples from indexed datasets.
//
// A sample is a window of seq_len + 1 tokens at stride seq_len over a dataset's concatenated
// documents (EOD tokens between them): inputs are the first seq_len tokens, labels the last.
// A dataset of N tokens has (N - 1) / seq_len windows.
//
// Training order is a pure function of (seed, global sample index): blending picks the
// dataset, the dataset-local sample count gives the epoch, and a keyed bijection of the
// epoch's windows gives the window. Nothing depends on rank, thread or call order, so any
// data-parallel layout sees the same global batches, and a run resumed from a saved cursor
// continues exactly where it stopped. The trainer owns the cursor (samples consumed).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "data/indexed_dataset.h"

namespace mt::data {

// Windows of seq_len + 1 tokens at stride seq_len in num_tokens tokens.
inline int64_t NumWindows(int64_t num_tokens, int64_t seq_len) {
  return num_tokens > 1 ? (num_tokens - 1) / seq_len : 0;
}

// A keyed pseudo-random bijection of [0, n): a 6-round balanced Feistel network on the
// smallest even-bit power of two >= n, cycle-walked back into range. O(1) memory and random
// access, so an epoch of billions of windows costs nothing to shuffle.
class WindowPermutation {
 public:
  WindowPermutation(int64_t n, uint64_t key);
  int64_t operator()(int64_t i) const;
  int64_t size() const { return n_; }

 private:
  uint64_t Encrypt(uint64_t x) const;
  int64_t n_;
  uint64_t key_;
  int half_bits_;
  uint64_t half_mask_;
};

// One entry of a blend: Megatron's `--data-path w1 p1 w2 p2 ...`.
struct BlendSource {
  std::shared_ptr<const IndexedDataset> dataset;
  double weight = 1.0;
};

// Parses Megatron's data-path list: either one prefix, or weight/prefix pairs.
absl::StatusOr<std::vector<std::pair<double, std::string>>> ParseDataPath(
    const std::vector<std::string>& args);
// Opens each prefix of a parsed data path.
absl::StatusOr<std::vector<BlendSource>> OpenBlend(
    const std::vector<std::pair<double, std::string>>& weighted_prefixes);

// Where a global training sample comes from.
struct SampleOrigin {
  int dataset = 0;             // index into the blend
  int64_t dataset_sample = 0;  // how many samples this dataset gave before this one
  int64_t epoch = 0;           // dataset_sample / num_windows(dataset)
  int64_t window = 0;          // tokens [window * seq_len, window * seq_len + seq_len]
};

class TrainSampleSource {
 public:
  static absl::StatusOr<std::unique_ptr<TrainSampleSource>> Create(std::vector<BlendSource> sources,
                                                                   int64_t seq_len, uint64_t seed);

  // out[0, seq_len + 1) = the tokens of global sample `global_index`. Thread-safe.
  void Sample(int64_t global_index, int32_t* out) const;  // out: [seq_len + 1]
  SampleOrigin Locate(int64_t global_index) const;

  int64_t seq_len() const { return seq_len_; }
  uint64_t seed() const { return seed_; }
  int num_datasets() const { return static_cast<int>(sources_.size()); }
  const IndexedDataset& dataset(int i) const { return *sources_[i].dataset; }
  double weight(int i) const { return weights_[i]; }  // normalised to sum 1
  int64_t num_windows(int i) const { return windows_[i]; }

  // The checkpoint record of a cursor, with what the run's data order depends on.
  nlohmann::json SamplerState(int64_t cursor) const;
  // The cursor in `state`, or an error if it was saved for another seed, seq_len or data.
  absl::StatusOr<int64_t> RestoreCursor(const nlohmann::json& state) const;

 private:
  TrainSampleSource() = default;
  // Per-dataset sample counts before global sample block * kBlendBlock.
  std::vector<int64_t> CountsAtBlock(int64_t block) const;
  // Megatron's error-greedy choice for global sample i given the counts before it.
  int ChooseDataset(int64_t i, const std::vector<int64_t>& counts) const;

  static constexpr int64_t kBlendBlock = 1024;

  std::vector<BlendSource> sources_;
  std::vector<double> weights_;          // [num_datasets], sum 1
  std::vector<__int128> fixed_weights_;  // [num_datasets], weights_ * 2^40, rounded
  std::vector<int64_t> windows_;         // [num_datasets]
  int64_t seq_len_ = 0;
  uint64_t seed_ = 0;
  // Memo of the sequential blending recurrence: row b holds the per-dataset counts before
  // sample b * kBlendBlock, [blocks, num_datasets]. Grows on demand; guarded by mu_.
  mutable std::mutex mu_;
  mutable std::vector<int64_t> block_counts_;
};

// Which global samples each data-parallel rank takes in one optimizer step: rank r of D
// takes [cursor + r * G / D, cursor + (r + 1) * G / D). The union over ranks is the same
// G samples in the same order for every D, which is what makes DP layouts equivalent.
struct SampleRange {
  int64_t begin = 0;
  int64_t end = 0;  // exclusive
  int64_t size() const { return end - begin; }
};

struct BatchPlan {
  int64_t global_batch = 0;  // G: samples per optimizer step
  int dp_size = 1;           // D: data-parallel ranks

  // Fails unless G > 0, D > 0 and D divides G.
  static absl::StatusOr<BatchPlan> Make(int64_t global_batch, int dp_size);
  int64_t per_rank() const { return global_batch / dp_size; }
  SampleRange RankRange(int64_t cursor, int dp_rank) const;
  int64_t NextCursor(int64_t cursor) const { return cursor + global_batch; }
};

// Validation windows in order, no shuffle: window j is tokens [j * S, j * S + S].
class ValidationSource {
 public:
  static absl::StatusOr<std::unique_ptr<ValidationSource>> Create(
      std::shared_ptr<const IndexedDataset> dataset, int64_t seq_len);
  int64_t num_windows() const { return num_windows_; }
  int64_t seq_len() const { return seq_len_; }
  void Sample(int64_t j, int32_t* out) const;  // out: [seq_len + 1]
  const IndexedDataset& dataset() const { return *dataset_; }

 private:
  std::shared_ptr<const IndexedDataset> dataset_;
  int64_t seq_len_ = 0;
  int64_t num_windows_ = 0;
};

}  // namespace mt::data
