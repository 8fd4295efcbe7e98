// data/sampler.cc: keyed window permutations, Megatron-style blending, batch sharding.
#include "data/sampler.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt::data {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The permutation key of one dataset's epoch: global identities only, never rank.
uint64_t EpochKey(uint64_t seed, int dataset, int64_t epoch) {
  return SplitMix64(SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(dataset)) ^
                    static_cast<uint64_t>(epoch));
}

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

// ---- WindowPermutation ----

WindowPermutation::WindowPermutation(int64_t n, uint64_t key) : n_(n), key_(key) {
  MT_CHECK(n >= 1, "permutation of ", n, " elements");
  int bits = 2;
  while (bits < 62 && (int64_t{1} << bits) < n) bits += 2;
  half_bits_ = bits / 2;
  half_mask_ = (uint64_t{1} << half_bits_) - 1;
}

uint64_t WindowPermutation::Encrypt(uint64_t x) const {
  uint64_t left = x >> half_bits_, right = x & half_mask_;
  for (uint64_t round = 0; round < 6; ++round) {
    const uint64_t f = SplitMix64(key_ ^ SplitMix64((round << 58) ^ right)) & half_mask_;
    const uint64_t next = left ^ f;
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

int64_t WindowPermutation::operator()(int64_t i) const {
  MT_CHECK(i >= 0 && i < n_, "permutation index ", i, " of ", n_);
  // Cycle walking: the Feistel domain is < 4n, so this takes under 4 steps on average and
  // stays a bijection of [0, n).
  uint64_t x = static_cast<uint64_t>(i);
  do {
    x = Encrypt(x);
  } while (x >= static_cast<uint64_t>(n_));
  return static_cast<int64_t>(x);
}

// ---- Data path ----

absl::StatusOr<std::vector<std::pair<double, std::string>>> ParseDataPath(
    const std::vector<std::string>& args) {
  std::vector<std::pair<double, std::string>> out;
  if (args.size() == 1) {
    out.emplace_back(1.0, args[0]);
    return out;
  }
  if (args.empty() || args.size() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data path: expected one prefix or weight/prefix pairs, got ", args.size(), " items"));
  }
  for (size_t i = 0; i < args.size(); i += 2) {
    double w;
    if (!absl::SimpleAtod(args[i], &w) || !std::isfinite(w) || w <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("data path: weight \"", args[i], "\" before ",
                                                     args[i + 1], " is not a positive number"));
    }
    out.emplace_back(w, args[i + 1]);
  }
  return out;
}

absl::StatusOr<std::vector<BlendSource>> OpenBlend(
    const std::vector<std::pair<double, std::string>>& weighted_prefixes) {
  std::vector<BlendSource> out;
  for (const auto& [w, prefix] : weighted_prefixes) {
    ASSIGN_OR_RETURN(std::unique_ptr<IndexedDataset> ds, IndexedDataset::Open(prefix));
    out.push_back({std::shared_ptr<const IndexedDataset>(std::move(ds)), w});
  }
  return out;
}

// ---- TrainSampleSource ----

absl::StatusOr<std::unique_ptr<TrainSampleSource>> TrainSampleSource::Create(
    std::vector<BlendSource> sources, int64_t seq_len, uint64_t seed) {
  if (seq_len < 1) return absl::InvalidArgumentError(absl::StrCat("seq_len ", seq_len, " < 1"));
  if (sources.empty()) return absl::InvalidArgumentError("no training datasets given");
  std::unique_ptr<TrainSampleSource> src(new TrainSampleSource());
  double total = 0;
  for (const BlendSource& s : sources) {
    MT_CHECK(s.dataset != nullptr, "null dataset in blend");
    if (!std::isfinite(s.weight) || s.weight <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(s.dataset->prefix(), ": blend weight ", s.weight, " is not positive"));
    }
    const int64_t windows = NumWindows(s.dataset->num_tokens(), seq_len);
    if (windows < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          s.dataset->prefix(), ": ", s.dataset->num_tokens(), " tokens hold no window of ",
          seq_len + 1, " tokens (seq_len ", seq_len, " + 1)"));
    }
    src->windows_.push_back(windows);
    total += s.weight;
  }
  for (const BlendSource& s : sources) {
    src->weights_.push_back(s.weight / total);
    // Fixed point keeps the greedy's comparisons exact on every machine (a fused
    // multiply-add on one CPU and not another could otherwise flip a near tie).
    src->fixed_weights_.push_back(static_cast<__int128>(std::llround(s.weight / total * 0x1p40)));
  }
  src->sources_ = std::move(sources);
  src->seq_len_ = seq_len;
  src->seed_ = seed;
  src->block_counts_.assign(src->sources_.size(), 0);
  return src;
}

int TrainSampleSource::ChooseDataset(int64_t i, const std::vector<int64_t>& counts) const {
  // Megatron's build_blending_indices: the dataset furthest behind its target share
  // weight * max(i, 1) gets the sample; ties go to the lowest index.
  const __int128 x = std::max<int64_t>(i, 1);
  int best = 0;
  __int128 best_error = fixed_weights_[0] * x - (static_cast<__int128>(counts[0]) << 40);
  for (size_t d = 1; d < counts.size(); ++d) {
    const __int128 error = fixed_weights_[d] * x - (static_cast<__int128>(counts[d]) << 40);
    if (error > best_error) {
      best_error = error;
      best = static_cast<int>(d);
    }
  }
  return best;
}

std::vector<int64_t> TrainSampleSource::CountsAtBlock(int64_t block) const {
  const size_t n = sources_.size();
  std::lock_guard<std::mutex> lock(mu_);
  while (static_cast<int64_t>(block_counts_.size() / n) <= block) {
    std::vector<int64_t> counts(block_counts_.end() - n, block_counts_.end());
    const int64_t start = static_cast<int64_t>(block_counts_.size() / n - 1) * kBlendBlock;
    for (int64_t i = start; i < start + kBlendBlock; ++i) ++counts[ChooseDataset(i, counts)];
    block_counts_.insert(block_counts_.end(), counts.begin(), counts.end());
  }
  return std::vector<int64_t>(block_counts_.begin() + block * n,
                              block_counts_.begin() + (block + 1) * n);
}

SampleOrigin TrainSampleSource::Locate(int64_t global_index) const {
  MT_CHECK(global_index >= 0, "sample index ", global_index);
  SampleOrigin o;
  if (sources_.size() == 1) {
    o.dataset_sample = global_index;
  } else {
    const int64_t block = global_index / kBlendBlock;
    std::vector<int64_t> counts = CountsAtBlock(block);
    for (int64_t i = block * kBlendBlock; i < global_index; ++i) ++counts[ChooseDataset(i, counts)];
    o.dataset = ChooseDataset(global_index, counts);
    o.dataset_sample = counts[o.dataset];
  }
  const int64_t windows = windows_[o.dataset];
  o.epoch = o.dataset_sample / windows;
  const WindowPermutation perm(windows, EpochKey(seed_, o.dataset, o.epoch));
  o.window = perm(o.dataset_sample % windows);
  return o;
}

void TrainSampleSource::Sample(int64_t global_index, int32_t* out) const {
  const SampleOrigin o = Locate(global_index);
  sources_[o.dataset].dataset->ReadTokens(o.window * seq_len_, seq_len_ + 1, out);
}

nlohmann::json TrainSampleSource::SamplerState(int64_t cursor) const {
  nlohmann::json datasets = nlohmann::json::array();
  for (size_t d = 0; d < sources_.size(); ++d) {
    const IndexedDataset& ds = *sources_[d].dataset;
    datasets.push_back({{"prefix", ds.prefix()},
                        {"weight", weights_[d]},
                        {"num_tokens", ds.num_tokens()},
                        {"num_documents", ds.num_documents()},
                        {"fingerprint", Hex64(ds.Fingerprint())}});
  }
  return {{"cursor", cursor}, {"seed", seed_}, {"seq_len", seq_len_}, {"datasets", datasets}};
}

absl::StatusOr<int64_t> TrainSampleSource::RestoreCursor(const nlohmann::json& state) const {
  auto bad = [](auto&&... parts) {
    return absl::FailedPreconditionError(absl::StrCat("sampler state: ", parts...));
  };
  try {
    const int64_t cursor = state.at("cursor").get<int64_t>();
    const uint64_t seed = state.at("seed").get<uint64_t>();
    const int64_t seq_len = state.at("seq_len").get<int64_t>();
    const nlohmann::json& datasets = state.at("datasets");
    if (cursor < 0) return bad("cursor ", cursor, " is negative");
    if (seed != seed_) return bad("seed ", seed, " in the checkpoint, ", seed_, " in this run");
    if (seq_len != seq_len_) {
      return bad("seq_len ", seq_len, " in the checkpoint, ", seq_len_, " in this run");
    }
    if (datasets.size() != sources_.size()) {
      return bad(datasets.size(), " datasets in the checkpoint, ", sources_.size(), " in this run");
    }
    for (size_t d = 0; d < sources_.size(); ++d) {
      const nlohmann::json& saved = datasets[d];
      const IndexedDataset& ds = *sources_[d].dataset;
      const std::string saved_prefix = saved.at("prefix").get<std::string>();
      const std::string fp = saved.at("fingerprint").get<std::string>();
      if (fp != Hex64(ds.Fingerprint()) ||
          saved.at("num_tokens").get<int64_t>() != ds.num_tokens()) {
        return bad("dataset ", d, " was ", saved_prefix, " (",
                   saved.at("num_tokens").get<int64_t>(), " tokens, fingerprint ", fp,
                   ") in the checkpoint, but ", ds.prefix(), " (", ds.num_tokens(),
                   " tokens, fingerprint ", Hex64(ds.Fingerprint()), ") in this run");
      }
      const double w = saved.at("weight").get<double>();
      if (std::abs(w - weights_[d]) > 1e-12) {
        return bad("dataset ", d, " (", ds.prefix(), ") had blend weight ", w,
                   " in the checkpoint, ", weights_[d], " in this run");
      }
    }
    return cursor;
  } catch (const nlohmann::json::exception& e) {
    return bad("malformed (", e.what(), ")");
  }
}

// ---- BatchPlan ----

absl::StatusOr<BatchPlan> BatchPlan::Make(int64_t global_batch, int dp_size) {
  if (global_batch < 1 || dp_size < 1 || global_batch % dp_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("global batch ", global_batch,
                                                   " must be a positive multiple of the "
                                                   "data-parallel size ",
                                                   dp_size));
  }
  return BatchPlan{global_batch, dp_size};
}

SampleRange BatchPlan::RankRange(int64_t cursor, int dp_rank) const {
  MT_CHECK(dp_rank >= 0 && dp_rank < dp_size, "DP rank ", dp_rank, " of ", dp_size);
  return {cursor + dp_rank * per_rank(), cursor + (dp_rank + 1) * per_rank()};
}

// ---- ValidationSource ----

absl::StatusOr<std::unique_ptr<ValidationSource>> ValidationSource::Create(
    std::shared_ptr<const IndexedDataset> dataset, int64_t seq_len) {
  if (seq_len < 1) return absl::InvalidArgumentError(absl::StrCat("seq_len ", seq_len, " < 1"));
  auto src = std::make_unique<ValidationSource>();
  src->num_windows_ = NumWindows(dataset->num_tokens(), seq_len);
  if (src->num_windows_ < 1) {
    return absl::InvalidArgumentError(absl::StrCat(dataset->prefix(), ": ", dataset->num_tokens(),
                                                   " validation tokens hold no window of ",
                                                   seq_len + 1, " tokens"));
  }
  src->dataset_ = std::move(dataset);
  src->seq_len_ = seq_len;
  return src;
}

void ValidationSource::Sample(int64_t j, int32_t* out) const {
  MT_CHECK(j >= 0 && j < num_windows_, "validation window ", j, " of ", num_windows_);
  dataset_->ReadTokens(j * seq_len_, seq_len_ + 1, out);
}

}  // namespace mt::data
